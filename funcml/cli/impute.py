"""``funcml impute``: fit only observed samples, render the whole signal, score the hidden part."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import (data_options, device_option, emit_json, info, json_option, load_data,
                               parse_resolution)


@click.command("impute")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model directory from `funcml train`.")
@click.option("--observed", required=True, metavar="MASK",
              help="Observed samples: random:F, drop-slices:F[@AXIS], box:LO-HI[,..], crop:LO-HI[,..] or a .npy/.npz mask.")
@click.option("--observed-seed", type=int, default=0, show_default=True, help="Seed of random: patterns.")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="test", show_default=True)
@click.option("--max-items", type=int, default=None, help="Evaluate only the first N signals of the split.")
@click.option("--steps", type=int, default=None, help="Test-time steps H (default: the model's).")
@click.option("--baselines", default="nearest,linear,biharmonic", show_default=True,
              help="Comma-separated baselines (nearest, linear, biharmonic; empty for none).")
@click.option("--out", default=None, type=click.Path(), help="Folder for metrics.json and impute.png.")
@device_option
@json_option
@data_options
def impute_command(data, model_dir, observed, observed_seed, split, max_items, steps, baselines, out, device, as_json,
                   resolution, channels, split_seed, val_fraction, test_fraction, data_option):
    """Impute the hidden samples of DATA from the observed ones (MASK) and compare with baselines.

    PSNR is measured on the hidden samples only (and on the whole signal). Baselines: nearest and
    piecewise-linear interpolation (scipy griddata), biharmonic inpainting (scikit-image).
    """
    from funcml.devices import resolve_device
    from funcml.encoders.config import replace
    from funcml.encoders.model import FieldModel
    from funcml.errors import ConfigError
    from funcml.io import atomic_write_json
    from funcml.query.figures import plot_method_grid
    from funcml.query.impute import BASELINES, impute_evaluate
    from funcml.query.observed import parse_observed

    model = FieldModel.load(model_dir, device=resolve_device(device))
    res = parse_resolution(resolution) or model.signal_shape[1:]
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    names = tuple(b.strip() for b in baselines.split(",") if b.strip())
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ConfigError(f"--baselines: unknown {sorted(unknown)}; choose from {BASELINES}")
    masks = parse_observed(observed, signals.spatial_shape, len(signals), seed=observed_seed)
    cfg = replace(model.encode_defaults, steps=steps).validate()
    metrics, ex = impute_evaluate(model, signals, masks, split=split, config=cfg, max_items=max_items,
                                  baselines=names, progress=not as_json, log=info)
    metrics["model_id"] = model.id
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "metrics.json", metrics)
        rows = {"observed": ex["observed"], **{m: ex[m] for m in ("funcml", *names)}, "truth": ex["truth"]}
        plot_method_grid(rows, out_dir / "impute.png", masks=ex["_mask"], masked_rows=("observed",),
                         title=f"{masks.tag}: hidden PSNR funcml {metrics['funcml']['psnr_hidden']:.2f} dB")
        info(f"figure: {out_dir / 'impute.png'}")
    if as_json:
        emit_json(metrics)


def register(cli: click.Group) -> None:
    cli.add_command(impute_command)
