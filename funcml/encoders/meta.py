"""Second-order CAVIA with context reduction: the inner loop and the meta-gradient.

For a meta-batch of signals x_b (values ``(N, C)`` on the coordinate grid c):

    phi_b^0 = 0
    phi_b^{g+1} = phi_b^g - alpha * grad_phi MSE(f(c[S_g]; phi_b^g), x_b[S_g])    g = 0..G-1
    L_outer = mean_b MSE(f(c; phi_b^G), x_b)

S_g is a fresh random subset of ``gamma * N`` coordinates at every inner step (shared by the
batch, as in the official code); the outer loss uses all N. The outer gradient flows through the
unrolled inner updates (``create_graph=True``) unless first-order is requested.

Every function here is pure: it takes the network, the latents and the data and returns tensors.
This is the reference definition of the method, in plain autograd. Where a backend applies
(:func:`funcml.encoders.dispatch.fast_path`, chosen by ``execution``: see :mod:`funcml.backends`),
an entry point hands the same computation to it first thing; ``tests/test_backend_*.py`` hold each
backend to these functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from funcml.backends import Execution, FusedBackend
from funcml.encoders.coords import sample_context, signals_to_values
from funcml.encoders.dispatch import fast_path
from funcml.encoders.siren import ModulatedSiren


def per_signal_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per signal: ``(B, N, C)`` x2 -> ``(B,)``.

    ``weights`` ``(B, N)`` (e.g. a 0/1 mask of observed coordinates) gives a weighted mean over
    coordinates.
    """
    err = (pred - target).pow(2)
    if weights is None:
        return err.mean(dim=(1, 2))
    w = weights.unsqueeze(-1)
    return (err * w).sum(dim=(1, 2)) / (w.sum(dim=(1, 2)) * err.shape[-1]).clamp_min(1e-12)


def _subset(coords: torch.Tensor, values: torch.Tensor, weights: torch.Tensor | None, idx: torch.Tensor | None):
    if idx is None:
        return coords, values, weights
    return coords[idx], values[:, idx], None if weights is None else weights[:, idx]


def adapt_latents(net: ModulatedSiren, coords: torch.Tensor, values: torch.Tensor,
                  subsets: Sequence[torch.Tensor | None], inner_lr: float, *, create_graph: bool,
                  weights: torch.Tensor | None = None, latents: torch.Tensor | None = None,
                  recompute: bool = False, execution: Execution | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``len(subsets)`` inner SGD steps on phi from zero (or from ``latents``).

    Args:
        coords: ``(N, d)`` grid; values: ``(B, N, C)`` targets; weights: optional ``(B, N)``.
        subsets: per inner step, coordinate indices ``(n,)`` or None for all coordinates.
        inner_lr: alpha (meta-SGD networks use their learnt per-dimension rates instead).
        create_graph: keep the graph of each inner gradient (second order).
        recompute: keep only each inner step's inputs and recompute the rest in the backward
            (fused backends only; less memory, about a third more inner-loop work).
        execution: the backend and its options (default: ``auto``).

    Returns:
        ``(phi, last_inner_loss)``: adapted latents ``(B, P)`` and the per-signal loss ``(B,)`` of
        the last inner step (zeros when there are no steps).
    """
    lr = net.inner_learning_rate(inner_lr)
    fast = fast_path(execution, net, coords, values, weights)
    if fast is not None:
        return fast.adapt_latents(net, coords, values, subsets, lr, create_graph=create_graph, weights=weights,
                                  latents=latents, recompute=recompute)
    b = values.shape[0]
    loss = torch.zeros(b, device=values.device, dtype=values.dtype)
    if latents is None:
        latents = torch.zeros(b, net.config.latent_dim, device=values.device, dtype=values.dtype)
    phi = latents if latents.requires_grad else latents.requires_grad_(True)
    for idx in subsets:
        c, v, w = _subset(coords, values, weights, idx)
        loss = per_signal_mse(net(c, phi), v, w)
        # d(sum_b loss_b)/d(phi_b) = d(loss_b)/d(phi_b): each signal's latent gets its own gradient.
        (grad,) = torch.autograd.grad(loss.sum(), phi, create_graph=create_graph)
        phi = phi - lr * grad
    return phi, loss.detach()


_SUMS = ("outer_loss", "inner_loss", "outer_psnr", "inner_psnr")


@dataclass
class MetaStats:
    """Sums over the signals seen in one or more meta-steps (divide by the count for means).

    The sums stay on the signals' device as float64 tensors once a batch is added (no host-device
    sync per step); :meth:`means` and :meth:`as_floats` read them (one sync each).
    """

    count: int = 0
    outer_loss: float | torch.Tensor = 0.0
    inner_loss: float | torch.Tensor = 0.0
    outer_psnr: float | torch.Tensor = 0.0
    inner_psnr: float | torch.Tensor = 0.0

    def add(self, outer: torch.Tensor, inner: torch.Tensor) -> None:
        """Add per-signal outer and last inner losses ``(b,)``."""
        self.count += int(outer.numel())
        self.outer_loss = self.outer_loss + outer.detach().sum(dtype=torch.float64)
        self.inner_loss = self.inner_loss + inner.detach().sum(dtype=torch.float64)
        self.outer_psnr = self.outer_psnr + psnr_from_mse(outer).sum(dtype=torch.float64)
        self.inner_psnr = self.inner_psnr + psnr_from_mse(inner).sum(dtype=torch.float64)

    def merge(self, other: "MetaStats") -> None:
        self.count += other.count
        for name in _SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def sums(self, device: torch.device | None = None) -> torch.Tensor:
        """The four sums as one float64 tensor ``(4,)`` (on ``device``, without a sync)."""
        values = [getattr(self, n) for n in _SUMS]
        if device is None:
            device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
        return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])

    @classmethod
    def from_sums(cls, count: int, sums: torch.Tensor) -> "MetaStats":
        return cls(count, *sums.unbind())

    def as_floats(self) -> dict[str, float]:
        """``count`` and the sums as plain numbers (one sync)."""
        return {"count": self.count, **dict(zip(_SUMS, self.sums().tolist()))}

    def means(self) -> dict[str, float]:
        values = self.as_floats()
        n = max(self.count, 1)
        return {"loss_outer": values["outer_loss"] / n, "loss_inner": values["inner_loss"] / n,
                "psnr_outer": values["outer_psnr"] / n, "psnr_inner": values["inner_psnr"] / n}


def psnr_from_mse(mse: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB for signals in [0, data_range]."""
    return 10.0 * torch.log10(data_range ** 2 / mse.detach().clamp_min(1e-20))


