"""Downstream tasks on latent vectors: classify, segment, generate, explain, and the pixel baselines.

Each task is a subpackage with its own public functions; importing this package imports none of them.
"""
