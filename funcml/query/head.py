"""The query head: values or class logits at a continuous coordinate x, read from a frozen field.

At a coordinate ``x`` (field coordinates ``(N, d)`` of the grid the signal was encoded on) the head
reads any of (``inputs``):

* ``features``: the shared network's hidden states at ``x`` under ``phi`` (every sine layer, or the
  last) and the field's value ``f(x; phi)``; with ``context`` radii also at ``x`` plus/minus each
  radius (in samples) along every axis, each projected to ``context_proj`` numbers;
* ``latent``: a Fourier encoding of ``x`` and a linear projection of ``phi``;
* ``observed``: the ``k**d`` observed samples nearest to ``x`` (``neighbours = k``): their values,
  whether each is observed, their offsets to ``x`` in samples, and the cell size (the query
  grid's spacing in samples), as in LIIF's local inputs (Chen et al., CVPR 2021), with the
  features of an encoder of the observed grid at the same samples (a stack of convolutions, or a
  U-Net for a context as wide as the signal).

A small MLP maps these to ``out_dim`` numbers: class logits (``output = logits``, segmentation) or
values (``output = values``, super-resolution and imputation), then added to a ``base`` estimate:
``classic`` interpolation of the observed samples (bicubic 2D, trilinear 3D, linear 1D; where
samples are hidden, of the signal inpainted classically first: biharmonic 2D/3D, linear 1D), their
``average`` (Gaussian-weighted over the observed neighbours), the ``field`` value, or ``none``. The
field network is never updated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError
from funcml.networks.unet import UNet
from funcml.query.interpolate import interpolate_at
from funcml.query.neighbours import gather_neighbours, normalized_average

INPUTS = ("features", "latent", "observed")
FEATURE_LAYERS = ("last", "all")
OUTPUTS = ("values", "logits")
BASES = ("none", "classic", "average", "field")
ENCODERS = ("conv", "unet")


def parse_inputs(text: str | tuple[str, ...]) -> tuple[str, ...]:
    """``"features,observed"`` -> ``("features", "observed")`` (``both`` = features and latent), in canonical order."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names = set()
    for p in (p.strip() for p in parts):
        names |= {"features", "latent"} if p == "both" else {p}
    unknown = names - set(INPUTS)
    if unknown or not names:
        raise ConfigError(f"--inputs takes a comma list of {INPUTS} (or both); got {text!r}")
    return tuple(i for i in INPUTS if i in names)


@dataclass(frozen=True)
class QueryHeadConfig:
    """Architecture of a query head.

    Attributes:
        out_dim: number of outputs: classes (``logits``) or signal channels (``values``).
        output: ``values`` or ``logits``. inputs: subset of :data:`INPUTS` (see the module docstring).
        channels: channels of the observed signal (``observed``).
        neighbours: k, observed samples per axis around x (``observed``).
        encoder: the encoder of the observed grid (values and observed flags) whose features are read
            at the k**d neighbours with the raw values (LIIF's encoder): ``conv``, ``encoder_depth``
            convolutions of 3 samples per axis and ``encoder_width`` channels; ``unet``, a U-Net
            (:class:`funcml.networks.unet.UNet`) of ``encoder_depth`` levels, ``encoder_width``
            channels at full resolution (doubling per level) and as many output features.
            Depth 0: raw values only.
        encoder_width, encoder_depth: see ``encoder``.
        encoder_dilation: growth of the ``conv`` encoder's dilation per layer (1: none; 2: 1, 2, 4,
            ... samples, a receptive field of about 2**depth samples at the same cost).
        base: what ``values`` are a residual over (:data:`BASES`).
        feature_layers: ``last`` hidden state or ``all`` sine layers' states.
        feature_proj: width the field's features are projected to before the MLP (0: none).
        hidden, layers: MLP width and number of hidden layers.
        frequencies, latent_proj: Fourier octaves of x and width of the latent projection (``latent``).
        context, context_proj: radii (in samples) of extra feature queries and their projection width.
    """

    out_dim: int
    output: str = "values"
    inputs: tuple[str, ...] = ("features", "latent", "observed")
    channels: int = 1
    neighbours: int = 4
    encoder_width: int = 64
    encoder_depth: int = 3
    encoder: str = "conv"
    encoder_dilation: int = 1
    base: str = "none"
    feature_layers: str = "all"
    feature_proj: int = 0
    hidden: int = 256
    layers: int = 3
    frequencies: int = 6
    latent_proj: int = 64
    context: tuple[float, ...] = ()
    context_proj: int = 32

    def validate(self) -> "QueryHeadConfig":
        parse_inputs(self.inputs)
        if self.output not in OUTPUTS:
            raise ConfigError(f"head output must be one of {OUTPUTS}; got {self.output!r}")
        if self.output == "logits" and self.out_dim < 2:
            raise ConfigError(f"a segmentation head needs at least 2 classes; got {self.out_dim}")
        if self.out_dim < 1 or self.channels < 1:
            raise ConfigError("head outputs and channels must be >= 1")
        if self.feature_layers not in FEATURE_LAYERS:
            raise ConfigError(f"--feature-layers must be one of {FEATURE_LAYERS}; got {self.feature_layers!r}")
        if self.base not in BASES or (self.output == "logits" and self.base != "none"):
            raise ConfigError(f"--base must be one of {BASES} (none for logits); got {self.base!r}")
        if self.base in ("classic", "average") and "observed" not in self.inputs:
            raise ConfigError(f"--base {self.base} interpolates observed samples; add observed to --inputs")
        if self.feature_proj < 0:
            raise ConfigError(f"--feature-proj must be >= 0; got {self.feature_proj}")
        if self.hidden < 1 or self.layers < 0 or self.frequencies < 0 or self.latent_proj < 1 or self.context_proj < 1:
            raise ConfigError("head sizes must be positive (--hidden, --layers, --frequencies)")
        if self.encoder_depth < 0 or (self.encoder_depth and self.encoder_width < 1) or self.encoder_dilation < 1:
            raise ConfigError("--encoder-depth must be >= 0, --encoder-width and --encoder-dilation >= 1")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"--encoder must be one of {ENCODERS}; got {self.encoder!r}")
        if self.encoder == "unet" and self.encoder_dilation != 1:
            raise ConfigError("--encoder-dilation applies to the conv encoder; a U-Net widens its context by levels")
        if "observed" in self.inputs and self.neighbours < 1:
            raise ConfigError(f"--neighbours must be >= 1 when the head reads observed samples; got {self.neighbours}")
        if any(not r > 0 for r in self.context):
            raise ConfigError(f"--context radii must be positive; got {list(self.context)}")
        if self.context and "features" not in self.inputs:
            raise ConfigError("--context queries features; add features to --inputs")
        return self

    @property
    def needs_observed(self) -> bool:
        return "observed" in self.inputs or self.base in ("classic", "average")


