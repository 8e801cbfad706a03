"""Downstream tasks on latent vectors. Importing this package registers their ``funcml demo`` stages
(in this order: classification, render/superres/impute, generation, explanation)."""

import funcml.tasks.classify.demo  # noqa: F401  (the "classification" stage)
from funcml.tasks import query  # noqa: F401  (render, superres and impute stages)
from funcml.tasks import generate  # noqa: F401  (the "generation" stage)
import funcml.tasks.explain.demo  # noqa: F401  (the "explanation" stage; uses the stage-1 classifier)
