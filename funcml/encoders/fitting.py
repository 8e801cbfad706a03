"""Test-time optimisation: fit latents phi to new signals with the shared network frozen.

``fit_latents`` runs H SGD steps on phi from zero. With ``grad_rescale`` (the official
MedFuncta test-time rule) each step moves along the full-context gradient, rescaled per signal
to the norm of the gradient on a random context subset (the kind of gradient seen during
meta-training). Without it, each step uses the subset gradient directly (gamma = 1: full).
``EncodeConfig.momentum`` adds heavy-ball momentum to the SGD steps, ``EncodeConfig.optimizer``
"adam" feeds the same directions to Adam instead, and
``auto_stop`` ends each signal's fit when its loss stops improving (H is then the most steps).
"""

from __future__ import annotations

import torch

from funcml.encoders.config import EncodeConfig
from funcml.encoders.coords import make_grid, sample_context, signals_to_values, values_to_signals
from funcml.encoders.dispatch import fast_path
from funcml.encoders.meta import per_signal_mse, psnr_from_mse
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError


def _select(coords, values, weights, idx):
    if idx is None:
        return coords, values, weights
    return coords[idx], values[:, idx], None if weights is None else weights[:, idx]


def _grad(net: ModulatedSiren, coords, values, weights, phi, idx, create_graph: bool):
    coords, values, weights = _select(coords, values, weights, idx)
    loss = per_signal_mse(net(coords, phi), values, weights)
    (g,) = torch.autograd.grad(loss.sum(), phi, create_graph=create_graph)
    return loss.detach(), g


def _rescaled(g: torch.Tensor, g_sub: torch.Tensor) -> torch.Tensor:
    """The official test-time rule: ``g`` with each signal's norm set to that of ``g_sub``."""
    return g * (g_sub.norm(dim=1, keepdim=True) / (g.detach().norm(dim=1, keepdim=True) + 1e-16))


def _direction_closed_form(backend, net: ModulatedSiren, coords, values, weights, phi, idx, rescale: bool,
                           first: bool):
    """``(loss (b,), direction (b, P))`` from ``backend``'s closed-form gradients: one full-context pass
    gives both gradients of the rescaling rule; ``first``: phi is zero, and the step runs on one field
    shared by the batch (see ``FusedBackend.latent_grads``)."""
    c, v, w = (coords, values, weights) if rescale else _select(coords, values, weights, idx)
    loss, g, g_sub = backend.latent_grads(net, c, None if first else phi, v, w, context=idx if rescale else None)
    return loss, (_rescaled(g, g_sub) if rescale else g)


def _direction_autograd(net: ModulatedSiren, coords, values, weights, phi, idx, rescale: bool, create_graph: bool):
    """:func:`_direction_closed_form` through autograd (any network; keeps the graph on request)."""
    if not rescale:
        return _grad(net, coords, values, weights, phi, idx, create_graph)
    _, g_sub = _grad(net, coords, values, weights, phi, idx, False)
    loss, g = _grad(net, coords, values, weights, phi, None, create_graph)
    return loss, _rescaled(g, g_sub.detach())


