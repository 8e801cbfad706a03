"""Downstream-task commands (classify, render, segment, generate, explain ...) register here."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add the task commands that are available (each task module adds its own)."""
    from funcml.cli import baseline, classify, explain, generate, impute, render, segment, superres

    for module in (classify, baseline, render, superres, impute, segment, generate, explain):
        module.register(cli)
