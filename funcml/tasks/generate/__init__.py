"""Generation on latent vectors: diffusion / flow matching over phi, decoded to signals.

Public API:

* :class:`LatentGenerator` (fit / sample / save / load) and the floor :class:`ClassGaussian`;
* :func:`interpolate`, :func:`lerp`, :func:`slerp` (latent interpolation) and :func:`plot_strip`;
* :func:`evaluate_generator` (Fréchet distance, precision/recall, memorisation, CAS) and the
  metric functions in :mod:`funcml.tasks.generate.metrics`.

CLI: ``funcml generate train | sample | interpolate | evaluate``. Importing this package adds the
``generate`` stage to ``funcml demo``.
"""

from funcml.tasks.generate.baselines import ClassGaussian
from funcml.tasks.generate.evaluate import decode_latents, evaluate_generator, plot_comparison
from funcml.tasks.generate.generator import GeneratorConfig, LatentGenerator
from funcml.tasks.generate.interpolate import interpolate, lerp, plot_strip, slerp
from funcml.tasks.generate.metrics import (classification_accuracy_score, frechet_distance, memorisation,
                                           precision_recall)
from funcml.tasks.generate import demo as _demo  # noqa: F401  (registers the demo stage)

__all__ = [
    "ClassGaussian", "GeneratorConfig", "LatentGenerator", "classification_accuracy_score", "decode_latents",
    "evaluate_generator", "frechet_distance", "interpolate", "lerp", "memorisation", "plot_comparison",
    "plot_strip", "precision_recall", "slerp",
]
