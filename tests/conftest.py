"""Shared fixtures: small synthetic signal sets, tiny configurations, the shared-data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from funcml.data.base import ArraySignalSet
from funcml.encoders.config import FieldConfig, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    """``$FUNCML_SHARED_DATA``, else ``../shared/data`` beside the checkout (as ``benchmarks/results.py``)."""
    return Path(os.environ.get("FUNCML_SHARED_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    """The folder of real datasets (``$FUNCML_SHARED_DATA``, default ``../shared/data``); tests using it
    skip cleanly when it is absent."""
    path = _shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"{path} is not available (set FUNCML_SHARED_DATA)")
    return path


def make_signal_set(n: int = 24, shape: tuple[int, ...] = (1, 8, 8), seed: int = 0, n_classes: int = 2,
                    splits: tuple[int, int, int] | None = None) -> ArraySignalSet:
    """Smooth random signals in [0, 1] (sums of low-frequency cosines) with labels and splits."""
    rng = np.random.default_rng(seed)
    spatial = shape[1:]
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in spatial], indexing="ij")
    data = np.zeros((n, *shape), np.float32)
    for i in range(n):
        for c in range(shape[0]):
            v = np.zeros(spatial)
            for _ in range(3):
                freq = rng.uniform(0.5, 2.0, size=len(spatial))
                phase = rng.uniform(0, np.pi)
                v += np.cos(sum(f * g for f, g in zip(freq, grids)) * np.pi + phase)
            data[i, c] = 0.5 + 0.15 * v
    data = np.clip(data, 0, 1)
    tr, va, te = splits or (n - n // 4 - n // 4, n // 4, n // 4)
    codes = np.array([0] * tr + [1] * va + [2] * te, np.uint8)
    labels = rng.integers(0, n_classes, size=(n, 1))
    return ArraySignalSet(data, name="synthetic", spec=f"synthetic:{seed}", splits=codes, labels=labels,
                          task="binary-class" if n_classes == 2 else "multi-class",
                          label_names={str(k): f"class{k}" for k in range(n_classes)},
                          fingerprint=f"synthetic-{seed}-{n}-{shape}")


@pytest.fixture
def tiny_images() -> ArraySignalSet:
    return make_signal_set(24, (1, 8, 8))


@pytest.fixture
def tiny_field() -> FieldConfig:
    return FieldConfig(dim_in=2, channels=1, width=16, depth=4, latent_dim=8, omega_first=10.0, omega_last=30.0)


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TrainConfig(steps=12, batch_size=4, inner_steps=2, inner_lr=0.5, context_ratio=0.5, outer_lr=1e-3,
                       val_every=6, val_signals=4, test_steps=3, checkpoint_every=4, log_every=2, seed=3)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(1)
    yield


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run on a GPU when there is one and are skipped otherwise."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
