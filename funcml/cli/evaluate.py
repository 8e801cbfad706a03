"""``funcml evaluate``: reconstruction quality of a latent set against its source signals."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from funcml.cli.common import (data_options, device_option, emit_json, info, json_option, load_data,
                               overwrite_option, parse_resolution)


def evaluate_latent_set(latent_set, model, signals, *, batch_size: int = 256, split: str = "all",
                        max_items: int | None = None) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    """Decode latents and compare with the signals they came from (matched by their ``index``).

    Returns ``(metrics, (originals, reconstructions))``: metrics ``{split: {psnr, ssim, mse, count}}``
    plus ``"all"``; the arrays hold up to 8 test (else first) signals for a figure.
    """
    import torch

    from funcml.data.base import SPLITS
    from funcml.errors import DataError
    from funcml.metrics import mse, psnr, ssim

    if tuple(signals.signal_shape) != tuple(latent_set.signal_shape):
        raise DataError(f"the data's signals {signals.signal_shape} differ from the encoded ones "
                        f"{latent_set.signal_shape}; pass the same DATA and --resolution as for encoding")
    if latent_set.manifest["source"].get("fingerprint") not in (None, signals.fingerprint):
        raise DataError("DATA is not the data this latent set was encoded from (fingerprints differ)")
    rows = np.arange(len(latent_set)) if split == "all" else latent_set.split_indices(split)
    if max_items is not None:
        rows = rows[:max_items]
    per = {"psnr": [], "ssim": [], "mse": [], "split": []}
    spatial = latent_set.signal_shape[1:]
    for start in range(0, len(rows), batch_size):
        r = rows[start:start + batch_size]
        z = torch.from_numpy(latent_set.rows(r)).to(model.device)
        recon = model.decode(z, spatial).cpu().numpy()
        orig = signals.get(np.asarray(latent_set.index[r]))
        per["psnr"].append(psnr(recon, orig))
        per["ssim"].append(ssim(recon, orig))
        per["mse"].append(mse(recon, orig))
        per["split"].append(np.asarray(latent_set.splits[r]))
    cat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per.items()}
    metrics: dict = {}
    for code, name in [(None, "all"), *enumerate(SPLITS)]:
        mask = np.ones(len(cat["split"]), bool) if code is None else cat["split"] == code
        if mask.any():
            metrics[name] = {"count": int(mask.sum()), "psnr": float(np.mean(cat["psnr"][mask])),
                             "ssim": float(np.nanmean(cat["ssim"][mask])), "mse": float(np.mean(cat["mse"][mask]))}
    show = latent_set.split_indices("test")
    show = (show if len(show) else np.arange(len(latent_set)))[:8]
    z = torch.from_numpy(latent_set.rows(show)).to(model.device)
    figure = (signals.get(np.asarray(latent_set.index[show])), model.decode(z, spatial).cpu().numpy())
    return metrics, figure


@click.command("evaluate")
@click.argument("latents", type=click.Path())
@click.option("--data", "data", required=True, help="The DATA the latents were encoded from.")
@click.option("--model", "model_dir", default=None, type=click.Path(), help="Model directory (default: the embedded one).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True)
@click.option("--out", default=None, type=click.Path(), help="Folder for metrics.json and reconstructions.png.")
@overwrite_option
@device_option
@json_option
@data_options
def evaluate_command(latents, data, model_dir, split, out, overwrite, device, as_json, resolution, channels, split_seed,
                     val_fraction, test_fraction, data_option):
    """Decode LATENTS and report PSNR, SSIM and MSE per split against DATA; draw a reconstruction grid
    (into --out, else into the LATENTS folder)."""
    from funcml.devices import resolve_device
    from funcml.errors import OutputExistsError
    from funcml.io import atomic_write_json
    from funcml.latents import LatentSet
    from funcml.viz import plot_reconstructions

    # --out must be new (with --overwrite, only our two files in it are replaced); without --out the
    # figure goes into the latent set's folder, where an older figure is kept unless --overwrite.
    existing = Path(out) if out else Path(latents) / "reconstructions.png"
    if existing.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {existing} (pass --overwrite to replace it)")
    latent_set = LatentSet.open(latents)
    model = latent_set.load_model(model_dir, device=resolve_device(device))
    res = parse_resolution(resolution) or tuple(latent_set.signal_shape[1:])
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    metrics, (orig, recon) = evaluate_latent_set(latent_set, model, signals, split=split)
    out_dir = Path(out) if out else Path(latents)
    out_dir.mkdir(parents=True, exist_ok=True)
    figure = out_dir / "reconstructions.png"
    plot_reconstructions(orig, recon, figure)
    if out:
        atomic_write_json(out_dir / "metrics.json", metrics)
    for name, m in metrics.items():
        info(f"{name:>5}: {m['count']:6d} signals  PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  MSE {m['mse']:.3g}")
    info(f"reconstruction grid: {figure}")
    if as_json:
        emit_json({**metrics, "figure": str(figure)})


def register(cli: click.Group) -> None:
    cli.add_command(evaluate_command)