def draw_subsets(n_coords: int, ratio: float, steps: int, generator: torch.Generator,
                 device: torch.device | None = None) -> list[torch.Tensor | None]:
    """The G context subsets of one meta-step, drawn once and shared by every micro-batch."""
    return [sample_context(n_coords, ratio, generator, device) for _ in range(steps)]


def meta_losses(net: ModulatedSiren, coords: torch.Tensor, signals: torch.Tensor,
                subsets: Sequence[torch.Tensor | None], inner_lr: float, first_order: bool = False, *,
                recompute: bool = False, latents: torch.Tensor | None = None,
                execution: Execution | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-signal outer losses ``(B,)`` (full context, after adaptation) and last inner losses.

    ``signals`` is ``(B, C, *spatial)`` on the grid ``coords`` ``(N, d)``; ``recompute`` see
    :func:`adapt_latents`; ``latents`` ``(B, P)``: start the inner loop there instead of at zero.
    """
    values = signals_to_values(signals)
    fast = fast_path(execution, net, coords, values)
    if fast is not None:
        return fast.meta_losses(net, coords, values, subsets, net.inner_learning_rate(inner_lr), first_order,
                                recompute=recompute, latents=latents)
    phi, inner = adapt_latents(net, coords, values, subsets, inner_lr, create_graph=not first_order,
                               latents=latents, execution=execution)
    return per_signal_mse(net(coords, phi), values), inner


def accumulate_meta_gradient(net: ModulatedSiren, coords: torch.Tensor, signals: torch.Tensor,
                             subsets: Sequence[torch.Tensor | None], inner_lr: float, *, first_order: bool,
                             loss_scale: float, micro_batch_size: int | None = None,
                             recompute: bool = False, execution: Execution | None = None) -> MetaStats:
    """Add ``loss_scale * grad_theta sum_b L_outer,b`` to ``.grad`` of the network's parameters.

    The batch is processed ``micro_batch_size`` signals at a time; because each signal's inner
    loop only involves its own latent and the context subsets are fixed for the whole step, the
    accumulated gradient equals the full-batch gradient (up to float summation order). With
    ``loss_scale = 1 / global_batch`` the result is the gradient of the mean outer loss. Where the
    backend shares the first inner step of the micro-batches (``FusedBackend.shares_first_step``), it
    runs once for the whole batch (:func:`_accumulate_from_one_first_step`).
    """
    b = signals.shape[0]
    step = b if not micro_batch_size else micro_batch_size
    fast = fast_path(execution, net, coords, signals)
    if fast is not None and fast.shares_first_step(net, b, step, first_order, len(subsets)):
        return _accumulate_from_one_first_step(fast, net, coords, signals, subsets, inner_lr, loss_scale, step,
                                               recompute, execution)
    stats = MetaStats()
    for start in range(0, b, step):
        part = signals[start:start + step]
        outer, inner = meta_losses(net, coords, part, subsets, inner_lr, first_order, recompute=recompute,
                                   execution=execution)
        (outer.sum() * loss_scale).backward()
        stats.add(outer.detach(), inner)
    return stats


def _accumulate_from_one_first_step(fast: FusedBackend, net: ModulatedSiren, coords: torch.Tensor,
                                    signals: torch.Tensor, subsets: Sequence[torch.Tensor | None], inner_lr: float,
                                    loss_scale: float, step: int, recompute: bool,
                                    execution: Execution | None) -> MetaStats:
    """:func:`accumulate_meta_gradient` with the first inner step run once for the whole batch: the
    micro-batches start from their rows of ``phi_1`` and return their adjoints, which go through
    the first step's reverse once at the end (the same gradient, another order of additions)."""
    b = signals.shape[0]
    values = signals_to_values(signals)
    c, v, _ = _subset(coords, values, None, subsets[0])
    phi1, loss1 = fast.batch_first_step(net, c, v, net.inner_learning_rate(inner_lr))
    phi1bar = torch.zeros_like(phi1)
    stats = MetaStats()
    for start in range(0, b, step):
        rows = slice(start, start + step)
        start_latents = phi1[rows].detach().requires_grad_(True)
        outer, inner = meta_losses(net, coords, signals[rows], subsets[1:], inner_lr, recompute=recompute,
                                   latents=start_latents, execution=execution)
        (outer.sum() * loss_scale).backward()
        phi1bar[rows] = start_latents.grad
        stats.add(outer.detach(), inner if len(subsets) > 1 else loss1[rows].detach())
    phi1.backward(phi1bar)
    return stats
