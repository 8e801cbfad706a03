"""The feature network for sample-quality metrics: a small CNN trained here on real signals.

Fréchet distance and precision/recall need a feature space; instead of Inception weights from the
internet, a small CNN (1D, 2D or 3D convolutions, chosen by the signal's dimension) is trained to
classify the real training signals, and its penultimate layer ``(B, F)`` is the feature space.
Unlabelled data get the randomly initialised network (random CNN features still separate signal
statistics; the choice is reported).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from funcml.engine import Plan, fit
from funcml.seeding import derive_seed


def _conv(dim: int):
    return {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]


def _pool(dim: int):
    return {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dim]


class SignalCNN(nn.Module):
    """Three conv stages (conv-GroupNorm-ReLU, max-pool between stages), global average pooling,
    a ``feature_dim`` layer and a linear head.

    ``forward(x (B, C, *spatial)) -> (B, n_outputs)`` logits; ``features(x) -> (B, feature_dim)``.
    """

    def __init__(self, dim: int, channels: int, n_outputs: int, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        conv, pool = _conv(dim), _pool(dim)
        layers: list[nn.Module] = []
        c_in = channels
        for i, c_out in enumerate((width, 2 * width, 4 * width)):
            if i:
                layers.append(pool(2, ceil_mode=True))
            layers += [conv(c_in, c_out, 3, padding=1), nn.GroupNorm(8, c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.body = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.Linear(c_in, feature_dim), nn.ReLU(inplace=True))
        self.head = nn.Linear(feature_dim, max(n_outputs, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.body(x).flatten(2).mean(dim=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_feature_net(signals: np.ndarray, labels: np.ndarray | None, *, multilabel: bool = False,
                      steps: int = 1000, batch_size: int = 64, lr: float = 2e-3,
                      seed: int = 0, device: str | torch.device = "cpu",
                      log: Callable[[str], None] | None = None) -> tuple[SignalCNN, dict]:
    """Train a :class:`SignalCNN` for ``steps`` mini-batches on ``signals`` ``(N, C, *spatial)`` with
    ``labels`` ``(N,)`` (class indices) or ``(N, L)`` 0/1 (``multilabel``); None leaves it randomly
    initialised. Classes are balanced in the loss (inverse-frequency weights), so that small
    classes shape the features too.

    Returns ``(net in eval mode, info)`` with info ``{"trained", "steps", "train_accuracy"}``.
    """
    dim, channels = signals.ndim - 2, signals.shape[1]
    torch.manual_seed(derive_seed(seed, "init", 7))
    if labels is None:
        net = SignalCNN(dim, channels, 1).to(device).eval()
        return net, {"trained": False, "steps": 0, "train_accuracy": None}
    labels = np.asarray(labels)
    n_out = labels.shape[1] if multilabel else int(labels.max()) + 1
    net = SignalCNN(dim, channels, n_out).to(device)
    x_all = torch.from_numpy(np.ascontiguousarray(signals, dtype=np.float32))
    y_all = torch.from_numpy(labels.astype(np.float32 if multilabel else np.int64))
    n = len(x_all)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    if multilabel:
        loss_fn = nn.BCEWithLogitsLoss()
    else:
        counts = np.bincount(labels, minlength=n_out).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / n_out, 0.0)
        loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=device))
    g = torch.Generator().manual_seed(derive_seed(seed, "batch", 7))

    def stream():
        """Batches of reshuffled passes over the signals, one per step."""
        perm, pos = torch.randperm(n, generator=g), 0
        while True:
            if pos + batch_size > n:
                perm, pos = torch.randperm(n, generator=g), 0
            yield perm[pos:pos + batch_size]
            pos += batch_size

    batches = stream()
    fit(net, opt, lambda _step: [next(batches)], lambda i: loss_fn(net(x_all[i].to(device)), y_all[i].to(device)),
        Plan(rounds=steps, unit="step"), after_step=lambda _step: sched.step())
    net.eval()
    pred = predict(net, signals, multilabel=multilabel, device=device)
    acc = float((pred == labels).mean())
    if log:
        log(f"feature CNN: {steps} steps on {n} real signals, train accuracy {acc:.3f}")
    return net, {"trained": True, "steps": steps, "train_accuracy": acc}


@torch.no_grad()
def _batched(net: SignalCNN, signals: np.ndarray, fn: str, batch_size: int, device) -> np.ndarray:
    out = []
    for start in range(0, len(signals), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(signals[start:start + batch_size], dtype=np.float32)).to(device)
        out.append(getattr(net, fn)(x).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def embed(net: SignalCNN, signals: np.ndarray, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
    """Penultimate features ``(N, F)`` float64 of signals ``(N, C, *spatial)``."""
    return _batched(net, signals, "features", batch_size, device).astype(np.float64)


def predict(net: SignalCNN, signals: np.ndarray, multilabel: bool = False, batch_size: int = 256,
            device: str | torch.device = "cpu") -> np.ndarray:
    """Class indices ``(N,)`` (or 0/1 ``(N, L)`` for multi-label) predicted for ``signals``."""
    logits = _batched(net, signals, "forward", batch_size, device)
    return (logits > 0).astype(np.int64) if multilabel else logits.argmax(axis=1)
