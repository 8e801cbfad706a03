"""Generation on latent vectors: diffusion / flow matching over phi, decoded to signals.

Public API (imported lazily, so that ``import funcml.tasks`` stays light):

* :class:`LatentGenerator` (fit / sample / save / load), :class:`GeneratorConfig` and the floor
  :class:`ClassGaussian`;
* :func:`interpolate`, :func:`lerp`, :func:`slerp` (latent interpolation) and :func:`plot_strip`;
* :func:`evaluate_generator` (Fréchet distance, precision/recall, memorisation, CAS) and the
  metric functions of :mod:`funcml.tasks.generate.metrics`.

CLI: ``funcml generate train | sample | interpolate | evaluate``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ClassGaussian": "baselines", "GeneratorConfig": "config", "LatentGenerator": "generator",
    "classification_accuracy_score": "metrics", "frechet_distance": "metrics", "memorisation": "metrics",
    "precision_recall": "metrics", "decode_latents": "evaluate", "evaluate_generator": "evaluate",
    "plot_comparison": "evaluate", "interpolate": "interpolation", "lerp": "interpolation",
    "slerp": "interpolation", "plot_strip": "interpolation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"funcml.tasks.generate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
