"""``funcml demo``: the main job on the embedded BreastMNIST data, end to end."""

from __future__ import annotations

import click

from funcml.cli.common import device_option, emit_json, info, json_option, overwrite_option


@click.command("demo")
@click.option("--out", default="demo-report", show_default=True, type=click.Path(), help="Report folder.")
@click.option("--preset", default="cpu-image", show_default=True)
@click.option("--steps", type=int, default=None, help="Meta-train this many steps (instead of a time budget).")
@click.option("--minutes", type=float, default=None,
              help="Meta-training time budget (default 2; the learning-rate schedule fits it).")
@click.option("--quick", is_flag=True, help="A few steps only (a smoke test of the pipeline).")
@overwrite_option
@device_option
@json_option
def demo_command(out, preset, steps, minutes, quick, overwrite, device, as_json):
    """Train a CPU preset on the embedded BreastMNIST 28x28 data, encode all splits, evaluate the
    reconstructions and run the downstream tasks; write metrics JSON and figures to --out."""
    from funcml.demo import run_demo

    report = run_demo(out, preset=preset, steps=steps, minutes=minutes, quick=quick, device=device,
                      overwrite=overwrite, log=info,
                      progress=not as_json)
    if as_json:
        emit_json(report)


def register(cli: click.Group) -> None:
    cli.add_command(demo_command)
