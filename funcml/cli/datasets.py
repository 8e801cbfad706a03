"""``funcml datasets``: the supported datasets, whether they are here, and ``fetch`` to download them."""

from __future__ import annotations

import click

from funcml.cli.common import emit_json, info, json_option

root_option = click.option(
    "--root", default=None, type=click.Path(file_okay=False),
    help="Data root (default: $FUNCML_DATA, else ~/.funcml/data); MedMNIST files go to ROOT/medmnist/.")


@click.group("datasets", invoke_without_command=True)
@root_option
@json_option
@click.pass_context
def datasets_command(ctx, root, as_json):
    """List the supported datasets: modality, licence, size, how to obtain them and whether they are present
    under the data root (or, for MedMNIST, in the medmnist cache). `funcml datasets fetch NAME` downloads one."""
    if ctx.invoked_subcommand is not None:
        return
    from funcml.data.catalog import data_root, datasets, local_copies

    base = data_root(root)
    rows = [{"name": d.name, "modality": d.modality, "licence": d.licence, "size": d.size, "obtain": d.obtain,
             "fetch": f"funcml datasets fetch {d.name}" if d.fetch else None, "data": d.data_hint,
             "folder": str(base / d.folder) if d.folder and d.fetch != "medmnist" else str(base / "medmnist"),
             "present": local_copies(d, base)} for d in datasets()]
    if as_json:
        emit_json({"root": str(base), "datasets": rows})
        return
    click.echo(f"data root: {base}")
    for row in rows:
        click.echo(f"{row['name']:<16}{row['modality']:<44}{row['licence']:<28}{row['size']}")
        click.echo(f"{'':<16}present: {', '.join(row['present']) or 'no'}")
        click.echo(f"{'':<16}obtain: {row['fetch'] or row['obtain']}" + ("" if row["fetch"] or row["name"] == "demo"
                                                                         else f" -> {row['folder']}"))


@datasets_command.command("fetch")
@click.argument("name")
@root_option
@json_option
def fetch_command(name, root, as_json):
    """Download NAME (MedMNIST: NAME or NAME@SIZE, size 28, 64, 128 or 224; mitdb; mitdb-ds1) into the data
    root. Data already present is not downloaded again; offline, the error says what to put where."""
    from funcml.data.fetch import fetch

    path = fetch(name, root, progress=not as_json)
    info(f"{name}: {path}")
    if as_json:
        emit_json({"name": name, "path": str(path)})


def register(cli: click.Group) -> None:
    cli.add_command(datasets_command)
