"""Attributions with captum, in chunks: one entry point for latent and signal space.

``attribute(fn, x, targets, method)`` explains ``fn(x)[:, target]`` for inputs ``x`` ``(n, *shape)``
(latents ``(n, P)`` or signals ``(n, C, *spatial)``) and returns attributions of the same shape:

* ``ig``: :class:`captum.attr.IntegratedGradients` from a per-input ``baselines`` tensor (Gauss-Legendre
  rule, ``n_steps`` points); the completeness gap ``sum(attr) - (f(x) - f(baseline))`` is returned;
* ``saliency``: :class:`captum.attr.Saliency`, the absolute gradient;
* ``gradshap``: :class:`captum.attr.GradientShap` (expected gradients) over a distribution of
  ``reference`` inputs ``(R, *shape)`` with ``n_samples`` draws per input;
* ``occlusion``: :class:`captum.attr.Occlusion`, sliding a ``window`` over the input and replacing it
  by the baseline; it needs no gradients, so it works with every classifier.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from funcml.progress import progress_bar

from funcml.errors import ConfigError

METHODS = ("ig", "saliency", "gradshap", "occlusion")
GRADIENT_METHODS = ("ig", "saliency", "gradshap")


def check_method(method: str, differentiable: bool, kind: str = "this classifier") -> None:
    """Raise :class:`ConfigError` for an unknown method or a gradient method without gradients."""
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    if method in GRADIENT_METHODS and not differentiable:
        raise ConfigError(f"--method {method} needs gradients, but {kind} is not differentiable "
                          f"(k-NN, XGBoost and GNN classifiers are not); use --method occlusion")


def auto_window(spatial: Sequence[int]) -> tuple[int, ...]:
    """Occlusion window per axis: about 1/8 of each side in 1D and 2D, 1/4 in 3D (at least 1)."""
    parts = 4 if len(spatial) == 3 else 8
    return tuple(max(1, math.ceil(int(s) / parts)) for s in spatial)


def _occlusion_window(shape: tuple[int, ...], window: Sequence[int] | None,
                      stride: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Occlusion window and stride over inputs of ``shape`` (signals: the channel axis whole)."""
    if len(shape) == 1:
        win = tuple(window or (1,))
        step = tuple(stride or win)
    else:
        win = (shape[0], *(window or auto_window(shape[1:])))
        step = (shape[0], *(stride or win[1:]))
    if len(win) != len(shape) or len(step) != len(shape):
        raise ConfigError(f"occlusion window {tuple(window or ())} does not fit inputs of shape {shape}")
    return win, step


def attribute(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, targets: torch.Tensor, method: str, *,
              baselines: torch.Tensor | None = None, reference: torch.Tensor | None = None, n_steps: int = 16,
              n_samples: int = 8, window: Sequence[int] | None = None, stride: Sequence[int] | None = None,
              batch_size: int = 64, seed: int = 0, progress: bool = False, desc: str = "attribute"
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Attributions ``(n, *shape)`` of ``fn(x)[i, targets[i]]`` and, for ``ig``, the completeness gaps ``(n,)``.

    Args:
        fn: ``(B, *shape) -> (B, K)`` scores.
        x: inputs ``(n, *shape)``; targets: ``(n,)`` output columns.
        baselines: ``(n, *shape)`` reference inputs of ``ig`` and ``occlusion`` (default zeros).
        reference: ``(R, *shape)`` reference distribution of ``gradshap`` (default: the baselines).
        window, stride: occlusion window and stride over the axes after the first (signals: the
            channel axis is occluded whole); latents default to single dimensions.
        batch_size: inputs per captum call (bounds memory when ``fn`` runs an encoder).
    """
    from captum.attr import GradientShap, IntegratedGradients, Occlusion, Saliency

    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    n = len(x)
    if baselines is None:
        baselines = torch.zeros_like(x)
    targets = torch.as_tensor(targets, dtype=torch.long)
    out = torch.zeros_like(x)
    gaps = torch.zeros(n, dtype=x.dtype) if method == "ig" else None
    shape = tuple(x.shape[1:])
    if method == "occlusion":
        win, step = _occlusion_window(shape, window, stride)
    latent = len(shape) == 1
    bs = max(1, int(batch_size))
    if method == "gradshap" and not latent:  # captum runs n_samples copies of each input at once
        bs = max(1, bs // max(1, int(n_samples)))
    chunks = range(0, n, bs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for start in progress_bar(chunks, desc=desc, disable=not progress or len(chunks) < 2, leave=False):
            sl = slice(start, start + bs)
            xi, ti, bi = x[sl], targets[sl], baselines[sl]
            if method == "ig":
                internal = bs * max(1, int(n_steps)) if latent else bs
                a, delta = IntegratedGradients(fn).attribute(xi, baselines=bi, target=ti, n_steps=int(n_steps),
                                                             internal_batch_size=internal, return_convergence_delta=True)
                gaps[sl] = delta.detach().to(gaps.dtype)
            elif method == "saliency":
                a = Saliency(fn).attribute(xi.clone().requires_grad_(True), target=ti, abs=True)
            elif method == "gradshap":
                ref = reference if reference is not None else baselines
                a = GradientShap(fn).attribute(xi, baselines=ref, target=ti, n_samples=int(n_samples), stdevs=0.0)
            else:
                per_eval = max(1, (4096 if latent else int(batch_size)) // len(xi))
                with torch.no_grad():
                    a = Occlusion(fn).attribute(xi, sliding_window_shapes=win, strides=step, baselines=bi, target=ti,
                                                perturbations_per_eval=per_eval)
            out[sl] = a.detach().to(out.dtype)
    return out, gaps
