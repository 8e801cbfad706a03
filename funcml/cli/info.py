"""``funcml info``: describe a model directory, latent set or DATA argument."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import emit_json, json_option


def describe_path(path: str) -> dict:
    """What PATH is, with its key facts (latent sets are verified and their latent checksum recomputed)."""
    from funcml.encoders.model import CONFIG_FILE, read_model_config
    from funcml.latents.latentset import MANIFEST, LatentSet

    p = Path(path)
    if p.is_dir() and (p / MANIFEST).is_file():
        ls = LatentSet.open(p, verify=True)
        d = ls.describe()
        d["kind"] = "latent-set"
        d["checksum_verified"] = ls.checksum() == ls.manifest["latent_checksum"]
        return d
    if p.is_dir() and (p / CONFIG_FILE).is_file():
        cfg = read_model_config(p)
        from funcml.encoders.model import FieldModel

        model = FieldModel.load(p)
        n_params = sum(t.numel() for t in model.net.parameters())
        return {"kind": "model", "path": str(p), "id": cfg["id"], "field": cfg["field"],
                "signal_shape": cfg["signal_shape"], "encode": cfg["encode"], "parameters": n_params,
                "training": {k: v for k, v in cfg.get("training", {}).items() if k != "config"}}
    from funcml.data import load_signals

    signals = load_signals(path)
    return {"kind": "data", **signals.describe()}


@click.command("info")
@click.argument("path")
@json_option
def info_command(path, as_json):
    """Describe PATH: a model directory, a latent set (verified; checksum of the latent values) or DATA."""
    d = describe_path(path)
    if as_json:
        emit_json(d)
        return
    click.echo(f"{d['kind']}: {d.get('path', path)}")
    for key, value in d.items():
        if key in ("kind", "path"):
            continue
        click.echo(f"  {key}: {value}")


def register(cli: click.Group) -> None:
    cli.add_command(info_command)
