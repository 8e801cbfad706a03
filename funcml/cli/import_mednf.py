"""``funcml import-mednf``: turn a MedNF release folder into a latent set."""

from __future__ import annotations

import click

from funcml.cli.common import FiniteFloatRange, emit_json, info, json_option, overwrite_option, parse_resolution


@click.command("import-mednf")
@click.argument("directory", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output latent-set directory.")
@click.option("--task", type=click.Choice(["binary-class", "multi-class", "multi-label, binary-class",
                                           "ordinal-regression", "none"]), default=None,
              help="Task type (default: inferred from the labels).")
@click.option("--w0", type=FiniteFloatRange(min=0, min_open=True), default=None, help="Official w0 of model.pt (default: the official config's).")
@click.option("--w0-increment", type=FiniteFloatRange(), default=None, help="Official w0_increment of model.pt.")
@click.option("--resolution", default=None, help="Signal size model.pt was trained on (default: official config's).")
@overwrite_option
@json_option
def import_mednf_command(directory, out, task, w0, w0_increment, resolution, overwrite, as_json):
    """Import DIRECTORY ({train,val,test}/datapoint_*.pt [+ model.pt]) as a latent set.

    Files are read with torch.load(weights_only=True): no code is unpickled. A model.pt is
    converted to a funcml model and embedded, so the latents can be decoded.
    """
    from funcml.latents.mednf import import_mednf

    ls = import_mednf(directory, out, task=task, w0=w0, w0_increment=w0_increment,
                      signal_shape=parse_resolution(resolution), overwrite=overwrite)
    info(f"imported {len(ls)} latents of dimension {ls.latent_dim} ({ls.manifest['splits']}), "
         f"model {'embedded' if ls.model_id else 'absent'} -> {out}")
    if as_json:
        emit_json(ls.describe())


def register(cli: click.Group) -> None:
    cli.add_command(import_mednf_command)
