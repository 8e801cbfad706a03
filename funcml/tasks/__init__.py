"""Downstream tasks on latent vectors. Importing this package registers their ``funcml demo`` stages."""

import funcml.tasks.classify.demo  # noqa: F401  (registers the "classification" demo stage)
