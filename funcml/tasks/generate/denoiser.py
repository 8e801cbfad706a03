"""The denoiser: a residual MLP over latent vectors, conditioned on time and class.

Input ``x`` ``(B, P)`` (normalised latents, noised), time ``t`` ``(B,)`` in [0, 1] and class index
``y`` ``(B,)`` (``n_classes`` is the "no label" token used for classifier-free guidance).
Time goes through sinusoidal features and a small MLP, the class through an embedding; their sum
modulates every residual block (scale and shift after a LayerNorm, as in DiT's adaLN), and the
output layer starts at zero so that the untrained network predicts zero.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def default_hidden(latent_dim: int) -> int:
    """Hidden width sized to the latent dimension: ``clamp(P, 128, 1024)`` rounded up to 64."""
    return int(min(1024, max(128, 64 * math.ceil(latent_dim / 64))))


def timestep_features(t: torch.Tensor, dim: int, max_period: float = 1000.0) -> torch.Tensor:
    """Sinusoidal features ``(B, dim)`` of ``t`` ``(B,)`` in [0, 1] (frequencies 1 .. max_period)."""
    half = dim // 2
    freqs = torch.exp(torch.linspace(0.0, math.log(max_period), half, device=t.device, dtype=t.dtype))
    angles = t[:, None] * freqs[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResidualBlock(nn.Module):
    """``h + W2 dropout(SiLU(W1 (LN(h) (1 + scale) + shift)))`` with (scale, shift) from the condition."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.fc1 = nn.Linear(hidden, 2 * hidden)
        self.fc2 = nn.Linear(2 * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, shift = self.modulation(cond).chunk(2, dim=1)
        z = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(self.dropout(nn.functional.silu(self.fc1(z))))


class ResidualMLPDenoiser(nn.Module):
    """Predicts the diffusion/flow target ``(B, P)`` from ``(x (B, P), t (B,), y (B,) | None)``.

    Args:
        latent_dim: P.
        hidden: width of the residual stream (default :func:`default_hidden`).
        blocks: number of residual blocks.
        n_classes: number of classes (0: unconditional); index ``n_classes`` means "no label".
        dropout: dropout inside the blocks.
        time_features: size of the sinusoidal time features.
    """

    def __init__(self, latent_dim: int, hidden: int | None = None, blocks: int = 4, n_classes: int = 0,
                 dropout: float = 0.0, time_features: int = 128) -> None:
        super().__init__()
        hidden = hidden or default_hidden(latent_dim)
        self.latent_dim, self.hidden, self.n_classes, self.time_features = latent_dim, hidden, n_classes, time_features
        self.inp = nn.Linear(latent_dim, hidden)
        self.time = nn.Sequential(nn.Linear(time_features, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.label = nn.Embedding(n_classes + 1, hidden) if n_classes > 0 else None
        self.blocks = nn.ModuleList(ResidualBlock(hidden, dropout) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, latent_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        cond = self.time(timestep_features(t, self.time_features))
        if self.label is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.n_classes, dtype=torch.long, device=x.device)
            cond = cond + self.label(y)
        cond = nn.functional.silu(cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, cond)
        return self.out(nn.functional.silu(self.out_norm(h)))
