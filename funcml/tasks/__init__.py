"""Downstream tasks on latent vectors. Importing this package registers their ``funcml demo`` stages."""

import funcml.tasks.classify.demo  # noqa: F401  (registers the "classification" demo stage)
from funcml.tasks import query  # noqa: F401  (render, superres and impute demo stages)
from funcml.tasks import generate  # noqa: F401
import funcml.tasks.explain.demo  # noqa: F401  (registers the "explanation" demo stage)
