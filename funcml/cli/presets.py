"""``funcml presets``: list the named configurations."""

from __future__ import annotations

import dataclasses

import click

from funcml.cli.common import emit_json, json_option


@click.command("presets")
@json_option
def presets_command(as_json):
    """List presets: the paper's GPU settings and the CPU ones, with their default time budgets."""
    from funcml.encoders.presets import list_presets

    presets = list_presets()
    if as_json:
        emit_json({p.name: {"description": p.description, "dim": p.dim, "resolution": p.resolution,
                            "gpu": p.gpu, "minutes": p.minutes, "arch": p.arch, "train": dataclasses.asdict(p.train)}
                   for p in presets})
        return
    click.echo(f"{'preset':<12} {'for':<4} {'budget':>7}  description")
    for p in presets:
        click.echo(f"{p.name:<12} {'GPU' if p.gpu else 'CPU':<4} {p.minutes:>4g} min  {p.description}")
    click.echo("budget: what `funcml train` without --steps trains for (override with --max-minutes)")


def register(cli: click.Group) -> None:
    cli.add_command(presets_command)
