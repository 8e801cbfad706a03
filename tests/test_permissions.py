"""Outputs follow the user's umask like any other tool's files, not the 0600 of a temporary file."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from funcml.io import atomic_dir, atomic_write_bytes, atomic_write_json
from funcml.io.atomic import current_umask


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_and_folders_get_the_umask_mode(tmp_path, mask):
    with umask(mask):
        assert current_umask() == mask
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_json(tmp_path / "b.json", {"k": 1})
        with atomic_dir(tmp_path / "folder") as partial:
            (partial / "inside.txt").write_text("y")
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "b.json") == 0o666 & ~mask
    assert mode(tmp_path / "folder") == 0o777 & ~mask


def test_every_file_of_a_train_encode_evaluate_run_is_group_readable(tmp_path):
    """The files the issue named (reconstructions.png, job.json, progress.json ...) and all others."""
    from funcml.cli import cli

    images = (np.random.default_rng(0).random((8, 8, 8)) * 255).astype(np.uint8)
    labels = np.zeros((8, 1), np.uint8)
    np.savez(tmp_path / "tinymnist.npz", **{f"{s}_{k}": images if k == "images" else labels
                                            for s in ("train", "val", "test") for k in ("images", "labels")})
    data = str(tmp_path / "tinymnist.npz")
    run = lambda *a: cli.main(args=[str(x) for x in a], prog_name="funcml", standalone_mode=False)  # noqa: E731
    with umask(0o022):
        run("train", data, "--out", tmp_path / "model", "--steps", "2", "--width", "16", "--depth", "3",
            "--latent-dim", "8", "--batch-size", "4", "--val-every", "0", "--test-steps", "2", "--device", "cpu")
        run("encode", data, "--model", tmp_path / "model", "--out", tmp_path / "latents", "--steps", "2",
            "--device", "cpu")
        run("evaluate", tmp_path / "latents", "--data", data, "--out", tmp_path / "eval", "--device", "cpu")
    written = [p for p in tmp_path.rglob("*") if p.name != "tinymnist.npz"]
    names = {p.name for p in written}
    assert {"reconstructions.png", "metrics.json", "manifest.json", "config.json"} <= names
    private = {str(p.relative_to(tmp_path)): oct(mode(p)) for p in written
               if mode(p) != (0o755 if p.is_dir() else 0o644)}
    assert not private