# -- what the head reads from the frozen field ---------------------------------------------------
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


def grid_spacing(grid_shape: tuple[int, ...]) -> torch.Tensor:
    """Field-coordinate distance ``(d,)`` between neighbouring samples of a grid."""
    return 2.0 / torch.tensor([max(int(n) - 1, 1) for n in grid_shape], dtype=torch.float32)


@dataclass
class Query:
    """One batch of queries.

    Attributes:
        latents: ``(B, P)`` fitted on ``grid`` (the signals' own grid). coords: ``(N, d)`` field coordinates.
        grid: spatial size the latents were encoded on.
        signals: observed signals ``(B, C, *grid)`` (heads reading ``observed``), else None.
        observed: ``(B, *grid)`` bool mask of observed samples (None: all observed).
        cell: ``(d,)`` spacing of the query grid in samples of ``grid`` (None: 1, the signals' own grid).
        filled: ``(B, C, *grid)`` the signals with hidden samples inpainted (``base = classic`` with masks).
    """

    latents: torch.Tensor
    coords: torch.Tensor
    grid: tuple[int, ...]
    signals: torch.Tensor | None = None
    observed: torch.Tensor | None = None
    cell: torch.Tensor | None = None
    filled: torch.Tensor | None = None
    cache: dict = field(default_factory=dict)

    def select(self, coords: torch.Tensor) -> "Query":
        """The same signals queried at other coordinates (sharing what was computed per signal)."""
        return Query(self.latents, coords, self.grid, self.signals, self.observed, self.cell, self.filled, self.cache)


def _mlp(width: int, hidden: int, layers: int, out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.GELU()]
        width = hidden
    mods.append(nn.Linear(width, out))
    return nn.Sequential(*mods)


def _encoder(dim: int, cin: int, width: int, depth: int, dilation: int = 1) -> nn.Sequential:
    """``depth`` convolutions (3 samples per axis, dilated by ``dilation**i``, replicate padding), GELU between."""
    conv = getattr(nn, f"Conv{dim}d")
    mods: list[nn.Module] = []
    for i in range(depth):
        d = dilation ** i
        mods += [conv(cin if i == 0 else width, width, 3, padding=d, dilation=d, padding_mode="replicate"), nn.GELU()]
    return nn.Sequential(*mods[:-1])


