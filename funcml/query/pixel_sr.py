"""Pixel super-resolution baseline: a small residual CNN on the classically upsampled input (SRCNN/VDSR style).

``ResidualSRNet`` maps a signal interpolated to the output grid (bicubic 2D, trilinear 3D, linear
1D) to a correction added to it: ``depth`` convolutions of ``width`` channels (3 per axis, ReLU).
``PixelSR().fit(low, high)`` trains it on pairs ``(n, C, *small)``/``(n, C, *large)`` (MSE, Adam,
cosine learning rate over steps or a time budget, through :func:`funcml.engine.fit`); ``predict(low, size)``
upsamples new signals. One code path for 1D, 2D and 3D.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from funcml.engine import CLOCKS, Plan, fit
from funcml.errors import ConfigError, DataError
from funcml.query.interpolate import interpolate_signals
from funcml.seeding import derive_seed

ROUND = 50  # steps per engine round (one history entry each)


class ResidualSRNet(nn.Module):
    """``(B, C, *S)`` upsampled input -> ``(B, C, *S)`` = input + a learnt residual."""

    def __init__(self, dim: int, channels: int, width: int = 64, depth: int = 6) -> None:
        super().__init__()
        if dim not in (1, 2, 3) or depth < 2:
            raise ConfigError(f"the residual CNN needs 1-3 dimensions and depth >= 2; got {dim}, {depth}")
        conv = getattr(nn, f"Conv{dim}d")
        layers: list[nn.Module] = [conv(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [conv(width, width, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(conv(width, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelSR:
    """Train/predict wrapper around :class:`ResidualSRNet`.

    Args: width, depth (network); steps, batch_size, lr, max_minutes, clock (``wall`` or ``process``
    CPU time, as for the query head), seed (training); progress.
    Learnt attributes: ``net_``, ``history_`` (mean loss of every 50 steps), ``fit_seconds_``, ``cpu_seconds_``, ``steps_``.
    """

    def __init__(self, width: int = 64, depth: int = 6, steps: int = 3000, batch_size: int = 16, lr: float = 1e-3,
                 max_minutes: float | None = None, clock: str = "wall", seed: int = 0, device: str = "cpu",
                 progress: bool = True) -> None:
        self.width, self.depth, self.steps, self.batch_size, self.lr = width, depth, steps, batch_size, lr
        self.max_minutes, self.clock, self.seed, self.device, self.progress = max_minutes, clock, seed, device, progress

    def fit(self, low: np.ndarray | Sequence[np.ndarray], high: np.ndarray | Sequence[np.ndarray],
            rows: Sequence[np.ndarray] | None = None) -> "PixelSR":
        """Learn from ``low`` ``(n, C, *small)`` and ``high`` ``(n, C, *large)`` pairs; or from several groups
        of low-resolution inputs (a list) with ``rows`` naming each one's target in ``high``."""
        groups = [np.asarray(low)] if not isinstance(low, (list, tuple)) else list(low)
        rows = [np.arange(len(groups[0]))] if rows is None else list(rows)
        high_t = torch.from_numpy(np.asarray(high, dtype=np.float32)).to(self.device)
        if any(len(g) != len(r) for g, r in zip(groups, rows)) or not groups or high_t.dim() < 3:
            raise DataError("PixelSR.fit needs matching low- and high-resolution pairs")
        size = tuple(high_t.shape[2:])
        ups = [torch.from_numpy(interpolate_signals(g, size, clamp=False)).to(self.device) for g in groups]
        torch.manual_seed(derive_seed(self.seed, "init"))
        net = ResidualSRNet(len(size), high_t.shape[1], self.width, self.depth).to(self.device)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        if self.clock not in CLOCKS or self.steps < 1:
            raise ConfigError(f"PixelSR needs steps >= 1 and a clock of {tuple(CLOCKS)}; got {self.steps}, {self.clock!r}")
        sizes = torch.tensor([len(u) for u in ups], dtype=torch.float64)
        targets = [torch.as_tensor(r).to(self.device) for r in rows]

        def batches(rnd: int):
            for step in range(rnd * ROUND, min((rnd + 1) * ROUND, self.steps)):
                gen = torch.Generator().manual_seed(derive_seed(self.seed, "batch", step))
                k = int(torch.multinomial(sizes, 1, generator=gen))
                pick = torch.randint(len(ups[k]), (min(self.batch_size, len(ups[k])),), generator=gen).to(self.device)
                yield ups[k][pick], high_t[targets[k][pick]]

        plan = Plan(rounds=math.ceil(self.steps / ROUND), total_steps=self.steps, max_minutes=self.max_minutes,
                    lr_schedule=lambda p: self.lr * 0.5 * (1 + math.cos(math.pi * p)), clock=self.clock,
                    stop_within_round=True, progress=self.progress, desc="pixel SR", unit="round")
        run = fit(net, opt, batches, lambda b: (net(b[0]) - b[1]).pow(2).mean(), plan)
        self.net_, self.steps_ = net.eval(), run.steps_done
        self.history_ = [{"step": min(e["round"] * ROUND, run.steps_done), "loss": e["train_loss"]} for e in run.history]
        self.fit_seconds_, self.cpu_seconds_ = run.seconds, run.cpu_seconds
        return self

    def predict(self, low: np.ndarray, size: Sequence[int], batch_size: int = 32) -> np.ndarray:
        """Upsample ``(n, C, *small)`` to ``(n, C, *size)`` (clamped to [0, 1])."""
        if not hasattr(self, "net_"):
            raise ConfigError("this PixelSR is not fitted yet")
        out = []
        with torch.no_grad():
            for s in range(0, len(low), batch_size):
                x = torch.from_numpy(interpolate_signals(low[s:s + batch_size], size, clamp=False)).to(self.device)
                out.append(self.net_(x).clamp_(0, 1).cpu().numpy())
        return np.concatenate(out)
