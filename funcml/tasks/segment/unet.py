"""Pixel baseline: a small U-Net (1D, 2D or 3D convolutions) trained on the same images and masks.

``UNetSegmenter().fit(x, masks)`` trains on signals ``(n, C, *spatial)`` and masks ``(n, *spatial)``
(cross-entropy, AdamW with a cosine schedule, random flips); ``predict(x)`` returns ``(n, *spatial)``.
Inputs whose size is not a multiple of ``2 ** depth`` are padded (replicate) and cropped back.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from funcml.engine import CLOCKS, Plan, fit
from funcml.errors import ConfigError, DataError
from funcml.io import atomic_dir, atomic_write_json, save_tensors
from funcml.networks.unet import UNet
from funcml.seeding import derive_seed


class UNetSegmenter:
    """Train/predict wrapper around :class:`UNet` (scikit-learn conventions).

    ``max_minutes``: a time budget of ``clock`` time (``wall``, or the ``process``'s CPU time) that
    ends the run before ``epochs`` when it is spent; the cosine learning rate follows the budget.

    Learnt attributes: ``net_``, ``n_classes_``, ``history_`` (mean loss per epoch), ``fit_seconds_``,
    ``cpu_seconds_`` (process CPU time), ``steps_``.
    """

    def __init__(self, base: int = 16, depth: int = 3, epochs: int = 30, batch_size: int = 16, lr: float = 2e-3,
                 weight_decay: float = 1e-4, augment: bool = True, seed: int = 0, device: str = "cpu",
                 progress: bool = True, max_minutes: float | None = None, clock: str = "wall") -> None:
        self.base = base
        self.depth = depth
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.augment = augment
        self.seed = seed
        self.device = device
        self.progress = progress
        self.max_minutes = max_minutes
        self.clock = clock

    def fit(self, x: np.ndarray, masks: np.ndarray, n_classes: int | None = None) -> "UNetSegmenter":
        x = np.asarray(x, dtype=np.float32)
        masks = np.asarray(masks)
        if x.shape[0] != masks.shape[0] or x.shape[2:] != masks.shape[1:]:
            raise DataError(f"signals {x.shape} and masks {masks.shape} do not pair up")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("--epochs and --batch-size must be >= 1")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {tuple(CLOCKS)}; got {self.clock!r}")
        k = int(n_classes or max(int(masks.max()) + 1, 2))
        torch.manual_seed(derive_seed(self.seed, "init"))
        net = UNet(x.ndim - 2, x.shape[1], k, self.base, self.depth).to(self.device)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        xt, mt = torch.from_numpy(x), torch.from_numpy(masks.astype(np.int64))
        total = self.epochs * max(1, math.ceil(len(x) / self.batch_size))
        plan = Plan(rounds=self.epochs, total_steps=total,
                    lr_schedule=lambda p: self.lr * 0.5 * (1 + math.cos(math.pi * p)), max_minutes=self.max_minutes, clock=self.clock, stop_within_round=True,
                    progress=self.progress, desc="u-net")

        def loss(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            return F.cross_entropy(net(batch[0].to(self.device)), batch[1].to(self.device))

        run = fit(net, opt, lambda epoch: self._batches(xt, mt, epoch), loss, plan)
        history = [{"epoch": e["epoch"], "loss": e["train_loss"]} for e in run.history]
        self.net_ = net.eval()
        self.n_classes_ = k
        self.history_ = history
        self.fit_seconds_, self.cpu_seconds_, self.steps_ = run.seconds, run.cpu_seconds, run.steps_done
        return self

    def _batches(self, xt: torch.Tensor, mt: torch.Tensor, epoch: int):
        """Epoch ``epoch``'s shuffled batches ``(signals, masks)``, randomly flipped along each axis."""
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "batch", epoch))
        order = torch.randperm(len(xt), generator=gen)
        for start in range(0, len(xt), self.batch_size):
            rows = order[start:start + self.batch_size]
            xb, mb = xt[rows], mt[rows]
            if self.augment:
                for axis in range(xt.ndim - 2):
                    if bool(torch.rand((), generator=gen) < 0.5):
                        xb, mb = xb.flip(2 + axis), mb.flip(1 + axis)
            yield xb, mb

    def predict(self, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class masks ``(n, *spatial)`` int64."""
        if not hasattr(self, "net_"):
            raise ConfigError("this U-Net is not fitted yet")
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                xb = torch.from_numpy(np.asarray(x[start:start + batch_size], dtype=np.float32)).to(self.device)
                out.append(self.net_(xb).argmax(dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, *np.asarray(x).shape[2:]), np.int64)

    def save(self, path: str | Path, *, overwrite: bool = False, extra: dict | None = None) -> None:
        """Weights (safetensors) and ``config.json`` (settings, class count, history)."""
        with atomic_dir(path, overwrite=overwrite) as tmp:
            save_tensors(tmp / "unet.safetensors", {k: v.detach().cpu() for k, v in self.net_.state_dict().items()},
                         metadata={"format": "funcml.unet"})
            atomic_write_json(tmp / "config.json", {
                "format": "funcml.unet", "version": 1, "n_classes": self.n_classes_,
                "params": {k: getattr(self, k) for k in ("base", "depth", "epochs", "batch_size", "lr",
                                                          "weight_decay", "augment", "seed")},
                "history": self.history_, "fit_seconds": self.fit_seconds_, **(extra or {})})
