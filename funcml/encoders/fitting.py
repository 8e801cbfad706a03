"""Test-time optimisation: fit latents phi to new signals with the shared network frozen.

``fit_latents`` runs H SGD steps on phi from zero. With ``grad_rescale`` (the official
MedFuncta test-time rule) each step moves along the full-context gradient, rescaled per signal
to the norm of the gradient on a random context subset (the kind of gradient seen during
meta-training). Without it, each step uses the subset gradient directly (gamma = 1: full).
"""

from __future__ import annotations

import torch

from funcml.encoders.config import EncodeConfig
from funcml.encoders.coords import make_grid, sample_context, signals_to_values, values_to_signals
from funcml.encoders.dispatch import fast_path
from funcml.encoders.meta import per_signal_mse, psnr_from_mse
from funcml.encoders.siren import ModulatedSiren


def _select(coords, values, weights, idx):
    if idx is None:
        return coords, values, weights
    return coords[idx], values[:, idx], None if weights is None else weights[:, idx]


def _grad(net: ModulatedSiren, coords, values, weights, phi, idx, create_graph: bool) -> torch.Tensor:
    coords, values, weights = _select(coords, values, weights, idx)
    loss = per_signal_mse(net(coords, phi), values, weights)
    (g,) = torch.autograd.grad(loss.sum(), phi, create_graph=create_graph)
    return g


@torch.no_grad()
def _fit_closed_form(net: ModulatedSiren, coords, values, weights, phi, lr, config: EncodeConfig,
                     generator: torch.Generator, from_zero: bool) -> torch.Tensor:
    """:func:`fit_latents` without a graph: closed-form gradients, one full-context pass per step
    gives both gradients of the rescaling rule (see kernels.latent_grads); the first step from phi = 0 is
    shared by the batch (see :func:`fused.latent_grads`)."""
    n = coords.shape[0]
    for step in range(config.steps):
        idx = sample_context(n, config.context_ratio, generator, values.device)
        rescale = config.grad_rescale and idx is not None
        c, v, w = (coords, values, weights) if rescale else _select(coords, values, weights, idx)
        context = idx if rescale else None
        start = None if (step == 0 and from_zero) else phi
        _, g, g_sub = fast_path(config, net, c, v, w).latent_grads(net, c, start, v, w, context=context)
        if rescale:
            g = g * (g_sub.norm(dim=1, keepdim=True) / (g.norm(dim=1, keepdim=True) + 1e-16))
        phi = phi - lr * g
    return phi


def fit_latents(net: ModulatedSiren, signals: torch.Tensor, config: EncodeConfig, *,
                generator: torch.Generator | None = None, weights: torch.Tensor | None = None,
                latents: torch.Tensor | None = None, differentiable: bool = False) -> torch.Tensor:
    """Encode ``signals`` ``(B, C, *spatial)`` (values in [0, 1]) to latents ``(B, P)``.

    Args:
        config: steps H, inner_lr, context_ratio, grad_rescale.
        generator: seeds the context subsets (CPU generator; deterministic encodes).
        weights: optional ``(B, N)`` 0/1 mask of observed coordinates: only those are fitted
            (imputation from partial observations).
        latents: start point (default zeros, as in meta-training).
        differentiable: keep the graph so that the result can be differentiated with respect to
            ``signals`` (e.g. attributions through the encoder); otherwise latents are detached.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    b = signals.shape[0]
    spatial = signals.shape[2:]
    coords = make_grid(spatial, device=signals.device, dtype=signals.dtype)
    values = signals_to_values(signals)
    n = coords.shape[0]
    from_zero = latents is None
    if latents is None:
        latents = torch.zeros(b, net.config.latent_dim, device=signals.device, dtype=signals.dtype)
    lr = net.inner_learning_rate(config.inner_lr)
    if not differentiable:
        lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
    if not differentiable and fast_path(config, net, coords, values, weights) is not None:
        return _fit_closed_form(net, coords, values, weights, latents.detach().clone(), lr, config, generator,
                                from_zero)
    phi = latents.detach().clone().requires_grad_(True) if not differentiable else latents.requires_grad_(True)
    with torch.enable_grad():
        for _ in range(config.steps):
            idx = sample_context(n, config.context_ratio, generator, signals.device)
            if config.grad_rescale and idx is not None:
                g_sub = _grad(net, coords, values, weights, phi, idx, False).detach()
                g = _grad(net, coords, values, weights, phi, None, differentiable)
                scale = g_sub.norm(dim=1, keepdim=True) / (g.detach().norm(dim=1, keepdim=True) + 1e-16)
                step = scale * g
            else:
                step = _grad(net, coords, values, weights, phi, idx, differentiable)
            phi = phi - lr * step
            if not differentiable:
                phi = phi.detach().requires_grad_(True)
    return phi if differentiable else phi.detach()


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
