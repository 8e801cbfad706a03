"""Downstream-task commands (classify, render, segment, generate, explain ...) register here."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add the task commands that are available (each task module adds its own)."""
    from funcml.cli import classify
    classify.register(cli)
    from funcml.cli import baseline
    baseline.register(cli)
    from funcml.cli import impute, render, segment, superres

    for module in (render, superres, impute, segment):
        module.register(cli)
    from funcml.cli import generate

    generate.register(cli)
    from funcml.cli import explain
    explain.register(cli)
