"""Noising processes over latent vectors: a denoising diffusion model and flow matching.

Both train a network ``f(x_t, t, y)`` with a mean-squared error on a target, and sample by
integrating from pure noise at ``t = 1`` to data at ``t = 0``; ``x`` is ``(B, P)`` throughout.

* :class:`Diffusion`: variance-preserving, cosine schedule ``alpha_t = cos(pi t / 2)``,
  ``sigma_t = sin(pi t / 2)``, ``x_t = alpha_t x_0 + sigma_t eps``; the network predicts
  ``v = alpha_t eps - sigma_t x_0`` (Salimans & Ho 2022); sampling with DDIM (Song et al. 2021),
  ``eta = 0`` deterministic, ``eta = 1`` ancestral (DDPM-like).
* :class:`FlowMatching`: the straight (rectified-flow / conditional-OT) path
  ``x_t = (1 - t) x_0 + t eps`` (Lipman et al. 2023; Liu et al. 2023); the network predicts the
  velocity ``u = eps - x_0``; sampling with Heun's second-order method.

``sample`` takes ``fn(x, t) -> prediction`` (the generator passes the guided prediction), the
initial noise and a CPU generator for any fresh noise, so sampling is reproducible from a seed.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

PredictFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def time_grid(steps: int) -> torch.Tensor:
    """``steps + 1`` evenly spaced times from 1 (noise) to 0 (data), float64."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


class Diffusion:
    """VP diffusion with a cosine schedule, v-prediction and a DDIM sampler."""

    name = "diffusion"

    def __init__(self, eta: float = 0.0) -> None:
        self.eta = float(eta)

    @staticmethod
    def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)

    def training_pair(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, target)`` for data ``x0`` ``(B, P)``, times ``t`` ``(B,)`` and noise ``eps``."""
        a, s = (v[:, None] for v in self.alpha_sigma(t))
        return a * x0 + s * eps, a * eps - s * x0

    def _split(self, fn: PredictFn, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted ``(x_0, eps)`` at time ``t`` from the v-prediction."""
        a, s = (float(v) for v in self.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
        v = fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))
        return a * x - s * v, s * x + a * v

    @torch.no_grad()
    def sample(self, fn: PredictFn, noise: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        """DDIM from ``t = 1`` to 0. With ``eta = 0`` the interior steps get Heun's correction
        (second order in ``sigma_t / alpha_t``, as in Karras et al. 2022); the first step (from pure
        noise) and the last (to the data) are plain DDIM steps."""
        x = noise
        times = time_grid(steps)
        for i in range(steps):
            t, s = float(times[i]), float(times[i + 1])
            a_t, s_t = (float(v) for v in self.alpha_sigma(torch.tensor(t, dtype=torch.float64)))
            a_s, s_s = (float(v) for v in self.alpha_sigma(torch.tensor(s, dtype=torch.float64)))
            x0, eps = self._split(fn, x, t)
            if i == steps - 1:
                return x0
            if self.eta > 0:
                c = self.eta * (s_s / s_t) * math.sqrt(max(0.0, 1.0 - (a_t / a_s) ** 2))
                x = a_s * x0 + math.sqrt(max(0.0, s_s ** 2 - c ** 2)) * eps
                x = x + c * torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
                continue
            x_next = a_s * x0 + s_s * eps
            if i > 0:
                _, eps2 = self._split(fn, x_next, s)
                x_next = a_s * (x / a_t + (s_s / a_s - s_t / a_t) * 0.5 * (eps + eps2))
            x = x_next
        return x


class FlowMatching:
    """Flow matching on the straight path from data (t = 0) to noise (t = 1), Heun sampler."""

    name = "flow"

    def training_pair(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tt = t[:, None]
        return (1 - tt) * x0 + tt * eps, eps - x0

    @torch.no_grad()
    def sample(self, fn: PredictFn, noise: torch.Tensor, steps: int, generator: torch.Generator) -> torch.Tensor:
        del generator  # deterministic ODE
        x = noise
        times = time_grid(steps)
        for i in range(steps):
            t, s = float(times[i]), float(times[i + 1])
            dt = s - t
            d1 = fn(x, torch.full((x.shape[0],), t, device=x.device, dtype=x.dtype))
            x_euler = x + dt * d1
            if i == steps - 1:
                return x_euler
            d2 = fn(x_euler, torch.full((x.shape[0],), s, device=x.device, dtype=x.dtype))
            x = x + dt * 0.5 * (d1 + d2)
        return x


def make_process(method: str, eta: float = 0.0) -> Diffusion | FlowMatching:
    """The process named ``method`` (``"flow"`` or ``"diffusion"``)."""
    from funcml.errors import ConfigError
    from funcml.tasks.generate.config import METHODS

    if method not in METHODS:
        raise ConfigError(f"unknown generation method {method!r}; choose one of {sorted(METHODS)}")
    return Diffusion(eta) if method == "diffusion" else FlowMatching()
