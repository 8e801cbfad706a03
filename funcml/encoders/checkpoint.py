"""The meta-trainer's checkpoints: :mod:`funcml.io.checkpoint` with the fields the trainer relies on.

``last.json`` carries the step, the best validation PSNR, the configuration, the history and the
statistics window of the run (see :data:`LAST_SCHEMA`); the file layout is that of
:mod:`funcml.io.checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from funcml.io import checkpoint as _generic
from funcml.io.checkpoint import CHECKPOINT_DIR, IMPLEMENTATION_KEYS, LAST, save_checkpoint
from funcml.io.schema import SHA256, Anything, Bool, Float, Int, List, Map, Null, Obj, Str

# last.json: the fields funcml relies on are typed; callers may add more (checked finite).
_PARAM_GROUP = Obj({"params": List(Int(min=0)), "lr": Float(min=0), "betas": List(Float(min=0, max=1), 2, 2),
                    "eps": Float(min=0), "weight_decay": Float(min=0)}, extra=True)
LAST_SCHEMA = Obj({
    "step": Int(min=0),
    "finished": Bool(),
    "best_val_psnr": Float() | Null(),
    "best_step": Int(min=0) | Null(),
    "config": Obj({"field": Map(Anything()), "train": Map(Anything()), "data_fingerprint": Str(),
                   "signal_shape": List(Int(min=1)), "world_size": Int(min=1)},
                  optional={"signal_shape", "world_size"}, extra=True),
    "history": List(Map(Anything())),
    "file": Str(pattern=_generic.FILE_PATTERN),
    "sha256": SHA256,
    "param_groups": List(_PARAM_GROUP, min_len=1),
    "window": Obj({"count": Int(min=0), "outer_loss": Float(), "inner_loss": Float(), "outer_psnr": Float(),
                   "inner_psnr": Float()}, extra=True),
}, optional={"window"}, extra=True)


def read_checkpoint_meta(out: Path) -> dict | None:
    """The metadata of the meta-trainer's newest checkpoint, or None if there is none."""
    return _generic.read_checkpoint_meta(out, LAST_SCHEMA)


def load_checkpoint(out: Path, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore weights and optimizer state in place; return the checkpoint metadata."""
    return _generic.load_checkpoint(out, net, optimizer, LAST_SCHEMA)


__all__ = ["CHECKPOINT_DIR", "IMPLEMENTATION_KEYS", "LAST", "LAST_SCHEMA", "save_checkpoint",
           "read_checkpoint_meta", "load_checkpoint"]
