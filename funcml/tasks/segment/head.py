"""The segmentation head: class logits at a coordinate x from a frozen field's features and latent.

For a coordinate ``x`` and latent ``phi`` the head reads (``inputs``):

* ``features``: the shared network's hidden states at ``x`` under ``phi`` (the last one, or all
  sine layers concatenated) and the field's value ``f(x; phi)``;
* ``latent``: a Fourier encoding of ``x`` and a linear projection of ``phi``;
* ``both``: all of the above.

With ``context`` radii the features are also read at ``x`` plus/minus each radius along every axis
(radii in units of the field's sample spacing), each projected to ``context_proj`` numbers by one
shared linear map: a small receptive field made of queries. The head then maps its inputs through a small MLP to ``K`` logits. The field network is never updated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError

INPUTS = ("features", "latent", "both")
FEATURE_LAYERS = ("last", "all")


@dataclass(frozen=True)
class HeadConfig:
    """Architecture of a segmentation head.

    Attributes:
        n_classes: K (class 0 is background for binary data).
        inputs: ``features``, ``latent`` or ``both`` (see the module docstring).
        feature_layers: ``last`` hidden state or ``all`` sine layers' states.
        hidden, layers: MLP width and number of hidden layers.
        frequencies: octaves of the coordinate's Fourier encoding (``latent``/``both``).
        latent_proj: width of the latent projection (``latent``/``both``).
        context: radii (in field samples) of extra feature queries around ``x`` (empty: none).
        context_proj: width each queried feature vector is projected to when ``context`` is set.
    """

    n_classes: int
    inputs: str = "both"
    feature_layers: str = "all"
    hidden: int = 128
    layers: int = 2
    frequencies: int = 6
    latent_proj: int = 64
    context: tuple[float, ...] = ()
    context_proj: int = 32

    def validate(self) -> "HeadConfig":
        if self.n_classes < 2:
            raise ConfigError(f"a segmentation head needs at least 2 classes; got {self.n_classes}")
        if self.inputs not in INPUTS:
            raise ConfigError(f"--inputs must be one of {INPUTS}; got {self.inputs!r}")
        if self.feature_layers not in FEATURE_LAYERS:
            raise ConfigError(f"--feature-layers must be one of {FEATURE_LAYERS}; got {self.feature_layers!r}")
        if self.hidden < 1 or self.layers < 0 or self.frequencies < 0 or self.latent_proj < 1 or self.context_proj < 1:
            raise ConfigError("head sizes must be positive (--hidden, --layers, --frequencies)")
        if any(not r > 0 for r in self.context):
            raise ConfigError(f"--context radii must be positive; got {list(self.context)}")
        if self.context and self.inputs == "latent":
            raise ConfigError("--context queries features; use --inputs features or both")
        return self


def hidden_states(net: ModulatedSiren, coords: torch.Tensor, latents: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream after every sine layer: K-1 tensors ``(B, N, L)`` (the last is ``net.features``)."""
    s = net.shifts(latents)
    h = net.first(coords)
    if h.dim() == 2:
        h = h.unsqueeze(0)
    x = torch.sin(net.omegas[0] * (h + s[:, 0]))
    states = [x]
    for k, layer in enumerate(net.hidden, start=1):
        x = x + torch.sin(net.omegas[k] * (layer(x) + s[:, k]))
        states.append(x)
    return states


def field_features(net: ModulatedSiren, coords: torch.Tensor, latents: torch.Tensor, layers: str = "all") -> torch.Tensor:
    """Frozen-field features at ``coords`` ``(N, d)``: ``(B, N, F)`` = hidden state(s) and field value."""
    with torch.no_grad():
        states = hidden_states(net, coords, latents)
        value = net.out(states[-1]) + 0.5
        parts = states if layers == "all" else states[-1:]
        return torch.cat([*parts, value], dim=-1)


def feature_dim(net: ModulatedSiren, layers: str) -> int:
    n = net.num_sine_layers if layers == "all" else 1
    return n * net.config.width + net.config.channels


def context_offsets(radii: tuple[float, ...], spacing: torch.Tensor) -> torch.Tensor:
    """Offsets ``(J, d)``: zero, then +/- each radius along each axis (``spacing`` ``(d,)`` per field sample)."""
    d = spacing.shape[0]
    offs = [torch.zeros(d)]
    for r in radii:
        for axis in range(d):
            for sign in (1.0, -1.0):
                o = torch.zeros(d)
                o[axis] = sign * r * float(spacing[axis])
                offs.append(o)
    return torch.stack(offs)


def context_features(net: ModulatedSiren, coords: torch.Tensor, latents: torch.Tensor, offsets: torch.Tensor,
                     layers: str) -> torch.Tensor:
    """Features at every ``coords + offset``: ``(B, N, J, F)``."""
    n, d = coords.shape
    j = offsets.shape[0]
    q = (coords[:, None, :] + offsets.to(coords)[None]).reshape(n * j, d)
    f = field_features(net, q, latents, layers)
    return f.reshape(latents.shape[0], n, j, f.shape[-1])


def fourier_encoding(coords: torch.Tensor, frequencies: int) -> torch.Tensor:
    """``(..., d)`` -> ``(..., d (1 + 2F))``: the coordinate and sin/cos at 2^0..2^(F-1) pi."""
    if frequencies == 0:
        return coords
    freqs = (2.0 ** torch.arange(frequencies, device=coords.device, dtype=coords.dtype)) * math.pi
    ang = coords.unsqueeze(-1) * freqs
    return torch.cat([coords, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)


class SegmentationHead(nn.Module):
    """Logits ``(B, N, K)`` from ``(features (B, N, F) or (B, N, J, F) with context, or None;
    latents (B, P); coords (N, d))``."""

    def __init__(self, config: HeadConfig, *, dim_in: int, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.config = config.validate()
        c = config
        self.use_features = c.inputs in ("features", "both")
        self.use_latent = c.inputs in ("latent", "both")
        width = 0
        if self.use_features and c.context:
            self.context_proj = nn.Linear(feature_dim, c.context_proj)
            width += c.context_proj * (1 + 2 * dim_in * len(c.context))
        elif self.use_features:
            width += feature_dim
        if self.use_latent:
            self.latent_proj = nn.Linear(latent_dim, c.latent_proj)
            width += c.latent_proj + dim_in * (1 + 2 * c.frequencies)
        layers: list[nn.Module] = [nn.LayerNorm(width)]
        for _ in range(c.layers):
            layers += [nn.Linear(width, c.hidden), nn.GELU()]
            width = c.hidden
        layers.append(nn.Linear(width, c.n_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor | None, latents: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        b = latents.shape[0]
        n = coords.shape[-2]
        parts = []
        if self.use_features:
            if self.config.context:
                features = self.context_proj(features).flatten(-2)
            parts.append(features)
        if self.use_latent:
            pe = fourier_encoding(coords, self.config.frequencies)
            pe = pe.expand(b, n, pe.shape[-1]) if pe.dim() == 2 else pe
            z = self.latent_proj(latents).unsqueeze(1).expand(b, n, self.config.latent_proj)
            parts += [pe, z]
        return self.mlp(torch.cat(parts, dim=-1))
