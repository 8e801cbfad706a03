"""``funcml segment``: train a segmentation head on a frozen field model, predict masks at any
resolution, and a pixel U-Net baseline for comparison."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from funcml.cli.common import (device_option, emit_json, info, json_option, overwrite_option, parse_key_values,
                               parse_resolution)
from funcml.cli.queryhead import head_options, head_params


def seg_data_options(f: Callable) -> Callable:
    """How DATA is read (its grid is set by the model, or by --resolution where a command says so)."""
    decorators = [
        click.option("--channels", type=click.IntRange(1, 4), default=None, help="Force 1 (grey) or 3 (RGB) channels."),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits."),
        click.option("--val-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.1, show_default=True),
        click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=0.2, show_default=True),
        click.option("--data-option", "data_option", multiple=True, metavar="KEY=VALUE",
                     help="Source-specific option, e.g. labels=aal.nii.gz (repeatable)."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def _load(data, grid, channels, split_seed, val_fraction, test_fraction, data_option):
    from funcml.data import LoadOptions, load_signals

    return load_signals(data, LoadOptions(resolution=tuple(grid) if grid else None, split_seed=split_seed,
                                          val_fraction=val_fraction, test_fraction=test_fraction, channels=channels,
                                          extra=parse_key_values(data_option)))


def _grid(text, dim):
    from funcml.errors import ConfigError

    if text is None:
        return None
    g = parse_resolution(text)
    g = g * dim if len(g) == 1 else g
    if len(g) != dim:
        raise ConfigError(f"--resolution {text} does not fit {dim}-D signals")
    return g


def _latents(model, signals, rows, latents_path, progress):
    from funcml.tasks.segment.data import encode_rows, latents_from_set

    if latents_path:
        from funcml.latents import LatentSet

        return latents_from_set(LatentSet.open(latents_path), signals, rows, model)
    info(f"encoding {len(rows)} signals {signals.signal_shape} with the field model")
    return encode_rows(model, signals, rows, progress=progress)


def _radii(text):
    from funcml.errors import ConfigError

    try:
        return tuple(float(r) for r in text.split(",") if r.strip()) if text else ()
    except ValueError:
        raise ConfigError(f"--context takes radii such as 1,3,9; got {text!r}") from None


@click.group("segment")
def segment_group() -> None:
    """Segmentation by querying fields (train a head, predict masks at any resolution) and a U-Net baseline."""


@segment_group.command("train")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Field model (stays frozen).")
@click.option("--out", required=True, type=click.Path(), help="Output head folder.")
@click.option("--latents", "latents_path", default=None, type=click.Path(),
              help="Latent set of DATA encoded with --model (default: encode the train split now).")
@click.option("--mask-resolution", default=None, help="Grid to read the training masks at (default: the model's); "
                                                       "a finer one supervises between the fitted samples.")
@click.option("--context", default=None, metavar="R1,R2,...",
              help="Also query features at +/- these radii (in field samples) along each axis, e.g. 1,3,9.")
@head_options(inputs="both", base=None, hidden=128, layers=2, neighbours=3, steps=1500, batch_size=16, coords=1024,
              lr=2e-3, feature_proj=0)
@overwrite_option
@device_option
@json_option
@seg_data_options
def train_command(data, model_dir, out, latents_path, mask_resolution, context, overwrite, device, as_json, channels,
                  split_seed, val_fraction, test_fraction, data_option, **kwargs):
    """Train a segmentation head on the train split of DATA (signals with masks) for the model in --model.

    Signals are read at the model's grid and encoded (or taken from --latents); masks at
    --mask-resolution. The head (the query head configured for class logits) reads the field's
    features, the latent and/or the image samples around each position (--inputs); the field
    model is not changed.
    """
    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.io import prepare_output
    from funcml.tasks.segment.data import class_count, class_names, require_masks
    from funcml.tasks.segment.segmenter import QuerySegmenter

    if Path(out).exists() and not overwrite:
        prepare_output(out, overwrite)
    params = head_params(kwargs)
    est = QuerySegmenter(**params, context=_radii(context), progress=not as_json)
    model = FieldModel.load(model_dir, device=resolve_device(device))
    est.head_config(2, model.signal_shape[0])  # refuse bad settings before encoding
    grid = tuple(model.signal_shape[1:])
    opts = (channels, split_seed, val_fraction, test_fraction, data_option)
    signals = _load(data, grid, *opts)
    require_masks(signals)
    mgrid = _grid(mask_resolution, len(grid)) or grid
    mask_src = signals if tuple(mgrid) == grid else _load(data, mgrid, *opts)
    rows = signals.indices("train")
    if len(rows) == 0:
        from funcml.errors import DataError

        raise DataError(f"{data}: the train split is empty")
    z = _latents(model, signals, rows, latents_path, not as_json)
    masks = mask_src.get_masks(rows)
    k = class_count(signals, masks)
    x = signals.get(rows) if est.head_config(k, signals.channels).needs_observed else None
    info(f"training a {params['inputs']} head on {len(rows)} signals, masks {tuple(mgrid)}, {k} classes")
    est.fit(model, z, masks, signals=x, field_shape=grid, n_classes=k, class_names=class_names(signals, k))
    record = {"data": {"spec": signals.spec, "fingerprint": signals.fingerprint, "name": signals.name},
              "train_signals": int(len(rows)), "mask_grid": list(mgrid), "latents": latents_path}
    est.save(out, overwrite=overwrite, training=record)
    final = est.history_[-1]["loss"] if est.history_ else None
    info(f"done in {est.fit_seconds_:.0f} s ({est.record_['steps']} steps), final loss {final:.4f} -> {out}")
    if as_json:
        emit_json({"out": str(out), "n_classes": k, "train_signals": int(len(rows)), "loss": final,
                   "seconds": est.fit_seconds_, "steps": est.record_["steps"], "inputs": params["inputs"],
                   "model_id": model.id})


@segment_group.command("predict")
@click.argument("data")
@click.option("--head", "head_dir", required=True, type=click.Path(), help="Head folder from `funcml segment train`.")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="The field model the head was trained on.")
@click.option("--out", required=True, type=click.Path(), help="Output folder (masks.npy, overlays.png, metrics.json).")
@click.option("--resolution", default=None, help="Grid to predict masks at (default: the head's training mask grid).")
@click.option("--latents", "latents_path", default=None, type=click.Path(), help="Latent set of DATA (default: encode now).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True)
@click.option("--max-files", type=int, default=16, show_default=True, help="3D: write NIfTI masks for this many volumes.")
@overwrite_option
@device_option
@json_option
@seg_data_options
def predict_command(data, head_dir, model_dir, out, resolution, latents_path, split, max_files, overwrite, device,
                    as_json, channels, split_seed, val_fraction, test_fraction, data_option):
    """Predict masks for DATA at any --resolution; where DATA has masks, report Dice, IoU and HD95.

    Writes masks.npy (n, *grid) class indices, index.npy (the data rows), overlays.png, and
    metrics.json (per class and mean) when ground truth exists.
    """
    import numpy as np

    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.io import atomic_dir, atomic_write_json
    from funcml.query.figures import plot_overlays
    from funcml.tasks.segment.metrics import segmentation_report
    from funcml.tasks.segment.segmenter import QuerySegmenter

    model = FieldModel.load(model_dir, device=resolve_device(device))
    est = QuerySegmenter.load(head_dir, model)
    grid = tuple(est.field_shape_)
    opts = (channels, split_seed, val_fraction, test_fraction, data_option)
    signals = _load(data, grid, *opts)
    out_shape = _grid(resolution, len(grid)) or tuple(est.mask_shape_)
    rows = signals.indices(None if split == "all" else split)
    if len(rows) == 0:
        from funcml.errors import DataError

        raise DataError(f"{data}: the {split} split is empty")
    z = _latents(model, signals, rows, latents_path, not as_json)
    info(f"predicting {len(rows)} masks at {tuple(out_shape)}")
    pred = est.predict(z, out_shape, signals=signals.get(rows) if est.needs_signals else None)
    dtype = np.uint8 if est.n_classes_ <= 256 else np.int32
    metrics = None
    truth = None
    if signals.has_masks:
        truth_src = signals if tuple(out_shape) == grid else _load(data, out_shape, *opts)
        truth = truth_src.get_masks(rows)
        metrics = segmentation_report(pred, truth, est.n_classes_, class_names=est.class_names_)
        metrics.update({"split": split, "grid": list(out_shape), "field_grid": list(grid)})
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / "masks.npy", pred.astype(dtype))
        np.save(tmp / "index.npy", rows.astype(np.int64))
        if len(grid) == 3:
            import nibabel as nib

            for i in range(min(max_files, len(pred))):
                nib.save(nib.Nifti1Image(pred[i].astype(np.int16), np.eye(4)), str(tmp / f"mask_{int(rows[i]):05d}.nii.gz"))
        show = min(8, len(rows))
        plot_overlays(signals.get(rows[:show]), pred[:show], None if truth is None else truth[:show],
                      tmp / "overlays.png", title="predicted (red) and true (yellow, dashed) masks")
        if metrics is not None:
            atomic_write_json(tmp / "metrics.json", metrics)
    if metrics is not None:
        _log_report(metrics)
    info(f"masks: {out}/masks.npy {pred.shape}; overlays: {out}/overlays.png")
    if as_json:
        emit_json({"out": str(out), "shape": list(pred.shape), **(metrics or {})})


def _log_report(metrics: dict) -> None:
    def fmt(v):
        return "  n/a " if v is None else f"{v:6.3f}"

    for name, m in metrics["per_class"].items():
        info(f"  {name:>14}: Dice {fmt(m['dice'])}  IoU {fmt(m['iou'])}  HD95 {fmt(m['hd95'])}  ({m['images']} images)")
    if "mean" in metrics:
        m = metrics["mean"]
        info(f"  {'mean':>14}: Dice {fmt(m['dice'])}  IoU {fmt(m['iou'])}  HD95 {fmt(m['hd95'])}")


@segment_group.command("unet")
@click.argument("data")
@click.option("--out", required=True, type=click.Path(), help="Output folder (weights, metrics.json, overlays.png).")
@click.option("--resolution", default=None, help="Grid of images and masks (default: the data's).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--base", type=int, default=16, show_default=True, help="Channels of the first level.")
@click.option("--depth", type=int, default=3, show_default=True, help="Down-sampling levels.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--augment/--no-augment", default=True, show_default=True, help="Random flips.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True, help="Split evaluated.")
@overwrite_option
@device_option
@json_option
@seg_data_options
def unet_command(data, out, resolution, epochs, batch_size, base, depth, lr, augment, seed, split, overwrite, device,
                 as_json, channels, split_seed, val_fraction, test_fraction, data_option):
    """Pixel baseline: train a small U-Net on the train split of DATA and report Dice, IoU, HD95 on --split."""
    from funcml.devices import resolve_device
    from funcml.errors import DataError
    from funcml.io import prepare_output
    from funcml.query.figures import plot_overlays
    from funcml.tasks.segment.data import class_count, class_names, require_masks
    from funcml.tasks.segment.metrics import segmentation_report
    from funcml.tasks.segment.unet import UNetSegmenter

    if Path(out).exists() and not overwrite:
        prepare_output(out, overwrite)
    opts = (channels, split_seed, val_fraction, test_fraction, data_option)
    probe = _load(data, None, *opts)
    grid = _grid(resolution, probe.dim)
    signals = probe if grid is None else _load(data, grid, *opts)
    require_masks(signals)
    tr, te = signals.indices("train"), signals.indices(split)
    if len(tr) == 0 or len(te) == 0:
        raise DataError(f"{data}: the train or {split} split is empty")
    info(f"reading {len(tr)} train and {len(te)} {split} pairs at {signals.spatial_shape}")
    x_tr, m_tr = signals.get(tr), signals.get_masks(tr)
    k = class_count(signals, m_tr)
    est = UNetSegmenter(base=base, depth=depth, epochs=epochs, batch_size=batch_size, lr=lr, augment=augment, seed=seed,
                        device=str(resolve_device(device)), progress=not as_json).fit(x_tr, m_tr, n_classes=k)
    x_te, m_te = signals.get(te), signals.get_masks(te)
    pred = est.predict(x_te)
    metrics = segmentation_report(pred, m_te, k, class_names=class_names(signals, k))
    metrics.update({"split": split, "grid": list(signals.spatial_shape), "train_signals": int(len(tr)),
                    "fit_seconds": est.fit_seconds_})
    est.save(out, overwrite=overwrite, extra={"metrics": metrics, "data": {"spec": signals.spec,
                                                                            "fingerprint": signals.fingerprint}})
    plot_overlays(x_te[:8], pred[:8], m_te[:8], Path(out) / "overlays.png", title="U-Net: predicted (red), true (yellow)")
    _log_report(metrics)
    if as_json:
        emit_json({"out": str(out), **metrics})


def register(cli: click.Group) -> None:
    cli.add_command(segment_group)
