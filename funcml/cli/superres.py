"""``funcml superres``: super-resolution of real low/high-resolution pairs, next to interpolation."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import device_option, emit_json, info, json_option, parse_key_values


@click.command("superres")
@click.argument("data_low")
@click.argument("data_high")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model directory from `funcml train`.")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="test", show_default=True)
@click.option("--max-items", type=int, default=None, help="Evaluate only the first N signals of the split.")
@click.option("--steps", type=int, default=None, help="Test-time steps H (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Signals encoded together (default: the model's).")
@click.option("--align", type=click.Choice(["auto", "centers", "corners"]), default="auto", show_default=True,
              help="How the two grids line up: centers (pixels, default for 2D/3D) or corners (1D samples).")
@click.option("--out", default=None, type=click.Path(), help="Folder for metrics.json and superres.png.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits (both data sets).")
@click.option("--data-option", "data_option", multiple=True, metavar="KEY=VALUE", help="Source option for both data sets.")
@device_option
@json_option
def superres_command(data_low, data_high, model_dir, split, max_items, steps, batch_size, align, out, split_seed,
                     data_option, device, as_json):
    """Encode DATA_LOW, render at DATA_HIGH's grid, compare with DATA_HIGH (PSNR, SSIM).

    DATA_LOW and DATA_HIGH hold the same signals in the same order at two resolutions (e.g.
    breastmnist.npz and breastmnist_64.npz). Each is read at its own native grid. Baselines:
    nearest, (bi)linear and bicubic (2D) / trilinear (3D) / linear (1D) interpolation of DATA_LOW.
    """
    import dataclasses

    from funcml.data import LoadOptions, load_signals
    from funcml.devices import resolve_device
    from funcml.encoders.config import replace
    from funcml.encoders.model import FieldModel
    from funcml.io import atomic_write_json
    from funcml.query.figures import plot_method_grid
    from funcml.query.superres import superres_evaluate

    model = FieldModel.load(model_dir, device=resolve_device(device))
    opts = LoadOptions(split_seed=split_seed, extra=parse_key_values(data_option))
    low, high = load_signals(data_low, opts), load_signals(data_high, opts)
    cfg = replace(model.encode_defaults, steps=steps)
    cfg = dataclasses.replace(cfg, batch_size=batch_size or cfg.batch_size).validate()
    metrics, examples = superres_evaluate(model, low, high, split=split, align=None if align == "auto" else align,
                                          config=cfg, max_items=max_items, progress=not as_json, log=info)
    metrics["model_id"] = model.id
    out_dir = Path(out) if out else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "metrics.json", metrics)
        classic = metrics["classic"]
        plot_method_grid({"low": examples["low"], classic: examples[classic], "funcml": examples["funcml"],
                          "high (truth)": examples["high"]}, out_dir / "superres.png",
                         title=f"{low.signal_shape[1:]} -> {high.signal_shape[1:]}: funcml "
                               f"{metrics['funcml']['psnr']:.2f} dB vs {classic} {metrics[classic]['psnr']:.2f} dB")
        info(f"figure: {out_dir / 'superres.png'}")
    if as_json:
        emit_json(metrics)


def register(cli: click.Group) -> None:
    cli.add_command(superres_command)
