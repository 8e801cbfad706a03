"""``funcml superres``: super-resolution of real low/high-resolution pairs next to interpolation, and
``funcml superres train``: a learned query head for it."""

from __future__ import annotations

from pathlib import Path

import click

from funcml.cli.common import DefaultGroup, device_option, emit_json, info, json_option, overwrite_option, parse_key_values
from funcml.cli.queryhead import head_options, head_params, train_into

ALIGN = click.option("--align", type=click.Choice(["auto", "centers", "corners"]), default="auto", show_default=True,
                     help="How the two grids line up: centers (pixels, default for 2D/3D) or corners (1D samples).")


@click.group("superres", cls=DefaultGroup, default="evaluate")
def superres_group() -> None:
    """Super-resolution: `funcml superres DATA_LOW DATA_HIGH --model M` evaluates (the `evaluate`
    command); `funcml superres train DATA --model M --out HEAD` trains a query head for it."""


@superres_group.command("evaluate")
@click.argument("data_low")
@click.argument("data_high")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model directory from `funcml train`.")
@click.option("--head", "head_dir", default=None, type=click.Path(),
              help="A query head from `funcml superres train` (adds the funcml_head row).")
@click.option("--split", type=click.Choice(["all", "train", "val", "test"]), default="test", show_default=True)
@click.option("--max-items", type=int, default=None, help="Evaluate only the first N signals of the split.")
@click.option("--steps", type=int, default=None, help="Test-time steps H (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Signals encoded together (default: the model's).")
@ALIGN
@click.option("--out", default=None, type=click.Path(), help="Folder for metrics.json and superres.png.")
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits (both data sets).")
@click.option("--data-option", "data_option", multiple=True, metavar="KEY=VALUE", help="Source option for both data sets.")
@device_option
@json_option
def superres_command(data_low, data_high, model_dir, head_dir, split, max_items, steps, batch_size, align, out,
                     split_seed, data_option, device, as_json):
    """Encode DATA_LOW, render at DATA_HIGH's grid, compare with DATA_HIGH (PSNR, SSIM).

    DATA_LOW and DATA_HIGH hold the same signals in the same order at two resolutions (e.g.
    breastmnist.npz and breastmnist_64.npz). Each is read at its own native grid. Rows: funcml
    (the plain field), funcml_head (with --head), nearest, (bi)linear and bicubic (2D) / trilinear
    (3D) / linear (1D) interpolation of DATA_LOW.
    """
    import dataclasses

    from funcml.data import LoadOptions, load_signals
    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.io import atomic_write_json
    from funcml.query.estimator import QueryRegressor
    from funcml.query.figures import plot_method_grid
    from funcml.query.superres import superres_evaluate

    model = FieldModel.load(model_dir, device=resolve_device(device))
    head = QueryRegressor.load(head_dir, model, tasks=("superres",)) if head_dir else None
    opts = LoadOptions(split_seed=split_seed, extra=parse_key_values(data_option))
    low, high = load_signals(data_low, opts), load_signals(data_high, opts)
    cfg = model.encode_defaults.at_steps(steps)
    cfg = dataclasses.replace(cfg, batch_size=batch_size or cfg.batch_size).validate()
    metrics, examples = superres_evaluate(model, low, high, split=split, align=None if align == "auto" else align,
                                          config=cfg, max_items=max_items, progress=not as_json, log=info,
                                          heads={"funcml_head": head} if head else None)
    metrics["model_id"] = model.id
    if out:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "metrics.json", metrics)
        classic = metrics["classic"]
        shown = ("funcml", "funcml_head") if head else ("funcml",)
        plot_method_grid({"low": examples["low"], classic: examples[classic], **{m: examples[m] for m in shown},
                          "high (truth)": examples["high"]}, out_dir / "superres.png",
                         title=f"{low.signal_shape[1:]} -> {high.signal_shape[1:]}: " + ", ".join(
                             f"{m} {metrics[m]['psnr']:.2f} dB" for m in (*shown, classic)))
        info(f"figure: {out_dir / 'superres.png'}")
    if as_json:
        emit_json(metrics)


