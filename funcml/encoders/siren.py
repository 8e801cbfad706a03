"""Latent-modulated SIREN with an omega-schedule (MedFuncta).

    x_1 = sin(omega_1 (W_1 c + b_1 + s_1))
    x_k = x_{k-1} + sin(omega_k (W_k x_{k-1} + b_k + s_k))      k = 2 .. K-1   (residual skips)
    f(c; phi) = W_K x_{K-1} + b_K + 0.5
    [s_1, ..., s_{K-1}] = A phi + a                                  (one linear map for all shifts)

The network is a function of its weights theta (module parameters), the latents phi and the
coordinates c; it keeps no per-signal state, so the inner loop can differentiate with respect
to phi directly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from funcml.encoders.config import FieldConfig


def omega_schedule(depth: int, omega_first: float, omega_last: float) -> list[float]:
    """omega_k for k = 1..depth, linear from ``omega_first`` to ``omega_last`` (output layer last)."""
    if depth == 1:
        return [float(omega_first)]
    step = (omega_last - omega_first) / (depth - 1)
    return [float(omega_first + k * step) for k in range(depth)]


def siren_init_(layer: nn.Linear, omega: float, is_first: bool) -> None:
    """SIREN initialisation: U(-1/n, 1/n) for the first layer, U(-sqrt(6/n)/omega, ...) after it
    (n = fan-in), for weights and biases, with each layer's own omega."""
    fan_in = layer.weight.shape[1]
    bound = 1.0 / fan_in if is_first else math.sqrt(6.0 / fan_in) / omega
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound)
        layer.bias.uniform_(-bound, bound)


class ModulatedSiren(nn.Module):
    """Shared network theta; ``forward(coords, latents)`` evaluates every signal's field.

    Shapes: coords ``(N, d)`` (one grid for the batch) or ``(B, N, d)``; latents ``(B, P)``;
    output ``(B, N, C)``.
    """

    def __init__(self, config: FieldConfig, inner_lr: float = 1e-2) -> None:
        super().__init__()
        self.config = config.validate()
        c = config
        self.omegas = omega_schedule(c.depth, c.omega_first, c.omega_last)
        self.first = nn.Linear(c.dim_in, c.width)
        self.hidden = nn.ModuleList(nn.Linear(c.width, c.width) for _ in range(c.depth - 2))
        self.out = nn.Linear(c.width, c.channels)
        # One map from phi to the shifts of all K-1 sine layers (rows k*L:(k+1)*L for layer k+1).
        self.shift = nn.Linear(c.latent_dim, (c.depth - 1) * c.width)
        if c.meta_sgd:
            self.inner_lr = nn.Parameter(torch.full((c.latent_dim,), float(inner_lr)))
        else:
            self.register_parameter("inner_lr", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        siren_init_(self.first, self.omegas[0], is_first=True)
        for k, layer in enumerate(self.hidden, start=1):
            siren_init_(layer, self.omegas[k], is_first=False)
        siren_init_(self.out, self.omegas[-1], is_first=False)
        # PyTorch's default Linear init (U(-1/sqrt(P), 1/sqrt(P))), as for per-layer shift maps.
        bound = 1.0 / math.sqrt(self.config.latent_dim)
        with torch.no_grad():
            self.shift.weight.uniform_(-bound, bound)
            self.shift.bias.uniform_(-bound, bound)

    @property
    def num_sine_layers(self) -> int:
        return self.config.depth - 1

    def shifts(self, latents: torch.Tensor) -> torch.Tensor:
        """``(B, P)`` -> shift modulations ``(B, K-1, 1, L)`` (broadcast over coordinates)."""
        b = latents.shape[0]
        return self.shift(latents).view(b, self.num_sine_layers, 1, self.config.width)

    def features(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """Last hidden features ``(B, N, L)`` at ``coords`` (used by heads that query the field)."""
        s = self.shifts(latents)
        h = self.first(coords)
        if h.dim() == 2:
            h = h.unsqueeze(0)
        x = torch.sin(self.omegas[0] * (h + s[:, 0]))
        for k, layer in enumerate(self.hidden, start=1):
            x = x + torch.sin(self.omegas[k] * (layer(x) + s[:, k]))
        return x

    def forward(self, coords: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(coords, latents)) + 0.5

    def inner_learning_rate(self, default: float) -> torch.Tensor | float:
        """The inner-loop step size: learnt per-dimension rates (``(P,)``, kept >= 0) with meta-SGD,
        else ``default``."""
        if self.inner_lr is None:
            return default
        return F.relu(self.inner_lr)
