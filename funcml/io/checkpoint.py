"""Resumable training checkpoints: weights and optimizer state in safetensors, the rest in JSON.

``checkpoints/ckpt-<step>.safetensors`` holds ``model.*`` and ``optim.<i>.<key>`` tensors;
``checkpoints/last.json`` names the newest file with its sha256 and carries the caller's metadata
(validated against the caller's schema on reading). The JSON is written after the tensor file, so
``last.json`` always points at a complete checkpoint; older tensor files are then removed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from funcml.errors import ArtifactError
from funcml.io.atomic import atomic_write_json, read_json
from funcml.io.hashing import sha256_file
from funcml.io.schema import SHA256, Anything, Float, Int, List, Map, Obj, Str, validate
from funcml.io.tensorfile import load_tensors, save_tensors

CHECKPOINT_DIR = "checkpoints"
LAST = "last.json"
FILE_PATTERN = r"ckpt-\d{9}\.safetensors"
IMPLEMENTATION_KEYS = ("fused", "foreach")  # optimizer settings that choose a kernel, not the update

PARAM_GROUP = Obj({"params": List(Int(min=0)), "lr": Float(min=0)}, extra=True)
FILE_FIELDS = {"file": Str(pattern=FILE_PATTERN), "sha256": SHA256, "param_groups": List(PARAM_GROUP, min_len=1)}
"""What :func:`save_checkpoint` adds to every ``last.json``; a caller's schema includes these."""
ANY_SCHEMA = Obj(FILE_FIELDS, extra=True)


def save_checkpoint(out: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any],
                    step: int | None = None) -> Path:
    """Write a checkpoint numbered ``step`` (default ``meta['step']``) and point ``last.json`` at it."""
    directory = Path(out) / CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    number = int(meta["step"] if step is None else step)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in net.state_dict().items()}
    opt = optimizer.state_dict()
    for i, state in opt["state"].items():
        for key, value in state.items():
            tensors[f"optim.{i}.{key}"] = value if isinstance(value, torch.Tensor) else torch.tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
    name = f"ckpt-{number:09d}.safetensors"
    save_tensors(directory / name, tensors)
    atomic_write_json(directory / LAST, {**meta, "file": name, "sha256": sha256_file(directory / name),
                                         "param_groups": groups})
    for old in directory.glob("ckpt-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    for stale in directory.glob(".*.tmp"):  # left by a run killed while writing (one writer: the output lock)
        stale.unlink(missing_ok=True)
    return directory / name


def read_checkpoint_meta(out: Path, schema: Obj = ANY_SCHEMA) -> dict | None:
    """The metadata of the newest checkpoint (checked against ``schema``), or None if there is none."""
    path = Path(out) / CHECKPOINT_DIR / LAST
    if not path.is_file():
        return None
    hint = " (use --overwrite to start the run over)"
    try:
        return validate(read_json(path, what="checkpoint metadata"), schema, str(path))
    except ArtifactError as exc:
        raise ArtifactError(f"{exc}{hint}") from None


def _optimizer_state(path: Path, tensors: dict[str, torch.Tensor], params: list[torch.Tensor]) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            parts = key.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params):
                raise ArtifactError(f"checkpoint {path} has an unexpected optimizer entry {key!r}")
            i, name = int(parts[1]), parts[2]
            if name != "step" and value.shape != params[i].shape:
                raise ArtifactError(f"checkpoint {path}: optimizer state {key!r} has shape {tuple(value.shape)}, "
                                    f"the parameter {tuple(params[i].shape)}")
            state.setdefault(i, {})[name] = value
    return state


def load_checkpoint(out: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schema: Obj = ANY_SCHEMA) -> dict:
    """Restore weights and optimizer state in place; return the checkpoint metadata."""
    meta = read_checkpoint_meta(out, schema)
    if meta is None:
        raise ArtifactError(f"no checkpoint to resume in {Path(out) / CHECKPOINT_DIR}")
    path = Path(out) / CHECKPOINT_DIR / meta["file"]
    if not path.is_file() or sha256_file(path) != meta.get("sha256"):
        raise ArtifactError(f"checkpoint {path} is missing or does not match its checksum")
    tensors = load_tensors(path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        net.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"checkpoint {path} does not match the model architecture: {exc}") from None
    state = _optimizer_state(path, tensors, [p for g in optimizer.param_groups for p in g["params"]])
    if len(meta["param_groups"]) != len(optimizer.param_groups):
        raise ArtifactError(f"checkpoint {path} has {len(meta['param_groups'])} optimizer parameter groups, "
                            f"this model {len(optimizer.param_groups)}")
    # hyper-parameters from the checkpoint; how the step is computed (fused, foreach) from this optimizer
    groups = [{**{k: (tuple(v) if k == "betas" else v) for k, v in g.items()},
               **{k: current[k] for k in IMPLEMENTATION_KEYS if k in current}}
              for g, current in zip(meta["param_groups"], optimizer.param_groups)]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"checkpoint {path} has an incompatible optimizer state: {exc}") from None
    return meta


__all__ = ["CHECKPOINT_DIR", "LAST", "FILE_PATTERN", "FILE_FIELDS", "ANY_SCHEMA",
           "save_checkpoint", "read_checkpoint_meta", "load_checkpoint"]