@superres_group.command("train")
@click.argument("data")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="The field model (stays frozen).")
@click.option("--out", required=True, type=click.Path(), help="Output head folder.")
@click.option("--target-data", default=None, type=click.Path(),
              help="The same signals at a higher resolution (real pairs); default: self-supervised from DATA.")
@click.option("--scales", default="1.5-4", show_default=True,
              help="Self-supervised: downsampling factors drawn from this range (or one factor).")
@click.option("--repeats", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Self-supervised: downsampled copies per training signal.")
@ALIGN
@head_options(inputs="features,latent,observed", base="classic", hidden=256, layers=3, neighbours=3, steps=3000,
              batch_size=16, coords=512, lr=1e-3)
@click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits.")
@click.option("--data-option", "data_option", multiple=True, metavar="KEY=VALUE", help="Source option for the data.")
@overwrite_option
@device_option
@json_option
def train_command(data, model_dir, out, target_data, scales, repeats, align, split_seed, data_option, overwrite,
                  device, as_json, **kwargs):
    """Train a super-resolution query head on the train split of DATA (each signal at its native grid).

    With --target-data the head learns from real pairs (DATA low, TARGET high resolution); without
    it, from DATA's signals downsampled by random --scales (self-supervised). The head reads the
    frozen field's features and latent and the observed samples around each query; it is
    validated on the val split and the best head is kept. Interrupted training resumes when the
    same command is run again.
    """
    from funcml.data import LoadOptions, load_signals
    from funcml.devices import resolve_device
    from funcml.encoders.model import FieldModel
    from funcml.errors import DataError
    from funcml.query.estimator import QueryRegressor
    from funcml.grids import default_align
    from funcml.query.pairs import downsampled_pairs, paired_pairs, parse_scales

    est = QueryRegressor("superres", **head_params(kwargs), progress=not as_json)
    scale_range = parse_scales(scales)
    model = FieldModel.load(model_dir, device=resolve_device(device))
    opts = LoadOptions(split_seed=split_seed, extra=parse_key_values(data_option))
    signals = load_signals(data, opts)
    model.check_signals(signals.signal_shape, allow_other_resolution=True)
    est.head_config(signals.channels, signals.channels)
    align = default_align(signals.dim) if align == "auto" else align
    high = None
    if target_data:
        from funcml.encoders.multires import check_pairs

        high = load_signals(target_data, opts)
        check_pairs(signals, high)
    tr, va = signals.indices("train"), signals.indices("val")
    if len(tr) == 0:
        raise DataError(f"{data}: the train split is empty")

    def pairs(rows, reps):
        if high is not None:
            return paired_pairs(model, signals.get(rows), high.get(rows), align=align, progress=not as_json)
        return downsampled_pairs(model, signals.get(rows), scales=scale_range, repeats=reps, seed=est.seed, align=align,
                                 progress=not as_json)

    source = {"data": signals.fingerprint, "target": None if high is None else high.fingerprint,
              "scales": list(scale_range), "repeats": repeats, "align": align}

    def fit(tmp):
        info(f"encoding training pairs ({'real pairs' if high is not None else f'self-supervised, scales {scales}'})")
        train_pairs, val_pairs = pairs(tr, repeats), (pairs(va, 1) if len(va) else None)
        info(f"training the head on {len(train_pairs)} pairs")
        est.fit(model, train_pairs, grid=signals.spatial_shape, align=align, val=val_pairs, checkpoint_dir=tmp,
                meta=source, restart=overwrite, log=info)

    train_into(out, overwrite, fit, lambda tmp, _: est.write(tmp, training={**source, "spec": signals.spec}))
    if as_json:
        emit_json({"out": str(out), "steps": est.record_["steps"], "seconds": est.record_["seconds"],
                   "best_val_psnr": est.record_["best_val_psnr"], "model_id": model.id})


def register(cli: click.Group) -> None:
    cli.add_command(superres_group)
