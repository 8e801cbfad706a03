"""Data-parallel meta-training with torchrun: 2 CPU processes (gloo) match one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from funcml.io import load_tensors
from test_cli import TINY, write_medmnist_npz

_OPTS = dict(zip(TINY[::2], TINY[1::2])) | {"--val-every": "0", "--batch-size": "4", "--steps": "4"}
ARGS = [item for pair in _OPTS.items() for item in pair]


def _train(cmd, env):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _final_weights(out):
    meta = json.loads((out / "checkpoints" / "last.json").read_text())
    return load_tensors(out / "checkpoints" / meta["file"]), meta


@pytest.mark.slow
def test_two_process_torchrun_matches_a_single_process(tmp_path):
    data = str(write_medmnist_npz(tmp_path / "tinymnist.npz"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    single = [sys.executable, "-m", "funcml", "train", data, "--out", str(tmp_path / "one"), *ARGS]
    _train(single, env)
    multi = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
             "-m", "funcml", "train", data, "--out", str(tmp_path / "two"), *ARGS]
    _train(multi, env)
    one, meta_one = _final_weights(tmp_path / "one")
    two, meta_two = _final_weights(tmp_path / "two")
    assert meta_two["config"]["world_size"] == 2 and meta_two["step"] == 4
    for name in one:
        assert torch.allclose(one[name], two[name], rtol=1e-4, atol=1e-6), name
    # Same losses step by step (the shares of the batch were summed exactly once).
    for a, b in zip(meta_one["history"], meta_two["history"]):
        assert a["loss_outer"] == pytest.approx(b["loss_outer"], rel=1e-5)
