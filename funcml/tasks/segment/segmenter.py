"""Train and use a segmentation head on a frozen field model (scikit-learn style estimator).

``QuerySegmenter().fit(model, latents, masks)`` learns the head from latents ``(n, P)`` of signals
encoded with ``model`` and their masks ``(n, *spatial)``, which may be on a finer grid than the one
the signals were fitted on (sub-pixel supervision). Each step takes a batch of signals and a random
subset of mask positions, queries the field's features there and minimises the cross-entropy.
``predict(latents, out_shape)`` queries any grid (resolution independence), or a window (``roi``).

On disk a head is a folder: ``config.json`` (format ``funcml.seghead`` version 1: head config,
estimator settings, the field model's id, grids, class names, training record) and
``head.safetensors``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from funcml.progress import progress_bar

from funcml.encoders.config import from_dict
from funcml.errors import ArtifactError, ConfigError, DataError
from funcml.io.artifact import read_artifact_config, verify_listed_file
from funcml.io import atomic_dir, atomic_write_json, load_tensors, save_tensors, sha256_file
from funcml.grids import Roi, axis_positions, default_align, query_grid
from funcml.tasks.segment.head import (HeadConfig, SegmentationHead, context_features, context_offsets, feature_dim,
                                  field_features)
from funcml.seeding import derive_seed

HEAD_FORMAT = "funcml.seghead"
HEAD_VERSION = 1
HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "config.json"
_PARAMS = ("inputs", "feature_layers", "hidden", "layers", "frequencies", "latent_proj", "context", "context_proj",
           "steps", "batch_size", "coords_per_signal", "jitter", "lr", "weight_decay", "seed")


def cell_size(field_shape: Sequence[int], mask_shape: Sequence[int], align: str) -> torch.Tensor:
    """Spacing ``(d,)`` of the mask grid's samples in field coordinates."""
    sizes = []
    for n, m in zip(field_shape, mask_shape):
        pos = axis_positions(int(n), max(int(m), 2), 0.0, 1.0, align, torch.float64)
        step = float(pos[1] - pos[0]) if int(m) > 1 else float(pos[-1] - pos[0]) * 2
        sizes.append(step)
    return torch.tensor(sizes, dtype=torch.float32)


