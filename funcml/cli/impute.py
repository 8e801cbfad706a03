"""``funcml impute``: fit only observed samples, render the whole signal, score the hidden part; and
``funcml impute train``: a learned query head for it."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import (DefaultGroup, data_options, device_option, emit_json, info, json_option, load_data,
                               overwrite_option, parse_resolution)
from funcml.cli.queryhead import head_options, head_params, train_into


@click.group("impute", cls=DefaultGroup, default="evaluate")
def impute_group() -> None:
    """Imputation: `funcml impute DATA --model M --observed MASK` evaluates (the `evaluate` command);
    `funcml impute train DATA --model M --out HEAD` trains a query head for it."""


@impute_group.command("evaluate")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model directory from `funcml train`.")
@click.option("--observed", required=True, metavar="MASK",
              help="Observed samples: random:F, drop-slices:F[@AXIS], box:LO-HI[,..], crop:LO-HI[,..] or a .npy/.npz mask.")
@click.option("--head", "head_dir", default=None, type=click.Path(),
              help="A query head from `funcml impute train` (adds the funcml_head row).")
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
def impute_command(data, model_dir, observed, head_dir, observed_seed, split, max_items, steps, baselines, out, device,
                   as_json, resolution, channels, split_seed, val_fraction, test_fraction, data_option):
    """Impute the hidden samples of DATA from the observed ones (MASK) and compare with baselines.

    PSNR is measured on the hidden samples only (and on the whole signal). Rows: funcml (the plain
    field), funcml_head (with --head), nearest and piecewise-linear interpolation (scipy
    griddata), biharmonic inpainting (scikit-image).
    """
    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.errors import ConfigError
    from funcml.io import atomic_write_json
    from funcml.query.estimator import QueryRegressor
    from funcml.query.figures import plot_method_grid
    from funcml.query.impute import BASELINES, impute_evaluate
    from funcml.query.observed import parse_observed

    model = FieldModel.load(model_dir, device=resolve_device(device))
    head = QueryRegressor.load(head_dir, model, tasks=("impute",)) if head_dir else None
    res = parse_resolution(resolution) or model.signal_shape[1:]
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    names = tuple(b.strip() for b in baselines.split(",") if b.strip())
    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ConfigError(f"--baselines: unknown {sorted(unknown)}; choose from {BASELINES}")
    masks = parse_observed(observed, signals.spatial_shape, len(signals), seed=observed_seed)
    cfg = model.encode_defaults.at_steps(steps).validate()
    metrics, ex = impute_evaluate(model, signals, masks, split=split, config=cfg, max_items=max_items,
                                  baselines=names, progress=not as_json, log=info,
                                  heads={"funcml_head": head} if head else None)
    metrics["model_id"] = model.id
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "metrics.json", metrics)
        shown = ("funcml", "funcml_head") if head else ("funcml",)
        rows = {"observed": ex["observed"], **{m: ex[m] for m in (*shown, *names)}, "truth": ex["truth"]}
        plot_method_grid(rows, out_dir / "impute.png", masks=ex["_mask"], masked_rows=("observed",),
                         title=f"{masks.tag}: hidden PSNR " + ", ".join(
                             f"{m} {metrics[m]['psnr_hidden']:.2f} dB" for m in shown))
        info(f"figure: {out_dir / 'impute.png'}")
    if as_json:
        emit_json(metrics)


@impute_group.command("train")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="The field model (stays frozen).")
@click.option("--out", required=True, type=click.Path(), help="Output head folder.")
@click.option("--hide", default="random:0.3-0.7,block:0.2-0.5", show_default=True,
              help="Random hidden masks: random:LO-HI (a fraction of the samples), block:LO-HI (one box, side "
                   "fractions per axis; a missing segment in 1D), comma separated; one kind per mask.")
@click.option("--repeats", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Masked copies per training signal.")
@click.option("--share-masks", type=click.IntRange(1, 4096), default=16, show_default=True,
              help="Training signals that share one mask (drawn at random per copy), so that each training "
                   "batch queries only hidden samples; 1: a mask per signal.")
@head_options(inputs="features,latent,observed", base="classic", hidden=256, layers=3, neighbours=5, steps=3000,
              batch_size=16, coords=512, lr=1e-3)
@overwrite_option
@device_option
@json_option
@data_options
def train_command(data, model_dir, out, hide, repeats, share_masks, overwrite, device, as_json, resolution, channels,
                  split_seed, val_fraction, test_fraction, data_option, **kwargs):
    """Train an imputation query head on the train split of DATA with random hidden masks (self-supervised).

    Each training signal is hidden --repeats times by a random mask of --hide, encoded from its
    observed samples only, and the head learns the hidden samples from the field's features, the
    latent and the observed samples around each one. Validated on the val split; the best head is
    kept. Interrupted training resumes when the same command is run again.
    """
    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.errors import DataError
    from funcml.query.estimator import QueryRegressor
    from funcml.query.pairs import masked_pairs, parse_hide

    est = QueryRegressor("impute", **head_params(kwargs), progress=not as_json)
    kinds = parse_hide(hide)
    model = FieldModel.load(model_dir, device=resolve_device(device))
    res = parse_resolution(resolution) or model.signal_shape[1:]
    signals = load_data(data, res, channels, split_seed, val_fraction, test_fraction, data_option)
    model.check_signals(signals.signal_shape, allow_other_resolution=True)
    est.head_config(signals.channels, signals.channels)
    tr, va = signals.indices("train"), signals.indices("val")
    if len(tr) == 0:
        raise DataError(f"{data}: the train split is empty")
    source = {"data": signals.fingerprint, "hide": hide, "repeats": repeats, "share_masks": share_masks}

    def fit(tmp):
        info(f"encoding {len(tr)} x {repeats} masked training signals ({hide})")
        pairs = masked_pairs(model, signals.get(tr), hide=kinds, repeats=repeats, seed=est.seed, share=share_masks,
                             progress=not as_json)
        val = masked_pairs(model, signals.get(va), hide=kinds, repeats=1, seed=est.seed + 1, share=share_masks,
                           progress=not as_json) if len(va) else None
        est.fit(model, pairs, grid=signals.spatial_shape, val=val, checkpoint_dir=tmp, meta=source, restart=overwrite,
                log=info)

    train_into(out, overwrite, fit, lambda tmp, _: est.write(tmp, training={**source, "spec": signals.spec}))
    if as_json:
        emit_json({"out": str(out), "steps": est.record_["steps"], "seconds": est.record_["seconds"],
                   "best_val_psnr": est.record_["best_val_psnr"], "model_id": model.id})


def register(cli: click.Group) -> None:
    cli.add_command(impute_group)
