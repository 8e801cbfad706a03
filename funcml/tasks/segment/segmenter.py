"""Segmentation by querying a frozen field model: the query head configured for class logits.

``QuerySegmenter().fit(model, latents, masks)`` learns a :class:`funcml.query.head.QueryHead` with
``output="logits"`` from latents ``(n, P)`` of signals encoded with ``model`` and their masks
``(n, *spatial)``, which may be on a finer grid than the one the signals were fitted on (sub-pixel
supervision). Each step takes a batch of signals and random mask positions (moved within their
cell with ``jitter``), reads the head's inputs there and minimises the cross-entropy. With
``observed`` among the inputs the head also reads the image samples around each position (pass
``signals``). ``predict(latents, out_shape)`` queries any grid (resolution independence) or a
window (``roi``).

On disk a head is a folder (:mod:`funcml.query.store`, task ``segment``): ``config.json`` and
``head.safetensors``, with the class names and grids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from funcml.errors import ArtifactError, DataError
from funcml.io import atomic_dir
from funcml.query.estimator import QueryEstimator
from funcml.grids import Roi, default_align
from funcml.query.pairs import PairGroup, PairSet

DEFAULTS = {"inputs": "both", "hidden": 128, "layers": 2, "steps": 1500, "batch_size": 16, "coords_per_signal": 1024,
            "lr": 2e-3, "jitter": True, "neighbours": 3, "base": "none"}


class QuerySegmenter(QueryEstimator):
    """Segmentation by querying a frozen field model (the query head with class logits).

    Args: see :class:`funcml.query.estimator.QueryEstimator` (defaults here: ``inputs="both"``
    (features and latent), ``hidden=128``, ``layers=2``, ``steps=1500``, ``batch_size=16``,
    ``coords_per_signal=1024``, ``lr=2e-3``, ``jitter=True``).

    Learnt attributes: ``head_``, ``model_``, ``n_classes_``, ``field_shape_`` (grid the latents
    were fitted on), ``mask_shape_``, ``align_``, ``class_names_``, ``history_`` (mean loss of every
    ``val_every`` steps), ``fit_seconds_``.
    """

    task = "segment"
    tasks = ("segment",)
    output = "logits"

    def __init__(self, **params) -> None:
        super().__init__(**{**DEFAULTS, **params})

    def fit(self, model, latents: np.ndarray | torch.Tensor, masks: np.ndarray, *,
            signals: np.ndarray | None = None, field_shape: Sequence[int] | None = None, align: str | None = None,
            n_classes: int | None = None, class_names: dict | None = None,
            checkpoint_dir: str | Path | None = None) -> "QuerySegmenter":
        """Learn the head from ``latents`` ``(n, P)`` (encoded with ``model`` on ``field_shape``,
        default the model's grid), integer ``masks`` ``(n, *mask_shape)`` and, for heads reading
        ``observed`` samples, the ``signals`` ``(n, C, *field_shape)`` the latents were encoded from."""
        z = torch.as_tensor(np.asarray(latents, dtype=np.float32)).to(model.device)
        model.check_latents(z)
        masks = np.asarray(masks)
        if len(masks) != len(z):
            raise DataError(f"{len(z)} latents but {len(masks)} masks")
        if masks.ndim - 1 != model.config.dim_in:
            raise DataError(f"masks of shape {masks.shape[1:]} do not fit {model.config.dim_in}-D signals")
        if masks.min() < 0:
            raise DataError("mask values must be class indices >= 0")
        k = int(n_classes or max(int(masks.max()) + 1, 2))
        if masks.max() >= k:
            raise DataError(f"masks hold class {int(masks.max())} but n_classes is {k}")
        grid = tuple(int(s) for s in (field_shape or model.signal_shape[1:]))
        config = self.head_config(k, model.signal_shape[0])
        inputs = None
        if config.needs_observed:
            if signals is None or tuple(np.shape(signals)[2:]) != grid or len(signals) != len(z):
                raise DataError(f"a head reading observed samples needs the {len(z)} signals on their {grid} grid")
            inputs = torch.from_numpy(np.asarray(signals, np.float32)).to(model.device)
        align = align or default_align(len(grid))
        group = PairGroup(inputs, z, torch.as_tensor(masks.astype(np.int64)).to(model.device),
                          torch.arange(len(z), device=model.device), align=align, grid=grid)
        self.fit_pairs(model, PairSet([group]), out_dim=k, channels=model.signal_shape[0], grid=grid, align=align,
                       loss="ce", checkpoint_dir=checkpoint_dir)
        self.n_classes_, self.mask_shape_ = k, tuple(int(s) for s in masks.shape[1:])
        self.class_names_ = {str(c): str((class_names or {}).get(str(c), c)) for c in range(k)}
        self._aliases()
        return self

    def _aliases(self) -> None:
        self.field_shape_ = self.grid_
        self.history_ = list(self.record_.get("history", []))
        self.fit_seconds_ = self.record_.get("seconds")

    def predict_logits(self, latents: np.ndarray | torch.Tensor, out_shape: Sequence[int] | None = None, *,
                       signals: np.ndarray | None = None, roi: Roi | None = None, batch_size: int = 32) -> torch.Tensor:
        """Logits ``(n, K, *out_shape)`` on any grid (default: the mask grid it was trained on)."""
        self._check_fitted()
        return self.predict_grid(latents, out_shape or self.mask_shape_, signals=signals, roi=roi,
                                 batch_size=batch_size)

    def predict(self, latents: np.ndarray | torch.Tensor, out_shape: Sequence[int] | None = None, **kwargs) -> np.ndarray:
        """Class masks ``(n, *out_shape)`` int64 (argmax of the logits)."""
        return self.predict_logits(latents, out_shape, **kwargs).argmax(dim=1).numpy()

    def _extra(self) -> dict:
        return {"mask_shape": list(self.mask_shape_), "class_names": self.class_names_}

    def save(self, path: str | Path, *, overwrite: bool = False, training: dict | None = None) -> None:
        """Write the head folder atomically (``config.json`` + ``head.safetensors``)."""
        self._check_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.write(tmp, training)

    def _restore(self, cfg: dict) -> None:
        try:
            self.n_classes_ = int(cfg["head"]["out_dim"])
            self.mask_shape_ = tuple(int(s) for s in cfg["mask_shape"])
            self.class_names_ = dict(cfg.get("class_names", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"segmentation head config lacks {exc}") from None
        self._aliases()
