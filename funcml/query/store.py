"""A query head on disk: ``config.json`` + ``head.safetensors``, tied to the field model it reads.

``config.json`` (format ``funcml.queryhead`` version 1): the task (``superres``, ``impute``,
``segment``), the head architecture (:class:`funcml.query.head.QueryHeadConfig`), the field model's
content id, the grid the head's inputs were encoded on, the sampling convention, task extras
(class names, mask grid ...), the training record and the weights' sha256. Loading checks all of it
and refuses a field model other than the one the head was trained with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path

from funcml.encoders.config import from_dict
from funcml.errors import ArtifactError, ConfigError
from funcml.io import atomic_write_json, load_tensors, save_tensors, sha256_file
from funcml.io.artifact import read_artifact_config, verify_listed_file
from funcml.query.head import QueryHead, QueryHeadConfig, build_head

HEAD_FORMAT = "funcml.queryhead"
HEAD_VERSION = 1
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "config.json"


def write_head(directory: str | Path, head: QueryHead, *, task: str, model_id: str | None, grid: tuple[int, ...],
               align: str, extra: dict | None = None) -> None:
    """Write the head's two files into ``directory`` (each atomically; the caller makes the folder)."""
    directory = Path(directory)
    save_tensors(directory / HEAD_WEIGHTS, {k: v.detach().cpu() for k, v in head.state_dict().items()},
                 metadata={"format": HEAD_FORMAT})
    atomic_write_json(directory / HEAD_CONFIG, {
        "format": HEAD_FORMAT, "version": HEAD_VERSION, "task": task, "head": asdict(head.config),
        "model_id": model_id, "grid": [int(s) for s in grid], "align": align, **(extra or {}),
        "files": {HEAD_WEIGHTS: sha256_file(directory / HEAD_WEIGHTS)}})


def read_head(directory: str | Path, model, *, tasks: tuple[str, ...] | None = None) -> tuple[QueryHead, dict]:
    """Load a head folder for ``model``: ``(head on the model's device, its config dict)``.

    Refused (one :class:`ArtifactError`) when the folder is not a head, is corrupt, was trained for
    another task than ``tasks``, or on another field model.
    """
    directory = Path(directory)
    cfg = read_artifact_config(directory, HEAD_CONFIG, HEAD_FORMAT, HEAD_VERSION, "query head")
    weights = verify_listed_file(directory, cfg, HEAD_WEIGHTS)
    if tasks is not None and cfg.get("task") not in tasks:
        raise ArtifactError(f"{directory} is a head for {cfg.get('task')}, not for {' or '.join(tasks)}")
    if model.id is not None and cfg.get("model_id") not in (None, model.id):
        raise ArtifactError(f"the head in {directory} was trained on field model {str(cfg['model_id'])[:12]}, not on "
                            f"{model.id[:12]}: pass the model it was trained with")
    try:
        head_cfg = from_dict(QueryHeadConfig, cfg["head"], "query head config")
        head_cfg = dataclasses.replace(head_cfg, inputs=tuple(head_cfg.inputs),
                                       context=tuple(head_cfg.context)).validate()
        grid = tuple(int(s) for s in cfg["grid"])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise ArtifactError(f"{directory}/{HEAD_CONFIG}: {exc}") from None
    if len(grid) != model.config.dim_in:
        raise ArtifactError(f"{directory}: a head for {len(grid)}-D signals does not fit this {model.config.dim_in}-D model")
    head = build_head(head_cfg, model.net)
    try:
        head.load_state_dict(load_tensors(weights), strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{weights} does not match the head architecture: {exc}") from None
    cfg["grid"] = grid
    return head.eval(), cfg
