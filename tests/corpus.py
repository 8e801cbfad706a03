"""Small valid files of every kind funcml reads, and systematic ways to break them.

``build_world(root)`` writes one of each artifact (MedMNIST npz, a model, a second model of another
latent size, a latent set with its model embedded, a MedNF release) and returns their paths;
``byte_mutations`` and ``json_mutations`` derive broken variants (truncations, garbage, flipped bytes;
fields of the wrong type, missing or out of range) for the corruption corpus tests.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from funcml.encoders.config import FieldConfig, TrainConfig
from test_cli import write_medmnist_npz

FIELD = FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0, omega_last=30.0)
TRAIN = TrainConfig(steps=3, batch_size=4, inner_steps=2, inner_lr=0.5, context_ratio=0.5, outer_lr=3e-3,
                    val_every=0, val_signals=4, test_steps=3, checkpoint_every=2, log_every=1, seed=2)


def build_world(root: Path) -> dict[str, Path]:
    """Write a tiny dataset, two models, a latent set and a MedNF release under ``root``."""
    from funcml.data import load_signals
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel
    from funcml.encoders.trainer import MetaTrainer

    root.mkdir(parents=True, exist_ok=True)
    data = write_medmnist_npz(root / "tinymnist.npz", n=(12, 4, 4))
    signals = load_signals(data)
    MetaTrainer(FIELD, TRAIN, signals, root / "model", progress=False).run()
    MetaTrainer(dataclasses.replace(FIELD, latent_dim=9), TRAIN, signals, root / "model9", progress=False).run()
    MetaTrainer(FIELD, dataclasses.replace(TRAIN, seed=7), signals, root / "model_b", progress=False).run()
    model = FieldModel.load(root / "model")
    encode_signal_set(model, signals, root / "latents", dataclasses.replace(model.encode_defaults, batch_size=8),
                      model_dir=root / "model", progress=False)
    mednf = root / "mednf"
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        (mednf / split).mkdir(parents=True)
        for i in range(n):
            torch.save({"modulations": torch.randn(8), "label": torch.tensor([i % 2])},
                       mednf / split / f"datapoint_{i}.pt")
    return {"data": data, "model": root / "model", "model9": root / "model9", "model_b": root / "model_b",
            "latents": root / "latents", "mednf": mednf}


_SHARED: dict[str, Path] = {}


def shared_world() -> dict[str, Path]:
    """One :func:`build_world` per test process (read-only: tests copy what they modify)."""
    if not _SHARED:
        import atexit
        import shutil
        import tempfile

        from funcml import viz

        root = Path(tempfile.mkdtemp(prefix="funcml-world-"))
        atexit.register(shutil.rmtree, root, True)
        torch.set_num_threads(1)
        draw, viz.plot_training_curves = viz.plot_training_curves, lambda history, path: None  # ~1 s a model
        try:
            _SHARED.update(build_world(root / "world"))
        finally:
            viz.plot_training_curves = draw
    return dict(_SHARED)


def byte_mutations(raw: bytes, seed: int = 0) -> dict[str, bytes]:
    """Named broken copies of a file: empty, cut at several points, garbage, zeros, flipped bytes."""
    rng = np.random.default_rng(seed)
    n = len(raw)
    out = {"empty": b"", "first-byte": raw[:1], "first-64": raw[:64], "half": raw[: n // 2],
           "minus-16": raw[:-16], "garbage": rng.integers(0, 256, n // 2 + 16, dtype=np.uint8).tobytes(),
           "zeros": b"\0" * n}
    for k, (lo, hi) in enumerate([(0, min(n, 64)), (n // 3, n), (n // 2, n)]):
        b = bytearray(raw)
        i = int(rng.integers(lo, max(hi, lo + 1)))
        b[i % n] ^= 0xA5
        out[f"flip-{k}"] = bytes(b)
    return out


WRONG_VALUES: tuple[Any, ...] = (None, "x", -1, {}, 10**15)


def _paths(obj: Any, prefix: tuple = (), skip: tuple[str, ...] = ()) -> Iterator[tuple]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in skip:
                continue
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,), skip)
    elif isinstance(obj, list) and obj:
        yield prefix + (0,)
        yield from _paths(obj[0], prefix + (0,), skip)


def json_mutations(doc: Any, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    """``(description, mutated copy)``: every field (first list items only) set to each wrong value, or deleted."""
    for path in _paths(doc, skip=skip):
        for value in (*WRONG_VALUES, "<deleted>"):
            m = copy.deepcopy(doc)
            parent = m
            for p in path[:-1]:
                parent = parent[p]
            if value == "<deleted>":
                del parent[path[-1]]
            else:
                if parent[path[-1]] == value:
                    continue
                parent[path[-1]] = value
            shown = value if value == "<deleted>" else repr(value)
            yield f"{'.'.join(map(str, path))} = {shown}", m


def digest_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (to check that a refused command changed nothing)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def rewrite_json(path: Path, doc: Any) -> None:
    path.write_text(json.dumps(doc))
