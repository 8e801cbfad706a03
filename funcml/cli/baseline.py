"""``funcml baseline``: a ResNet-18-style CNN on the raw signals (the pixel baseline for classification)."""

from __future__ import annotations

import click

from funcml.cli.common import (FiniteFloatRange, data_options, device_option, emit_json, info, json_option,
                               load_data, overwrite_option, parse_resolution)


@click.command("baseline")
@click.argument("data")
@click.option("--out", default=None, type=click.Path(),
              help="Folder for the best weights, metrics.json, predictions.csv and figures (enables resuming).")
@click.option("--epochs", type=int, default=30, show_default=True)
@click.option("--width", type=int, default=64, show_default=True, help="Channels of the first stage (64 = ResNet-18).")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=FiniteFloatRange(0, min_open=True), default=1e-3, show_default=True, help="Adam learning rate (divided by 10 at 50 % and 75 %).")
@click.option("--weight-decay", type=FiniteFloatRange(0), default=0.0, show_default=True)
@click.option("--select-metric", type=click.Choice(["auto", "accuracy", "auc", "macro_f1", "balanced_accuracy", "loss"]),
              default="auto", show_default=True, help="Validation metric that picks the epoch.")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True)
@click.option("--max-minutes", type=FiniteFloatRange(0, min_open=True), default=None, help="Stop after this much training time.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_option
@device_option
@json_option
@data_options
def baseline_command(data, out, epochs, width, batch_size, lr, weight_decay, select_metric, class_weight, max_minutes,
                     seed, overwrite, device, as_json, resolution, channels, split_seed, val_fraction, test_fraction,
                     data_option):
    """Train a ResNet-18-style CNN (1D, 2D or 3D by the data) on the raw signals of DATA with the same
    splits and metrics as `funcml classify`, and report test accuracy, AUC and the training time."""
    from funcml.cli.classify import format_metrics
    from funcml.devices import resolve_device
    from funcml.tasks.baseline import train_pixel_baseline

    signals = load_data(data, parse_resolution(resolution), channels, split_seed, val_fraction, test_fraction,
                        data_option)
    dev = resolve_device(device)
    info(f"pixel baseline: ResNet-18-style {signals.dim}-D CNN (width {width}) on {signals.name} "
         f"{signals.signal_shape}, {epochs} epochs, device {dev}")
    report = train_pixel_baseline(signals, width=width, epochs=epochs, batch_size=batch_size, lr=lr,
                                  weight_decay=weight_decay, select_metric=select_metric,
                                  class_weight=None if class_weight == "none" else class_weight, device=dev, seed=seed,
                                  out=out, overwrite=overwrite, max_minutes=max_minutes, progress=not as_json, log=info)
    info(f"trained {report['epochs_done']} epochs in {report['train_seconds']:.1f} s; best epoch {report['best_epoch']} "
         f"by val {report['select_metric']}")
    for name in ("val", "test"):
        if name in report:
            for line in format_metrics(name, report[name]):
                info(line)
    if as_json:
        emit_json(report)


def register(cli: click.Group) -> None:
    cli.add_command(baseline_command)
