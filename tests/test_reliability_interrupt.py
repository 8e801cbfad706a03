"""Interrupt safety: jobs SIGKILLed at every kind of durable write, or at random moments, then resumed.

A resumed job must finish with exactly what an uninterrupted one gives (bit-identical latents and
weights on CPU), and at no moment may a half-written file be taken for a complete one: whatever a
kill leaves either opens and verifies, or is refused with a funcml error, or is picked up by the
rerun.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from faults import kill_points, kill_when, recording, run_killed, tree_files
from funcml.encoders.config import FieldConfig, TrainConfig
from funcml.latents.encode import encode_signal_set
from funcml.encoders.model import FieldModel
from funcml.encoders.trainer import MetaTrainer
from funcml.errors import ArtifactError, OutputExistsError
from funcml.io import load_tensors
from funcml.io.lock import OutputLock
from funcml.latents import LatentSet
from conftest import make_signal_set
from test_cli import TINY, run, write_medmnist_npz

FIELD = FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0, omega_last=30.0)
# Checkpoints every 4 steps, logs every 3: resuming must also restore the half-filled metrics window.
TRAIN = TrainConfig(steps=10, batch_size=4, inner_steps=2, inner_lr=0.5, context_ratio=0.5, outer_lr=3e-3,
                    val_every=5, val_signals=4, test_steps=3, checkpoint_every=4, log_every=3, seed=5)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SET_FILES = {"latents.safetensors", "manifest.json", "model"}


@pytest.fixture(scope="module")
def signals():
    return make_signal_set(22, (1, 8, 8), seed=4)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, signals):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("model") / "m"
    MetaTrainer(FIELD, TRAIN, signals, out, progress=False).run()
    return out


@pytest.fixture
def every_chunk_checkpointed(monkeypatch):
    """Encode checkpoints after every chunk (normally every 30 s): more moments to be killed at."""
    from funcml.latents import row_writer

    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 0.0)


@pytest.fixture
def fast_io(monkeypatch):
    """Skip fsync (it only matters for power loss, not for a killed process, whose writes the page cache
    keeps) and draw the training-curve figure as a stub PNG (matplotlib costs ~1 s per run)."""
    from funcml import viz
    from funcml.io import atomic_write_bytes

    def stub_curves(history, path):
        atomic_write_bytes(path, b"\x89PNG stub " + json.dumps(len(history)).encode())

    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(viz, "plot_training_curves", stub_curves)


def _final_state(out):
    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    untimed = [{k: v for k, v in h.items() if k != "seconds"} for h in meta["history"]]
    return load_tensors(out / "checkpoints" / meta["file"]), untimed, meta


def _assert_same_training(out, ref):
    weights, history, meta = _final_state(out)
    ref_weights, ref_history, ref_meta = _final_state(ref)
    assert meta["finished"] and meta["step"] == ref_meta["step"]
    for name in ref_weights:
        assert torch.equal(weights[name], ref_weights[name]), name
    assert history == ref_history
    assert FieldModel.load(out).id == FieldModel.load(ref).id  # the best model: same weights, same id
    assert json.loads((out / "summary.json").read_text())["steps_done"] == ref_meta["step"]


def _assert_nothing_half_written(out):
    """Right after a kill: the model directory either verifies or is refused with a funcml error."""
    if (out / "config.json").exists():
        try:
            FieldModel.load(out)
        except ArtifactError:
            pass


def test_training_killed_at_every_kind_of_durable_write_resumes_the_same_trajectory(tmp_path, signals, model_dir,
                                                                                    fast_io):
    with recording() as ops:
        MetaTrainer(FIELD, TRAIN, signals, tmp_path / "probe", progress=False).run()
    points = kill_points(ops.labels)
    assert {"replace in _checkpoint", "replace in save", "unlink in _checkpoint",
            "replace in _write_log", "replace in _finish"} <= set(ops.labels)
    for k in points:
        out = tmp_path / f"kill{k}"
        status = run_killed(lambda: MetaTrainer(FIELD, TRAIN, signals, out, progress=False).run(), k)
        assert status == -9, (k, ops.labels[k - 1], status)
        left = tree_files(out) if out.exists() else {}
        _assert_nothing_half_written(out)
        try:
            MetaTrainer(FIELD, TRAIN, signals, out, progress=False).run()  # the same command, rerun
        except OutputExistsError as exc:  # killed after the run was complete: nothing left to do
            assert "finished" in str(exc), (k, ops.labels[k - 1], left)
        _assert_same_training(out, model_dir)
        assert not list(out.rglob(".*.tmp")), (k, ops.labels[k - 1])


def test_encode_killed_at_every_kind_of_durable_write_resumes_bit_identically(tmp_path, signals, model_dir, fast_io,
                                                                             every_chunk_checkpointed):
    model = FieldModel.load(model_dir)
    cfg = dataclasses.replace(model.encode_defaults, batch_size=5)
    ref, _ = encode_signal_set(model, signals, tmp_path / "ref", cfg, model_dir=model_dir, progress=False)

    def encode(out, config=cfg, overwrite=False):
        return encode_signal_set(model, signals, out, config, model_dir=model_dir, progress=False, overwrite=overwrite)

    with recording() as ops:
        encode(tmp_path / "probe")
    assert {"flush in flush", "replace in checkpoint", "rename in finalize"} <= set(ops.labels)
    for k in kill_points(ops.labels):
        out = tmp_path / f"kill{k}"
        assert run_killed(lambda: encode(out), k) == -9
        published = out.exists()
        if published:  # killed after the rename: the set is whole (maybe with its job files not yet removed)
            got = LatentSet.open(out)
            assert {p.name for p in out.iterdir()} <= {*SET_FILES, "job.json", "progress.json"}
        else:  # an unfinished set is never opened as a complete one; the rerun finishes it
            with pytest.raises(ArtifactError, match="not found"):
                LatentSet.open(out)
            got, _ = encode(out)
            assert {p.name for p in out.iterdir()} == SET_FILES
        where = (k, ops.labels[k - 1])
        assert np.array_equal(np.asarray(got.latents), np.asarray(ref.latents)), where
        assert got.manifest["latent_checksum"] == ref.manifest["latent_checksum"], where
        assert np.array_equal(np.asarray(got.labels), np.asarray(ref.labels)), where
        assert not (tmp_path / f"kill{k}.partial").exists() and not list(out.glob(".*.tmp")), where


def test_an_overwrite_killed_midway_never_leaves_a_half_set(tmp_path, signals, model_dir, fast_io):
    model = FieldModel.load(model_dir)
    cfg = dataclasses.replace(model.encode_defaults, batch_size=6)
    other = dataclasses.replace(cfg, seed=cfg.seed + 1)
    old, _ = encode_signal_set(model, signals, tmp_path / "old", cfg, model_dir=model_dir, progress=False)
    new, _ = encode_signal_set(model, signals, tmp_path / "new", other, model_dir=model_dir, progress=False)

    def job(out):
        return encode_signal_set(model, signals, out, other, model_dir=model_dir, progress=False, overwrite=True)

    import shutil

    shutil.copytree(tmp_path / "old", tmp_path / "probe")
    with recording() as ops:
        job(tmp_path / "probe")
    # The encoding itself is covered above; here: the start, and every step of publishing the new set.
    publishing = [i for i, label in enumerate(ops.labels, start=1) if label.endswith(("finalize", "signal_set"))]
    assert {"rename in finalize", "rmtree in finalize"} <= {ops.labels[i - 1] for i in publishing}
    for k in [1, *publishing]:
        out = tmp_path / f"kill{k}"
        shutil.copytree(tmp_path / "old", out)
        assert run_killed(lambda: job(out), k) == -9
        if out.exists():  # the old set until the new one is complete, then the new one: never a mixture
            got = LatentSet.open(out)
            assert got.manifest["latent_checksum"] in (old.manifest["latent_checksum"], new.manifest["latent_checksum"])
        got, _ = job(out)
        assert got.manifest["latent_checksum"] == new.manifest["latent_checksum"]
        assert not (tmp_path / f"kill{k}.old").exists() and not (tmp_path / f"kill{k}.partial").exists()


def test_a_killed_cli_encode_resumes_bit_identically(tmp_path, model_dir, capsys):
    """A real `funcml encode` process SIGKILLed at a random moment, then the same command rerun."""
    seed = random.SystemRandom().randrange(1 << 30)
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz", n=(48, 8, 8)))
    out = tmp_path / "lat"
    argv = ["encode", data, "--model", str(model_dir), "--out", str(out), "--batch-size", "2", "--steps", "10",
            "--device", "cpu"]
    progress = out.with_name("lat.partial") / "progress.json"
    proc = subprocess.Popen([sys.executable, "-m", "funcml", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed = kill_when(proc, progress.exists, random.Random(seed).uniform(0.0, 0.5))
    finished = out.exists()  # the kill landed after the final rename (or never: it had exited)
    assert finished or killed, seed
    code, stdout, err = run([*argv, "--json"], capsys)
    if not finished:
        assert code == 0, (seed, err)
        report = json.loads(stdout.strip().splitlines()[-1])
    else:  # a complete output: the rerun must refuse to overwrite it, and it must be the full encode
        assert code == 2 and "output path exists" in err, (seed, err)
        report = {"latent_checksum": LatentSet.open(out).manifest["latent_checksum"]}
    code, _, err = run([a if a != str(out) else str(tmp_path / "ref") for a in argv], capsys)
    assert code == 0, err
    got, ref = LatentSet.open(out), LatentSet.open(tmp_path / "ref")
    assert np.array_equal(np.asarray(got.latents), np.asarray(ref.latents)), seed
    assert got.manifest["latent_checksum"] == ref.manifest["latent_checksum"] == report["latent_checksum"]


def test_a_killed_cli_train_resumes_the_same_trajectory(tmp_path, capsys):
    """A real `funcml train` process SIGKILLed at a random moment, then the same command rerun."""
    seed = random.SystemRandom().randrange(1 << 30)
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    argv = ["train", data, "--steps", "18", "--checkpoint-every", "3", *TINY, "--val-every", "9"]
    out = tmp_path / "m"
    last = out / "checkpoints" / "last.json"
    proc = subprocess.Popen([sys.executable, "-m", "funcml", *argv, "--out", str(out)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Wait for a checkpoint past the step-0 one, so that the kill lands inside the training loop.
    kill_when(proc, lambda: last.exists() and json.loads(last.read_text())["step"] > 0,
              random.Random(seed).uniform(0.0, 0.3))
    code, _, err = run([*argv, "--out", str(out)], capsys)
    assert code == 0 or "finished run" in err, (seed, err)
    code, _, err = run([*argv, "--out", str(tmp_path / "ref")], capsys)
    assert code == 0, err
    _assert_same_training(out, tmp_path / "ref")


def test_disk_full_midway_keeps_the_partial_job_and_the_rerun_finishes(tmp_path, signals, model_dir, monkeypatch,
                                                                       capsys, every_chunk_checkpointed):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz", n=(20, 4, 4)))
    argv = ["encode", data, "--model", str(model_dir), "--out", str(tmp_path / "lat"), "--batch-size", "4",
            "--device", "cpu"]
    from funcml.latents import encode as encode_mod

    real = encode_mod.atomic_write_json
    calls = {"n": 0}

    def disk_full(path, obj):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(encode_mod, "atomic_write_json", disk_full)
    code, _, err = run(argv, capsys)
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: No space left on device")
    assert json.loads((tmp_path / "lat.partial" / "progress.json").read_text())["rows_done"] == 8
    monkeypatch.setattr(encode_mod, "atomic_write_json", real)
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["resumed_rows"] == 8
    code, _, err = run([*argv[:5], str(tmp_path / "ref"), *argv[6:]], capsys)
    assert code == 0, err
    assert LatentSet.open(tmp_path / "lat").checksum() == LatentSet.open(tmp_path / "ref").checksum()


def test_ctrl_c_during_encode_exits_130_and_the_rerun_resumes(tmp_path, signals, model_dir, monkeypatch, capsys):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz", n=(20, 4, 4)))
    argv = ["encode", data, "--model", str(model_dir), "--out", str(tmp_path / "lat"), "--batch-size", "4",
            "--device", "cpu"]
    from funcml.latents import encode as encode_mod

    real = encode_mod.fit_latents_counted
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(encode_mod, "fit_latents_counted", interrupted)
    code, _, err = run(argv, capsys)
    assert code == 130 and "rerun" in err and "Traceback" not in err
    monkeypatch.setattr(encode_mod, "fit_latents_counted", real)
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["resumed_rows"] == 8, err


def test_a_second_writer_of_the_same_output_is_refused(tmp_path, signals, model_dir):
    model = FieldModel.load(model_dir)
    with OutputLock(tmp_path / "lat"):
        with pytest.raises(OutputExistsError, match=f"another funcml process \\(pid {os.getpid()}\\) is writing"):
            encode_signal_set(model, signals, tmp_path / "lat", progress=False)
    with OutputLock(tmp_path / "m"):
        with pytest.raises(OutputExistsError, match="another funcml process"):
            MetaTrainer(FIELD, TRAIN, signals, tmp_path / "m", progress=False)
    assert not (tmp_path / "m").exists()
    # Released: both run, and leave no lock file behind.
    encode_signal_set(model, signals, tmp_path / "lat", progress=False)
    MetaTrainer(FIELD, dataclasses.replace(TRAIN, steps=2), signals, tmp_path / "m", progress=False).run()
    assert not list(tmp_path.glob(".*.lock"))


def test_a_run_killed_while_writing_its_first_checkpoint_starts_over(tmp_path, signals, model_dir):
    out = tmp_path / "m"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / ".ckpt-000000000.safetensors.abc123.tmp").write_bytes(b"\0" * 100)
    MetaTrainer(FIELD, TRAIN, signals, out, progress=False).run()
    _assert_same_training(out, model_dir)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "checkpoints").mkdir()
    (tmp_path / "other" / "checkpoints" / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError):  # not ours: never removed
        MetaTrainer(FIELD, TRAIN, signals, tmp_path / "other", progress=False)
    assert (tmp_path / "other" / "checkpoints" / "notes.txt").read_text() == "mine"


def test_divergence_keeps_the_last_good_checkpoint_and_a_loadable_model(tmp_path, signals, monkeypatch):
    from funcml.errors import TrainingDivergedError

    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def blow_up(self, *args, **kwargs):  # finite losses, then updates that overflow the weights, every time
        calls["n"] += 1
        result = real(self, *args, **kwargs)
        if calls["n"] >= 7:
            with torch.no_grad():
                self.param_groups[0]["params"][0].mul_(float("inf"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", blow_up)
    out = tmp_path / "m"
    # the guard finds the weights non-finite at step 8's checkpoint and rolls back to step 4, three
    # times (at step 5's validation after the first), then stops
    with pytest.raises(TrainingDivergedError, match=r"step 5 .*3 rollback\(s\).*checkpoint \(step 4\)"):
        MetaTrainer(FIELD, TRAIN, signals, out, progress=False).run()
    assert json.loads((out / "checkpoints" / "last.json").read_text())["step"] == 4
    assert FieldModel.load(out).training["step"] == 5  # the model validated at step 5 is kept