class QueryHead(nn.Module):
    """Outputs ``(B, N, out_dim)`` at ``query.coords`` from ``(net, query)``; ``net`` is the frozen field."""

    def __init__(self, config: QueryHeadConfig, *, dim_in: int, latent_dim: int, feature_dim: int) -> None:
        super().__init__()
        self.config = c = config.validate()
        self.dim_in = dim_in
        width = 0
        if "features" in c.inputs:
            if c.context:
                self.context_proj = nn.Linear(feature_dim, c.context_proj)
                fw = c.context_proj * (1 + 2 * dim_in * len(c.context))
            else:
                fw = feature_dim
            self.feature_norm = nn.LayerNorm(fw)
            if c.feature_proj:
                self.feature_proj = nn.Linear(fw, c.feature_proj)
                fw = c.feature_proj
            width += fw
        if "latent" in c.inputs:
            self.latent_proj = nn.Linear(latent_dim, c.latent_proj)
            self.latent_norm = nn.LayerNorm(c.latent_proj + dim_in * (1 + 2 * c.frequencies))
            width += c.latent_proj + dim_in * (1 + 2 * c.frequencies)
        if "observed" in c.inputs:
            enc = c.encoder_width if c.encoder_depth else 0
            width += c.neighbours ** dim_in * (c.channels + enc + 1 + dim_in) + dim_in
            if c.encoder_depth and c.encoder == "unet":
                self.encoder = UNet(dim_in, c.channels + 1, c.encoder_width, base=c.encoder_width,
                                    depth=c.encoder_depth)
            elif c.encoder_depth:
                self.encoder = _encoder(dim_in, c.channels + 1, c.encoder_width, c.encoder_depth, c.encoder_dilation)
        if c.base != "none":
            width += c.out_dim
        self.mlp = _mlp(width, c.hidden, c.layers, c.out_dim)
        if c.base != "none":  # start as the base estimate
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def _features(self, net: ModulatedSiren, q: Query) -> torch.Tensor:
        c = self.config
        if not c.context:
            return field_features(net, q.coords, q.latents, c.feature_layers)
        offsets = context_offsets(c.context, grid_spacing(q.grid))
        f = context_features(net, q.coords, q.latents, offsets, c.feature_layers)
        return self.context_proj(f).flatten(-2)

    def _encoded(self, q: Query) -> torch.Tensor:
        """The encoder's features of the observed grid ``(B, E, *grid)`` (computed once per query batch)."""
        if "encoded" not in q.cache:
            seen = torch.ones_like(q.signals[:, :1]) if q.observed is None else q.observed.unsqueeze(1).to(q.signals)
            q.cache["encoded"] = self.encoder(torch.cat([q.signals * seen, seen], dim=1))
        return q.cache["encoded"]

    def _observed(self, q: Query, base: torch.Tensor | None) -> torch.Tensor:
        if q.signals is None:
            raise ConfigError("this head reads observed samples: pass the signals the latents were encoded from")
        v, seen, offs = gather_neighbours(q.signals, q.coords, self.config.neighbours, q.observed)
        b, n = v.shape[:2]
        if base is not None:
            v = (v - base.unsqueeze(2)) * seen.unsqueeze(-1)
        parts = [v.flatten(-2)]
        if self.config.encoder_depth:
            parts.append(gather_neighbours(self._encoded(q), q.coords, self.config.neighbours)[0].flatten(-2))
        cell = torch.ones(self.dim_in, device=v.device) if q.cell is None else q.cell.to(v.device)
        parts += [seen, offs.to(v.dtype).expand(b, n, *offs.shape[1:]).flatten(-2),
                  cell.to(v.dtype).expand(b, n, self.dim_in)]
        return torch.cat(parts, dim=-1)

    def base(self, net: ModulatedSiren, q: Query) -> torch.Tensor | None:
        """The estimate the values are a residual over ``(B, N, C)`` (None for ``none``)."""
        kind = self.config.base
        if kind == "none":
            return None
        if kind == "field":
            with torch.no_grad():
                return net(q.coords, q.latents)
        if q.signals is None:
            raise ConfigError(f"--base {kind} needs the observed signals")
        if kind == "classic":
            if q.observed is None:
                return interpolate_at(q.signals, q.coords)
            if q.filled is None:
                raise ConfigError("--base classic with hidden samples needs the inpainted signals (Query.filled)")
            return interpolate_at(q.filled, q.coords)
        v, seen, offs = gather_neighbours(q.signals, q.coords, self.config.neighbours, q.observed)
        return normalized_average(v, seen, offs.to(v.dtype))

    def forward(self, net: ModulatedSiren, q: Query) -> torch.Tensor:
        c = self.config
        b, n = q.latents.shape[0], q.coords.shape[0]
        base = self.base(net, q)
        parts = []
        if "features" in c.inputs:
            f = self.feature_norm(self._features(net, q))
            parts.append(self.feature_proj(f) if c.feature_proj else f)
        if "latent" in c.inputs:
            pe = fourier_encoding(q.coords, c.frequencies).expand(b, n, -1)
            z = self.latent_proj(q.latents).unsqueeze(1).expand(b, n, c.latent_proj)
            parts.append(self.latent_norm(torch.cat([pe, z], dim=-1)))
        if "observed" in c.inputs:
            parts.append(self._observed(q, base))
        if base is not None:
            parts.append(base)
        out = self.mlp(torch.cat(parts, dim=-1))
        return out if base is None else base + out


def build_head(config: QueryHeadConfig, net: ModulatedSiren) -> QueryHead:
    """A head for the frozen field ``net`` (on its device)."""
    head = QueryHead(config, dim_in=net.config.dim_in, latent_dim=net.config.latent_dim,
                     feature_dim=feature_dim(net, config.feature_layers))
    return head.to(next(net.parameters()).device)
