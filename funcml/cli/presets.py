"""``funcml presets``: list the named configurations."""

from __future__ import annotations

import dataclasses

import click

from funcml.cli.common import emit_json, json_option


@click.command("presets")
@json_option
def presets_command(as_json):
    """List presets: the paper's GPU settings and the CPU ones."""
    from funcml.encoders.presets import list_presets

    presets = list_presets()
    if as_json:
        emit_json({p.name: {"description": p.description, "dim": p.dim, "resolution": p.resolution,
                            "gpu": p.gpu, "arch": p.arch, "train": dataclasses.asdict(p.train)} for p in presets})
        return
    for p in presets:
        click.echo(f"{p.name:<12} {'GPU' if p.gpu else 'CPU'}  {p.description}")


def register(cli: click.Group) -> None:
    cli.add_command(presets_command)
