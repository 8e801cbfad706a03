"""Downstream-task commands (classify, render, segment, generate, explain ...) register here."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add the task commands that are available (each task module adds its own)."""
    from funcml.cli import baseline, classify, explain, generate

    for module in (classify, baseline, generate, explain):
        module.register(cli)
