"""Bad input on the command line: one clear ``error:`` line, a non-zero exit, nothing already written damaged.

The first tests walk every registered command (so commands added later are covered without editing
this file): ``--help``; missing inputs; an ``--out`` that exists; ``nan``/``inf`` for every float
option. Each runs in a forked child with a time limit, so a command that does not validate its
options up front shows up as a failure rather than a long job. The table below then checks each
class of bad input named in the reliability issue against the commands that exist today.

A command whose float option may legitimately be NaN or infinite is listed in ``NONFINITE_OK``.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import pytest
import torch

# Imported once here rather than again in every forked child.
import funcml.data.sources  # noqa: F401
import funcml.latents.encode  # noqa: F401
import funcml.encoders.trainer  # noqa: F401
import funcml.latents.mednf  # noqa: F401
import funcml.viz  # noqa: F401
from corpus import digest_tree, shared_world
from funcml.cli import cli, main
from funcml.encoders.model import copy_model_dir
from test_cli import run, write_medmnist_npz

NONFINITE_OK: set[tuple[str, str]] = set()  # (command, option) pairs for which nan/inf are meaningful
LONG_RUNNING = {"demo"}  # runs without required inputs: only checked where it refuses at once


@pytest.fixture(scope="module")
def world():
    return shared_world()


def run_forked(argv: list[str], timeout: float = 60.0) -> tuple[int | None, str]:
    """Run ``funcml ARGV`` in a forked child; return ``(exit code or None on timeout, stdout + stderr)``."""
    fd, log = tempfile.mkstemp(prefix="funcml-cli-", suffix=".txt")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            try:
                main(argv)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            except BaseException:  # noqa: BLE001 - escaped main(): print it for the parent to see
                import traceback

                traceback.print_exc()
                code = 98
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    t0 = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            code = None
            break
        time.sleep(0.02)
    os.close(fd)
    text = Path(log).read_text(errors="replace")
    os.unlink(log)
    return code, text


def assert_clean_refusal(code, text, argv):
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    assert code is not None, f"{argv}: still running after the time limit (options not validated up front?)"
    assert code not in (0, 98, 99), (argv, code, text[-2000:])
    assert "Traceback" not in text and "internal error" not in text, (argv, text[-2000:])
    assert lines and lines[-1].startswith(("error:", "Error:")), (argv, text[-2000:])


def _commands() -> list[str]:
    return sorted(cli.commands)


def _plausible(world: dict, tmp: Path) -> dict[str, str]:
    """Inputs of the right kind by parameter name (fresh copies, so a command may write into them)."""
    lat = tmp / "latents-copy"
    if not lat.exists():
        shutil.copytree(world["latents"], lat)
    return {"data": str(world["data"]), "latents": str(lat), "model_dir": str(world["model"]),
            "model": str(world["model"]), "directory": str(world["mednf"]), "path": str(lat)}


def _argv(command: click.Command, values: dict[str, str], missing: str, **fixed: str) -> list[str]:
    """Arguments for ``command``: its required parameters (and ``fixed`` options), by name."""
    args, opts = [], []
    for p in command.params:
        name = p.name
        if name in fixed:
            opts += [p.opts[0], fixed[name]] if isinstance(p, click.Option) else []
            if isinstance(p, click.Argument):
                args.append(fixed[name])
            continue
        if not p.required:
            continue
        if isinstance(p.type, click.Choice):
            value = str(p.type.choices[0])
        elif isinstance(p.type, click.types.IntParamType):
            value = "1"
        elif isinstance(p.type, click.types.FloatParamType):
            value = "0.5"
        else:
            value = values.get(name, missing)
        if isinstance(p, click.Argument):
            args.append(value)
        else:
            opts += [p.opts[0], value]
    return [command.name, *args, *opts]


# -- every registered command ----------------------------------------------------------------------

@pytest.mark.parametrize("name", _commands())
def test_every_command_has_help(name, capsys):
    code, out, _ = run([name, "--help"], capsys)
    assert code == 0 and "Usage:" in out


@pytest.mark.parametrize("name", _commands())
def test_every_command_refuses_missing_inputs_with_one_message(name, tmp_path):
    command = cli.commands[name]
    if not any(p.required for p in command.params):
        pytest.skip(f"{name} has no required inputs")
    argv = _argv(command, {"out": str(tmp_path / "out")}, str(tmp_path / "does-not-exist"))
    assert_clean_refusal(*run_forked(argv), argv)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", [n for n in _commands() if any(p.name == "out" for p in cli.commands[n].params)])
def test_every_command_refuses_an_existing_output_and_leaves_it_alone(name, tmp_path, world):
    command = cli.commands[name]
    out = tmp_path / "existing"
    out.mkdir()
    (out / "precious.txt").write_text("results of last week")
    argv = _argv(command, _plausible(world, tmp_path), str(tmp_path / "missing"), out=str(out))
    before = digest_tree(tmp_path)
    code, text = run_forked(argv, timeout=120)
    assert_clean_refusal(code, text, argv)
    assert digest_tree(tmp_path) == before
    if any(p.name == "overwrite" for p in command.params):
        assert "--overwrite" in text, text[-1000:]


def _float_options() -> list[tuple[str, str]]:
    out = []
    for name in _commands():
        if name in LONG_RUNNING:
            continue
        for p in cli.commands[name].params:
            if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType) and \
                    (name, p.name) not in NONFINITE_OK:
                out.append((name, p.name))
    return out


@pytest.mark.parametrize("name, option", _float_options())
def test_no_float_option_accepts_nan_or_inf(name, option, tmp_path, world):
    command = cli.commands[name]
    flag = next(p.opts[0] for p in command.params if p.name == option)
    for value in ("nan", "-inf"):
        argv = [*_argv(command, _plausible(world, tmp_path), str(tmp_path / "missing"),
                       out=str(tmp_path / f"out-{value}")), flag, value]
        code, text = run_forked(argv, timeout=60)
        assert_clean_refusal(code, text, argv)
        assert not (tmp_path / f"out-{value}").exists()


# -- each class of bad input ------------------------------------------------------------------------

def _bad_files(root: Path) -> dict[str, Path]:
    """Data files with one problem each."""
    files = {}
    rng = np.random.default_rng(0)

    def npz(name, **arrays):
        np.savez(root / name, **arrays)
        files[name] = root / name

    base = {f"{s}_{k}": (rng.integers(0, 255, (4, 8, 8)).astype(np.uint8) if k == "images" else
                         rng.integers(0, 2, (4, 1)).astype(np.uint8)) for s in ("train", "val", "test")
            for k in ("images", "labels")}
    npz("floatmnist.npz", **{**base, "train_images": base["train_images"].astype(np.float32)})
    npz("flatmnist.npz", **{**base, "train_images": np.zeros((4, 8), np.uint8)})
    npz("shortlabelsmnist.npz", **{**base, "train_labels": base["train_labels"][:2]})
    npz("nolabelsmnist.npz", **{k: v for k, v in base.items() if k != "val_labels"})
    npz("emptymnist.npz", **{k: v[:0] for k, v in base.items()})
    npz("notrainmnist.npz", **{**base, "train_images": base["train_images"][:0], "train_labels": base["train_labels"][:0]})
    npz("rgbmnist.npz", **{**{k: (np.repeat(v[..., None], 3, -1) if "images" in k else v) for k, v in base.items()}})
    np.savez(root / "pickledmnist.npz", **{**base, "train_images": np.array([{"a": 1}], dtype=object)})
    files["pickledmnist.npz"] = root / "pickledmnist.npz"
    (root / "nan_TRAIN.txt").write_text("1 0.1 0.2 0.3\n2 0.2 nan 0.1\n1 0.5 0.4 0.2\n")
    (root / "inf_TRAIN.txt").write_text("1 0.1 0.2 0.3\n2 0.2 inf 0.1\n1 0.5 0.4 0.2\n")
    (root / "empty_TRAIN.txt").write_text("\n\n")
    (root / "labelonly_TRAIN.txt").write_text("1 0.1 0.2\n2\n")
    for name in ("nan_TRAIN.txt", "inf_TRAIN.txt", "empty_TRAIN.txt", "labelonly_TRAIN.txt"):
        files[name] = root / name
    import nibabel as nib

    vol = rng.random((6, 6, 6)).astype(np.float32)
    vol[1, 2, 3] = np.inf
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "inf.nii.gz"))
    files["inf.nii.gz"] = root / "inf.nii.gz"
    (root / "emptyfolder").mkdir()
    files["emptyfolder"] = root / "emptyfolder"
    (root / "truncated.npz").write_bytes((root / "floatmnist.npz").read_bytes()[:300])
    files["truncated.npz"] = root / "truncated.npz"
    return files


CASES = [
    # (command line, words the message must contain)
    # missing or unreadable files
    ("train {tmp}/nothing.npz --out {tmp}/o", "data not found"),
    ("encode {data} --model {tmp}/nomodel --out {tmp}/o", "model directory not found"),
    ("evaluate {tmp}/nolatents --data {data}", "latent set not found"),
    ("info {tmp}/nothing", "data not found"),
    ("import-mednf {tmp}/nothing --out {tmp}/o", "not found"),
    ("encode {data} --model {data} --out {tmp}/o", "model directory not found"),
    ("evaluate {data} --data {data}", "not a latent set"),
    # truncated or corrupt files
    ("train {bad}/truncated.npz --out {tmp}/o", "corrupt"),
    ("encode {data} --model {broken_model} --out {tmp}/o", "checksum"),
    ("evaluate {broken_latents} --data {data}", "checksum"),
    # wrong shapes, dtypes, channel counts, dimensions
    ("train {bad}/floatmnist.npz --out {tmp}/o", "uint8"),
    ("train {bad}/flatmnist.npz --out {tmp}/o", "cannot interpret"),
    ("train {bad}/shortlabelsmnist.npz --out {tmp}/o", "labels"),
    ("encode {bad}/rgbmnist.npz --model {model} --out {tmp}/o", "do not fit"),
    ("encode {data} --model {model} --out {tmp}/o --resolution 4x4x4", "does not fit 2-D"),
    ("train {data} --out {tmp}/o --preset cpu-ecg", "1-D"),
    ("train {data} --out {tmp}/o --channels 3", "channel"),
    # NaN or Inf values
    ("train {bad}/nan_TRAIN.txt --out {tmp}/o --preset cpu-ecg", "NaN/Inf"),
    ("train {bad}/inf_TRAIN.txt --out {tmp}/o --preset cpu-ecg", "NaN/Inf"),
    ("train {bad}/inf.nii.gz --out {tmp}/o --preset cpu-volume", "NaN/Inf"),
    ("train {data} --out {tmp}/o --outer-lr inf", "finite"),
    ("encode {data} --model {model} --out {tmp}/o --inner-lr nan", "finite"),
    # empty datasets or splits
    ("train {bad}/emptymnist.npz --out {tmp}/o", "no images"),
    ("train {bad}/notrainmnist.npz --out {tmp}/o", "train split is empty"),
    ("train {bad}/empty_TRAIN.txt --out {tmp}/o --preset cpu-ecg", "no series"),
    ("train {bad}/emptyfolder --out {tmp}/o", "empty"),
    ("encode {bad}/notrainmnist.npz --model {model} --out {tmp}/o --split train", "nothing to encode"),
    # labels missing
    ("train {bad}/nolabelsmnist.npz --out {tmp}/o", "val_labels"),
    ("train {bad}/labelonly_TRAIN.txt --out {tmp}/o --preset cpu-ecg", "no series values"),
    # a latent set used with a model other than its own
    ("evaluate {latents} --data {data} --model {model9}", "latent dimension"),
    ("evaluate {latents} --data {data} --model {model_b}", "encoded with model"),
    ("evaluate {swapped_latents} --data {data}", "encoded with model"),
    # an output path that exists
    ("train {data} --out {model} --steps 2", "--overwrite"),
    ("train {data} --out {latents}", "output path exists"),
    ("encode {data} --model {model} --out {latents}", "--overwrite"),
    ("import-mednf {mednf} --out {latents}", "--overwrite"),
    ("evaluate {latents} --data {data} --out {model}", "--overwrite"),
    ("demo --out {model}", "--overwrite"),
    # out-of-range options
    ("train {data} --out {tmp}/o --context-ratio 1.5", "--context-ratio"),
    ("train {data} --out {tmp}/o --steps 0", "--steps"),
    ("train {data} --out {tmp}/o --depth 1", "--depth"),
    ("train {data} --out {tmp}/o --resolution 0", "--resolution"),
    ("train {data} --out {tmp}/o --val-fraction 1.5", "--val-fraction"),
    ("train {data} --out {tmp}/o --device tpu", "device"),
    ("encode {data} --model {model} --out {tmp}/o --batch-size 0", "--batch-size"),
    ("encode {data} --model {model} --out {tmp}/o --steps -1", "--steps"),
    ("train {data} --out {tmp}/o --data-option nonsense", "KEY=VALUE"),
    ("train {data} --out {tmp}/o --data-option lead=II", "does not understand"),
    ("import-mednf {mednf} --out {tmp}/o --w0 0", "--w0"),
]


@pytest.fixture(scope="module")
def cli_world(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    places = {k: str(v) for k, v in world.items()}
    places["bad"] = str(root / "bad")
    (root / "bad").mkdir()
    _bad_files(root / "bad")
    broken_model = root / "broken_model"
    shutil.copytree(world["model"], broken_model)
    raw = bytearray((broken_model / "model.safetensors").read_bytes())
    raw[-7] ^= 0x10
    (broken_model / "model.safetensors").write_bytes(bytes(raw))
    broken_latents = root / "broken_latents"
    shutil.copytree(world["latents"], broken_latents)
    raw = bytearray((broken_latents / "latents.safetensors").read_bytes())
    raw[-7] ^= 0x10
    (broken_latents / "latents.safetensors").write_bytes(bytes(raw))
    swapped = root / "swapped_latents"  # the embedded model replaced by another valid one of the same size
    shutil.copytree(world["latents"], swapped)
    shutil.rmtree(swapped / "model")
    copy_model_dir(world["model_b"], swapped / "model")
    places.update(broken_model=str(broken_model), broken_latents=str(broken_latents), swapped_latents=str(swapped))
    return places, world["data"].parent


@pytest.mark.parametrize("line, words", CASES, ids=[c[0].split(" --")[0].replace("{", "").replace("}", "")
                                                    + f" [{i}]" for i, c in enumerate(CASES)])
def test_bad_input_gets_one_clear_message_and_damages_nothing(line, words, tmp_path, cli_world, capsys):
    places, world_root = cli_world
    argv = line.format(tmp=tmp_path, **places).split()
    before = digest_tree(world_root)
    code, out, err = run(argv, capsys)
    lines = [x for x in err.replace("\r", "\n").splitlines() if x.strip()]
    assert code not in (0, None), (argv, err[-1500:])
    assert lines[-1].startswith(("error:", "Error:")) and "internal error" not in err, err[-1500:]
    assert words in lines[-1], (words, lines[-1])
    assert digest_tree(world_root) == before  # nothing already written was touched
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_an_unreadable_file_is_one_message(tmp_path, capsys, monkeypatch):
    data = write_medmnist_npz(tmp_path / "tinymnist.npz")
    if os.geteuid() != 0:
        data.chmod(0)
        code, _, err = run(["info", str(data)], capsys)
        assert code != 0 and err.strip().splitlines()[-1].startswith("error:"), err
        data.chmod(0o644)
    import funcml.data.sources.medmnist as medmnist_source

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(data))

    monkeypatch.setattr(medmnist_source.np, "load", denied)  # as for a file root cannot read either
    code, _, err = run(["info", str(data)], capsys)
    assert code != 0 and "Permission denied" in err.strip().splitlines()[-1], err


def test_a_bug_is_one_line_with_the_traceback_kept_in_a_file(tmp_path, capsys, monkeypatch):
    import funcml.cli.info as info_cmd

    def broken(path):
        raise ZeroDivisionError("simulated bug")

    monkeypatch.setattr(info_cmd, "describe_path", broken)
    monkeypatch.delenv("FUNCML_DEBUG", raising=False)
    code, _, err = run(["info", "demo"], capsys)
    assert code == 70 and "internal error (ZeroDivisionError: simulated bug)" in err and "Traceback" not in err
    saved = Path(err.split("The traceback is in ")[1].split(" ")[0])
    assert "ZeroDivisionError" in saved.read_text()
    saved.unlink()
    monkeypatch.setenv("FUNCML_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["info", "demo"])
