"""Scale-out encoding: processes of a gloo group (CPU) give the same latent set as one process, and a
group that lost a process to SIGKILL at any kind of durable write resumes to the same bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist

from conftest import make_signal_set
from faults import DurableOps
from funcml.latents import row_writer
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.latents.encode import encode_signal_set
from funcml.latents.encode_shards import chunk_ranges
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.latents import LatentSet
from test_cli import write_medmnist_npz

FIELD = FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0, omega_last=30.0)
CFG = EncodeConfig(steps=3, inner_lr=0.5, context_ratio=0.5, batch_size=3, seed=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("enc")
    torch.manual_seed(3)
    model = FieldModel(ModulatedSiren(FIELD), (1, 8, 8), CFG)
    model.save(root / "model")
    model = FieldModel.load(root / "model")
    signals = make_signal_set(26, (1, 8, 8), seed=7)    # 9 chunks of 3: ranks get chunks 0-3 and 4-8
    ref, _ = encode_signal_set(model, signals, root / "ref", model_dir=root / "model", progress=False)
    return model, root / "model", signals, ref


def _group(tmp_path, name: str, jobs: list) -> list[int]:
    """Run ``jobs[r](rank)`` in forked processes joined in one gloo group; their exit codes (-9: killed)."""
    pids = []
    for rank, job in enumerate(jobs):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.environ["LOCAL_RANK"] = str(rank)
                dist.init_process_group("gloo", init_method=f"file://{tmp_path / (name + '.rdzv')}", rank=rank,
                                        world_size=len(jobs))
                job(rank)
                code = 0
            except BaseException:  # noqa: BLE001
                traceback.print_exc()
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def _encoder(setup, out, report=None, kill_at=None, max_chunks=None, record=None):
    model, model_dir, signals, _ = setup

    def job(rank):
        ops = DurableOps(kill_at)
        ops.install()
        try:
            got, stats = encode_signal_set(model, signals, out, model_dir=model_dir, progress=False,
                                           max_chunks=max_chunks)
        finally:
            if record is not None:
                record.write_text(json.dumps(ops.labels))
        if report is not None and got is not None:
            report.write_text(json.dumps({**stats, "checksum": got.manifest["latent_checksum"]}))
    return job


def _assert_same_set(out, ref, only_set_files=True):
    got = LatentSet.open(out)
    assert np.array_equal(np.asarray(got.latents), np.asarray(ref.latents))
    assert np.array_equal(np.asarray(got.psnr), np.asarray(ref.psnr))
    assert np.array_equal(np.asarray(got.index), np.asarray(ref.index))
    assert got.manifest["latent_checksum"] == ref.manifest["latent_checksum"]
    if only_set_files:
        assert {p.name for p in out.iterdir()} == {"latents.safetensors", "manifest.json", "model"}


def test_chunks_are_split_into_contiguous_even_ranges():
    assert chunk_ranges(0, 9, 2) == [(0, 4), (4, 9)]
    assert chunk_ranges(3, 9, 4) == [(3, 4), (4, 6), (6, 7), (7, 9)]
    assert chunk_ranges(5, 5, 2) == [(5, 5), (5, 5)]
    assert chunk_ranges(0, 1, 3) == [(0, 0), (0, 0), (0, 1)]


def test_two_processes_give_the_bits_of_one(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 0.0)
    report = tmp_path / "report.json"
    assert _group(tmp_path, "g", [_encoder(setup, tmp_path / "two", report)] * 2) == [0, 0]
    _assert_same_set(tmp_path / "two", setup[3])
    stats = json.loads(report.read_text())
    assert stats["signals"] == 26 and stats["resumed_rows"] == 0


def test_a_group_stopped_midway_resumes_with_the_work_kept(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 0.0)
    out, report = tmp_path / "lat", tmp_path / "report.json"
    assert _group(tmp_path, "a", [_encoder(setup, out, max_chunks=2)] * 2) == [0, 0]
    assert not out.exists()
    assert _group(tmp_path, "b", [_encoder(setup, out, report)] * 2) == [0, 0]
    _assert_same_set(out, setup[3])
    assert json.loads(report.read_text())["resumed_rows"] == 12   # 2 chunks of 3 rows in each shard


def test_a_group_that_lost_a_process_to_sigkill_resumes_bit_identically(tmp_path, setup, monkeypatch):
    """Process 1 killed at each kind of durable write of its shard; process 0 killed at each kind of
    durable write of the merge and the publishing. The same command (same group size) then finishes."""
    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 0.0)
    probe = [tmp_path / f"probe-{r}.json" for r in range(2)]
    jobs = [_encoder(setup, tmp_path / "probe", record=probe[r]) for r in range(2)]
    assert _group(tmp_path, "p", [lambda rank: jobs[rank](rank)] * 2) == [0, 0]
    labels = [json.loads(p.read_text()) for p in probe]
    last_shard_op = max(i for i, label in enumerate(labels[0], start=1) if label.endswith("checkpoint"))
    merge = sorted({label: i for i, label in reversed(list(enumerate(labels[0], start=1)))
                    if i > last_shard_op}.values())
    assert {"flush in flush", "replace in _encode_sharded", "rmtree in _encode_sharded",
            "rename in finalize"} <= {labels[0][i - 1] for i in merge}
    shard = sorted({label: i for i, label in enumerate(labels[1], start=1)}.values())
    cases = [(1, k) for k in shard] + [(0, k) for k in merge]
    for n, (victim, k) in enumerate(cases):
        out = tmp_path / f"kill{n}"
        killed = [_encoder(setup, out, kill_at=k if rank == victim else None,
                           max_chunks=1 if victim == 1 and rank == 0 else None) for rank in range(2)]
        codes = _group(tmp_path, f"k{n}", [lambda rank, js=killed: js[rank](rank)] * 2)
        assert codes[victim] == -9, (victim, k, codes)
        if out.exists():  # killed after the rename: the set is whole (its job files maybe not yet removed)
            _assert_same_set(out, setup[3], only_set_files=False)
            continue
        with pytest.raises(Exception, match="not found"):
            LatentSet.open(out)
        assert _group(tmp_path, f"r{n}", [_encoder(setup, out)] * 2) == [0, 0], (victim, k)
        _assert_same_set(out, setup[3])


def test_a_two_process_partial_finishes_in_one_process(tmp_path, setup, monkeypatch):
    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 0.0)
    out = tmp_path / "lat"
    assert _group(tmp_path, "a", [_encoder(setup, out, max_chunks=1)] * 2) == [0, 0]
    model, model_dir, signals, ref = setup
    encode_signal_set(model, signals, out, model_dir=model_dir, progress=False)
    _assert_same_set(out, ref)


def test_torchrun_encode_matches_one_process(tmp_path):
    """The command line under torchrun: 2 CPU processes (gloo), one latent set, the checksum of one process."""
    data = str(write_medmnist_npz(tmp_path / "d.npz", n=(17, 4, 4)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torch.manual_seed(0)
    FieldModel(ModulatedSiren(FIELD), (1, 8, 8), CFG).save(tmp_path / "m")
    args = ["encode", data, "--model", str(tmp_path / "m"), "--batch-size", "4", "--device", "cpu", "--json"]
    runs = {}
    for name, launcher in (("one", []), ("two", ["-m", "torch.distributed.run", "--standalone",
                                                 "--nproc_per_node", "2"])):
        cmd = [sys.executable, *launcher, "-m", "funcml", *args, "--out", str(tmp_path / name)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    assert runs["two"]["latent_checksum"] == runs["one"]["latent_checksum"]
    assert runs["two"]["count"] == 25 and "2 processes" in proc.stderr
    assert LatentSet.open(tmp_path / "two").manifest["latent_checksum"] == runs["one"]["latent_checksum"]