class QuerySegmenter:
    """Segmentation by querying a frozen field model.

    Args:
        inputs, feature_layers, hidden, layers, frequencies, latent_proj, context, context_proj: see
            :class:`HeadConfig`.
        steps: optimisation steps (AdamW, cosine learning rate).
        batch_size: signals per step. coords_per_signal: random mask positions per signal and step.
        lr, weight_decay: AdamW settings. seed: seeds initialisation, batches and positions.
        progress: show progress (a bar on a terminal, log lines otherwise).

    Learnt attributes: ``head_`` (:class:`SegmentationHead`), ``model_`` (the field model),
    ``n_classes_``, ``field_shape_`` (grid the latents were fitted on), ``mask_shape_``, ``align_``,
    ``class_names_``, ``history_`` (loss every 50 steps), ``fit_seconds_``.
    """

    def __init__(self, inputs: str = "both", feature_layers: str = "all", hidden: int = 128, layers: int = 2,
                 frequencies: int = 6, latent_proj: int = 64, context: tuple[float, ...] = (),
                 context_proj: int = 32, steps: int = 1500, batch_size: int = 16,
                 coords_per_signal: int = 1024, jitter: bool = True, lr: float = 2e-3, weight_decay: float = 1e-4, seed: int = 0,
                 progress: bool = True) -> None:
        self.inputs = inputs
        self.feature_layers = feature_layers
        self.hidden = hidden
        self.layers = layers
        self.frequencies = frequencies
        self.latent_proj = latent_proj
        self.context = context
        self.context_proj = context_proj
        self.steps = steps
        self.batch_size = batch_size
        self.coords_per_signal = coords_per_signal
        self.jitter = jitter
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.progress = progress

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in _PARAMS}

    def head_config(self, n_classes: int) -> HeadConfig:
        return HeadConfig(n_classes=n_classes, inputs=self.inputs, feature_layers=self.feature_layers,
                          hidden=self.hidden, layers=self.layers, frequencies=self.frequencies,
                          latent_proj=self.latent_proj, context=tuple(float(r) for r in self.context),
                          context_proj=self.context_proj).validate()

    def _build(self, model, config: HeadConfig) -> SegmentationHead:
        net = model.net
        return SegmentationHead(config, dim_in=net.config.dim_in, latent_dim=net.config.latent_dim,
                                feature_dim=feature_dim(net, config.feature_layers)).to(model.device)

    def _features(self, head: SegmentationHead, coords: torch.Tensor, z: torch.Tensor) -> torch.Tensor | None:
        if not head.use_features:
            return None
        if head.config.context:
            spacing = 2.0 / torch.tensor([max(n - 1, 1) for n in self.field_shape_], dtype=torch.float32)
            offsets = context_offsets(head.config.context, spacing)
            return context_features(self.model_.net, coords, z, offsets, self.feature_layers)
        return field_features(self.model_.net, coords, z, self.feature_layers)

    # -- training -------------------------------------------------------------------------------
    def fit(self, model, latents: np.ndarray | torch.Tensor, masks: np.ndarray, *,
            field_shape: Sequence[int] | None = None, align: str | None = None, n_classes: int | None = None,
            class_names: dict | None = None) -> "QuerySegmenter":
        """Learn the head from ``latents`` ``(n, P)`` (encoded with ``model`` on ``field_shape``,
        default the model's grid) and integer ``masks`` ``(n, *mask_shape)``."""
        if self.steps < 1 or self.batch_size < 1 or self.coords_per_signal < 1:
            raise ConfigError("--steps, --batch-size and --coords-per-signal must be >= 1")
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
        self.model_ = model
        self.n_classes_ = k
        self.field_shape_ = tuple(int(s) for s in (field_shape or model.signal_shape[1:]))
        self.mask_shape_ = tuple(int(s) for s in masks.shape[1:])
        self.align_ = align or default_align(len(self.field_shape_))
        self.class_names_ = {str(c): str((class_names or {}).get(str(c), c)) for c in range(k)}
        torch.manual_seed(derive_seed(self.seed, "init"))
        head = self._build(model, self.head_config(k))
        coords = query_grid(self.field_shape_, self.mask_shape_, align=self.align_, device=model.device)
        cell = cell_size(self.field_shape_, self.mask_shape_, self.align_).to(model.device)
        m_all = torch.as_tensor(masks.reshape(len(masks), -1).astype(np.int64)).to(model.device)
        n, n_coords = len(z), coords.shape[0]
        per = min(self.coords_per_signal, n_coords)
        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        history = []
        running = 0.0
        t0 = time.perf_counter()
        bar = progress_bar(range(self.steps), desc="segment head", unit="step", disable=not self.progress, leave=False)
        for step in bar:
            for g in opt.param_groups:
                g["lr"] = self.lr * 0.5 * (1 + math.cos(math.pi * step / self.steps))
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "batch", step))
            rows = torch.randint(n, (min(self.batch_size, n),), generator=gen).to(model.device)
            pick = torch.randperm(n_coords, generator=gen)[:per].to(model.device)
            c, zb = coords[pick], z[rows]
            if self.jitter:
                c = c + (torch.rand(c.shape, generator=gen).to(c.device) - 0.5) * cell
            logits = head(self._features(head, c, zb), zb, c)
            loss = F.cross_entropy(logits.reshape(-1, k), m_all[rows][:, pick].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running += loss.item()
            if (step + 1) % 50 == 0 or step + 1 == self.steps:
                cnt = (step % 50) + 1
                history.append({"step": step + 1, "loss": running / cnt})
                bar.set_postfix(loss=f"{running / cnt:.4f}")
                running = 0.0
        bar.close()
        self.head_ = head.eval()
        self.history_ = history
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    # -- prediction -----------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise ConfigError("this segmenter is not fitted yet (call fit or load)")

    def predict_logits(self, latents: np.ndarray | torch.Tensor, out_shape: Sequence[int] | None = None, *,
                       roi: Roi | None = None, batch_size: int = 32, chunk_coords: int = 1 << 15) -> torch.Tensor:
        """Logits ``(n, K, *out_shape)`` on any grid (default: the mask grid it was trained on)."""
        self._check_fitted()
        model, head = self.model_, self.head_
        out_shape = tuple(int(s) for s in (out_shape or self.mask_shape_))
        z_all = torch.as_tensor(np.asarray(latents, dtype=np.float32))
        model.check_latents(z_all)
        coords = query_grid(self.field_shape_, out_shape, roi=roi, align=self.align_, device=model.device)
        outs = []
        with torch.no_grad():
            for start in range(0, len(z_all), batch_size):
                z = z_all[start:start + batch_size].to(model.device)
                parts = []
                for cs in range(0, coords.shape[0], chunk_coords):
                    c = coords[cs:cs + chunk_coords]
                    parts.append(head(self._features(head, c, z), z, c))
                logits = torch.cat(parts, dim=1)
                outs.append(logits.transpose(1, 2).reshape(len(z), self.n_classes_, *out_shape).cpu())
        return torch.cat(outs) if outs else torch.zeros(0, self.n_classes_, *out_shape)

    def predict(self, latents: np.ndarray | torch.Tensor, out_shape: Sequence[int] | None = None, **kwargs) -> np.ndarray:
        """Class masks ``(n, *out_shape)`` int64 (argmax of the logits)."""
        return self.predict_logits(latents, out_shape, **kwargs).argmax(dim=1).numpy()

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False, training: dict | None = None) -> None:
        """Write the head folder atomically (``config.json`` + ``head.safetensors``)."""
        self._check_fitted()
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_tensors(tmp / HEAD_WEIGHTS, {k: v.detach().cpu() for k, v in self.head_.state_dict().items()},
                         metadata={"format": HEAD_FORMAT})
            atomic_write_json(tmp / HEAD_CONFIG, {
                "format": HEAD_FORMAT, "version": HEAD_VERSION, "head": asdict(self.head_.config),
                "params": self.get_params(), "model_id": self.model_.id, "field_shape": list(self.field_shape_),
                "mask_shape": list(self.mask_shape_), "align": self.align_, "class_names": self.class_names_,
                "history": self.history_, "fit_seconds": self.fit_seconds_, "training": training or {},
                "files": {HEAD_WEIGHTS: sha256_file(tmp / HEAD_WEIGHTS)}})

    @classmethod
    def load(cls, path: str | Path, model) -> "QuerySegmenter":
        """Load a head folder for use with ``model`` (refused unless it is the model it was trained on)."""
        path = Path(path)
        cfg = read_artifact_config(path, HEAD_CONFIG, HEAD_FORMAT, HEAD_VERSION, "segmentation head")
        weights = verify_listed_file(path, cfg, HEAD_WEIGHTS)
        if model.id is not None and cfg.get("model_id") not in (None, model.id):
            raise ArtifactError(f"the head in {path} was trained on field model {str(cfg['model_id'])[:12]}, not on "
                                f"{model.id[:12]}: pass the model it was trained with")
        try:
            head_cfg = from_dict(HeadConfig, cfg["head"], "segmentation head config")
            head_cfg = dataclasses.replace(head_cfg, context=tuple(head_cfg.context)).validate()
            params = {k: v for k, v in cfg["params"].items() if k in _PARAMS}
            params["context"] = tuple(params.get("context", ()))
        except (KeyError, ConfigError) as exc:
            raise ArtifactError(f"{path}/{HEAD_CONFIG}: {exc}") from None
        est = cls(**params, progress=False)
        head = est._build(model, head_cfg)
        try:
            head.load_state_dict(load_tensors(weights), strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{weights} does not match the head architecture: {exc}") from None
        est.head_ = head.eval()
        est.model_ = model
        est.n_classes_ = head_cfg.n_classes
        est.field_shape_ = tuple(cfg["field_shape"])
        est.mask_shape_ = tuple(cfg["mask_shape"])
        est.align_ = cfg["align"]
        est.class_names_ = dict(cfg.get("class_names", {}))
        est.history_ = list(cfg.get("history", []))
        est.fit_seconds_ = cfg.get("fit_seconds")
        est.training_ = dict(cfg.get("training", {}))
        return est
