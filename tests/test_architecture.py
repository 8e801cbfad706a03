"""The architecture's rules that code can break: library calls leave the process alone."""

from __future__ import annotations

import ast
import graphlib
import os
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import funcml.allocator
from funcml.encoders import FieldModel, MetaTrainer
from funcml.latents import encode_signal_set
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


# -- layers -------------------------------------------------------------------------------------------
# funcml's layers from the ground up; a module may import its own layer and the ones below, never above.
LAYERS = ("base", "backends", "data", "encoders", "latents", "query", "tasks", "demo", "estimators", "cli")
PACKAGE = Path(__file__).resolve().parents[1] / "funcml"


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[1:2] == ["__main__"]:
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def _module_of(module: str, name: str) -> str:
    """``from module import name``: the submodule ``module.name`` where it is one, else ``module``."""
    base = PACKAGE.parent.joinpath(*f"{module}.{name}".split("."))
    return f"{module}.{name}" if base.with_suffix(".py").is_file() or base.is_dir() else module


def _imports() -> list[tuple[str, str]]:
    """(importing module, imported funcml module) for every import in the package, lazy ones too."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("funcml"):
                found += [(module, _module_of(node.module, a.name)) for a in node.names]
            elif isinstance(node, ast.Import):
                found += [(module, a.name) for a in node.names if a.name.startswith("funcml")]
    return found


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted({(m, t) for m, t in _imports() if LAYERS.index(_layer(t)) > LAYERS.index(_layer(m))})
    assert upward == []


def test_the_only_import_cycle_is_the_data_source_registry():
    # the registry imports its sources (so that they register) and each source imports the registry
    graph: dict[str, set[str]] = {}
    for m, t in _imports():
        if not (m == "funcml.data.registry" and t.startswith("funcml.data.sources")):
            graph.setdefault(m, set()).add(t)
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError, naming the cycle