class _Sgd:
    """phi <- phi - lr v with v <- momentum v + d, per signal (heavy ball; momentum 0: plain SGD).

    ``lr``: a number, or the meta-learnt per-dimension rates ``(P,)``; ``rows``: which signals of the
    batch ``phi`` holds.
    """

    def __init__(self, lr, phi: torch.Tensor, momentum: float = 0.0) -> None:
        self.lr, self.momentum = lr, momentum
        self.v = torch.zeros_like(phi) if momentum else None

    def step(self, phi: torch.Tensor, d: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        if self.v is not None:
            if rows is None:
                self.v = d = self.momentum * self.v + d   # keeps the graph of a differentiable encode
            else:
                d = self.momentum * self.v[rows] + d
                self.v[rows] = d.detach()
        return phi - self.lr * d


class _Adam:
    """Adam on phi, per signal (``rows``: which signals of the batch ``phi`` holds)."""

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, lr: float, phi: torch.Tensor) -> None:
        self.lr = lr
        self.m = torch.zeros_like(phi)
        self.v = torch.zeros_like(phi)
        self.t = torch.zeros(phi.shape[0], 1, dtype=phi.dtype, device=phi.device)

    def step(self, phi: torch.Tensor, d: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
        b1, b2 = self.betas
        sel = slice(None) if rows is None else rows
        m = b1 * self.m[sel] + (1 - b1) * d
        v = b2 * self.v[sel] + (1 - b2) * d * d
        t = self.t[sel] + 1
        self.m[sel], self.v[sel], self.t[sel] = m.detach(), v.detach(), t
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        return phi - self.lr * m_hat / (v_hat.sqrt() + self.eps)


LOSS_FLOOR = 1e-10   # an MSE this small (100 dB) counts as converged: float noise below it is no progress


class _Stopper:
    """``--steps auto``: a signal stops when its loss has not improved on its best by more than
    ``tol`` (relative; and :data:`LOSS_FLOOR`) for ``patience`` steps; it keeps the latent of its best
    loss."""

    def __init__(self, phi: torch.Tensor, tol: float, patience: int) -> None:
        b = phi.shape[0]
        self.tol, self.patience = tol, patience
        self.best = torch.full((b,), float("inf"), dtype=phi.dtype, device=phi.device)
        self.best_phi = phi.detach().clone()
        self.stale = torch.zeros(b, dtype=torch.long, device=phi.device)

    def update(self, rows: torch.Tensor, loss: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """Record the losses of ``phi`` (the signals ``rows``); returns which of them go on."""
        better = loss < self.best[rows] * (1 - self.tol) - LOSS_FLOOR
        improved = loss < self.best[rows]
        self.best_phi[rows[improved]] = phi.detach()[improved]
        self.best[rows] = torch.where(improved, loss, self.best[rows])
        self.stale[rows] = torch.where(better, torch.zeros_like(self.stale[rows]), self.stale[rows] + 1)
        return self.stale[rows] < self.patience


def _fit_loop(direction, phi: torch.Tensor, lr, config: EncodeConfig, generator: torch.Generator,
              n_coords: int, differentiable: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Run up to ``config.steps`` steps; ``direction(phi_rows, rows, idx, step)`` -> ``(loss, d)``.

    Returns the latents and the test-time steps each signal took ``(B,)``. The context subsets are
    drawn at every step whichever signals still run, so a signal's result does not depend on when
    the others stop.
    """
    b = phi.shape[0]
    update = _Adam(config.adam_lr, phi) if config.optimizer == "adam" else _Sgd(lr, phi, config.momentum)
    stopper = _Stopper(phi, config.stop_tol, config.stop_patience) if config.auto_stop else None
    rows = None   # all signals
    taken = torch.zeros(b, dtype=torch.long, device=phi.device)
    for step in range(config.steps):
        idx = sample_context(n_coords, config.context_ratio, generator, phi.device)
        current = phi if rows is None else phi[rows]
        loss, d = direction(current, rows, idx, step)
        if stopper is not None:
            keep = stopper.update(torch.arange(b, device=phi.device) if rows is None else rows, loss, current)
            if not bool(keep.all()):
                rows = (torch.arange(b, device=phi.device) if rows is None else rows)[keep]
                current, d = current[keep], d[keep]
                if rows.numel() == 0:
                    break
        new = update.step(current, d, rows)
        if not differentiable:
            new = new.detach()
        if rows is None:
            phi = new
        else:
            phi = phi.clone() if differentiable else phi
            phi[rows] = new
        taken[slice(None) if rows is None else rows] += 1
    if stopper is not None:
        return _best_of(stopper, phi, rows), taken
    return phi, taken


def _best_of(stopper: _Stopper, phi: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """After an auto-stopped fit: each stopped signal's best latent; those that ran all the steps keep
    their last one (its loss was never measured)."""
    out = stopper.best_phi.clone()
    running = torch.arange(phi.shape[0], device=phi.device) if rows is None else rows
    out[running] = phi[running].detach()
    return out


def fit_latents(net: ModulatedSiren, signals: torch.Tensor, config: EncodeConfig, *,
                generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                latents: torch.Tensor | None = None, differentiable: bool = False) -> torch.Tensor:
    """Encode ``signals`` ``(B, C, *spatial)`` (values in [0, 1]) to latents ``(B, P)``.

    Args:
        config: steps H (with ``auto_stop`` the most), inner_lr, context_ratio, grad_rescale,
            optimizer ("sgd": the inner learning rate or the meta-learnt rates; "adam": ``adam_lr``).
        generator: seeds the context subsets (CPU generator; deterministic encodes).
        weights: optional ``(B, N)`` 0/1 mask of observed coordinates: only those are fitted
            (imputation from partial observations).
        latents: start point (default zeros, as in meta-training).
        differentiable: keep the graph so that the result can be differentiated with respect to
            ``signals`` (e.g. attributions through the encoder); otherwise latents are detached.
    """
    return fit_latents_counted(net, signals, config, generator=generator, weights=weights, latents=latents,
                               differentiable=differentiable)[0]


def fit_latents_counted(net: ModulatedSiren, signals: torch.Tensor, config: EncodeConfig, *,
                        generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                        latents: torch.Tensor | None = None, differentiable: bool = False
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_latents` that also returns the test-time steps each signal took ``(B,)`` (all
    ``config.steps`` unless ``config.auto_stop``)."""
    if differentiable and config.auto_stop:
        raise ConfigError("a differentiable encode runs a fixed number of steps (no auto stop)")
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    b = signals.shape[0]
    coords = make_grid(signals.shape[2:], device=signals.device, dtype=signals.dtype)
    values = signals_to_values(signals)
    from_zero = latents is None
    if latents is None:
        latents = torch.zeros(b, net.config.latent_dim, device=signals.device, dtype=signals.dtype)
    lr = net.inner_learning_rate(config.inner_lr)
    if not differentiable:
        lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
    backend = None if differentiable else fast_path(config, net, coords, values, weights)
    closed = backend is not None

    def direction(phi, rows, idx, step):
        v, w = (values, weights) if rows is None else (values[rows], None if weights is None else weights[rows])
        rescale = config.grad_rescale and idx is not None
        if closed:
            return _direction_closed_form(backend, net, coords, v, w, phi, idx, rescale, step == 0 and from_zero)
        with torch.enable_grad():
            start = phi if differentiable else phi.detach().requires_grad_(True)
            return _direction_autograd(net, coords, v, w, start, idx, rescale, differentiable)

    phi = latents.detach().clone() if not differentiable else latents.requires_grad_(True)
    if closed:
        with torch.no_grad():
            return _fit_loop(direction, phi, lr, config, generator, coords.shape[0])
    phi, taken = _fit_loop(direction, phi, lr, config, generator, coords.shape[0], differentiable)
    return (phi if differentiable else phi.detach()), taken


def decode(net: ModulatedSiren, latents: torch.Tensor, spatial: tuple[int, ...] | None = None, *,
           coords: torch.Tensor | None = None, chunk_coords: int = 1 << 16, clamp: bool = True) -> torch.Tensor:
    """Evaluate fields on a grid: ``(B, P)`` -> ``(B, C, *spatial)``.

    ``coords`` ``(N, d)`` overrides the default [-1, 1] grid (e.g. a zoomed window); then
    ``spatial`` must still give the output shape. Coordinates are processed ``chunk_coords`` at a
    time so that large grids (3D at high resolution) need bounded memory.
    """
    if coords is None:
        if spatial is None:
            raise ValueError("decode needs spatial or coords")
        coords = make_grid(spatial, device=latents.device, dtype=latents.dtype)
    with torch.no_grad():
        parts = [net(coords[i:i + chunk_coords], latents) for i in range(0, coords.shape[0], chunk_coords)]
        out = torch.cat(parts, dim=1)
    if clamp:
        out = out.clamp_(0.0, 1.0)
    return values_to_signals(out, spatial)


def reconstruction_psnr(net: ModulatedSiren, latents: torch.Tensor, signals: torch.Tensor) -> torch.Tensor:
    """Per-signal PSNR ``(B,)`` of the clamped reconstruction on the signals' own grid."""
    recon = decode(net, latents, tuple(signals.shape[2:]))
    mse = (recon - signals).pow(2).flatten(1).mean(dim=1)
    return psnr_from_mse(mse)
