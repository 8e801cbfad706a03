"""``funcml evaluate``: reconstruction quality of a latent set against its source signals."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import (data_options, device_option, emit_json, info, json_option, load_data,
                               overwrite_option, parse_resolution)


@click.command("evaluate")
@click.argument("latents", type=click.Path())
@click.option("--data", "data", required=True, help="The DATA the latents were encoded from.")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Model directory (default: the embedded one).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True)
@click.option("--out", default=None, type=click.Path(),
              help="New folder for metrics.json and reconstructions.png (default: report only, write nothing).")
@overwrite_option
@device_option
@json_option
@data_options
def evaluate_command(latents, data, model_dir, split, out, overwrite, device, as_json, resolution, channels, split_seed,
                     val_fraction, test_fraction, data_option):
    """Decode LATENTS and report PSNR, SSIM and MSE per split against DATA.

    LATENTS is only read. With --out, the metrics and a grid of originals over reconstructions are
    written into that new folder (--overwrite replaces it)."""
    from funcml.devices import resolve_device
    from funcml.io import atomic_write_json, prepare_output
    from funcml.latents import LatentSet
    from funcml.latents.evaluate import evaluate_latent_set
    from funcml.viz import plot_reconstructions

    if out:
        prepare_output(out, overwrite)
    latent_set = LatentSet.open(latents)
    model = latent_set.load_model(model_dir, device=resolve_device(device))
    res = parse_resolution(resolution) or tuple(latent_set.signal_shape[1:])
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    metrics, (orig, recon) = evaluate_latent_set(latent_set, model, signals, split=split)
    for name, m in metrics.items():
        info(f"{name:>5}: {m['count']:6d} signals  PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  MSE {m['mse']:.3g}")
    report = dict(metrics)
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True)
        plot_reconstructions(orig, recon, out_dir / "reconstructions.png")
        atomic_write_json(out_dir / "metrics.json", metrics)
        info(f"metrics and reconstruction grid: {out_dir}")
        report["figure"] = str(out_dir / "reconstructions.png")
    if as_json:
        emit_json(report)


def register(cli: click.Group) -> None:
    cli.add_command(evaluate_command)
