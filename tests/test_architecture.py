"""The architecture's rules that code can break: library calls leave the process alone."""

from __future__ import annotations

import os
import types

import numpy as np
import pytest
import torch

import funcml.allocator
from funcml.encoders import FieldModel, MetaTrainer, encode_signal_set
from funcml.tasks.generate.generator import LatentGenerator


def _refuse(name: str):
    def refuse(*_args, **_kwargs):
        raise AssertionError(f"a library call used {name}, which changes the whole process")
    return refuse


@pytest.fixture
def process_guard(monkeypatch):
    """Fail on any process-wide change: allocator tuning, re-exec, torch's thread count."""
    libc = types.SimpleNamespace(CDLL=_refuse("mallopt (glibc tuning)"), util=funcml.allocator.ctypes.util)
    monkeypatch.setattr(funcml.allocator, "ctypes", libc)
    monkeypatch.setattr(os, "execve", _refuse("os.execve (a re-exec)"))
    monkeypatch.setattr(torch, "set_num_threads", _refuse("torch.set_num_threads"))


def test_training_encoding_and_generation_leave_the_process_alone(process_guard, tmp_path, tiny_images,
                                                                     tiny_field, tiny_train):
    MetaTrainer(tiny_field, tiny_train, tiny_images, tmp_path / "model").run()
    model = FieldModel.load(tmp_path / "model")
    latents, _ = encode_signal_set(model, tiny_images, tmp_path / "latents", model_dir=tmp_path / "model")
    x, y = latents.split("train")
    LatentGenerator(steps=5, batch_size=4, hidden=16, blocks=1).fit(np.asarray(x), np.asarray(y)[:, 0]).sample(3)
