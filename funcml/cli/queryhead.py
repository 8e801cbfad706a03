"""CLI plumbing shared by the commands that train a query head (superres train, impute train, segment train)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import click

from funcml.cli.common import FiniteFloatRange, info


def head_options(*, inputs: str, base: str | None, hidden: int, layers: int, neighbours: int, steps: int,
                 batch_size: int, coords: int, lr: float, encoder_depth: int = 3, feature_proj: int = 64) -> Callable:
    """The head's architecture and training options, with per-command defaults."""
    decorators = [
        click.option("--inputs", default=inputs, show_default=True,
                     help="What the head reads at x, comma separated: features (the field's hidden states and "
                          "value), latent (phi and a Fourier encoding of x), observed (the observed samples around "
                          "x); both = features,latent."),
        click.option("--neighbours", type=click.IntRange(1, 16), default=neighbours, show_default=True,
                     help="Observed samples per axis read around x (k; k**d in all)."),
        click.option("--encoder", type=click.Choice(["conv", "unet"]), default="conv", show_default=True,
                     help="Encoder of the observed grid whose features are read with the samples: a stack of "
                          "convolutions, or a U-Net (context as wide as the signal)."),
        click.option("--encoder-depth", type=click.IntRange(0, 16), default=encoder_depth, show_default=True,
                     help="Convolutions (conv) or levels (unet) of the encoder (0: no encoder, raw samples only)."),
        click.option("--encoder-width", type=click.IntRange(1, 1024), default=64, show_default=True,
                     help="Channels of the encoder (unet: at full resolution, doubling per level)."),
        click.option("--encoder-dilation", type=click.IntRange(1, 8), default=1, show_default=True,
                     help="Dilation growth per conv encoder layer (2: 1, 2, 4, ... samples; a wider receptive "
                          "field)."),
        click.option("--feature-layers", type=click.Choice(["last", "all"]), default="all", show_default=True),
        click.option("--feature-proj", type=click.IntRange(0, 4096), default=feature_proj, show_default=True,
                     help="Width the field's features are projected to before the MLP (0: none)."),
        click.option("--hidden", type=click.IntRange(1, 8192), default=hidden, show_default=True, help="MLP width."),
        click.option("--layers", type=click.IntRange(0, 32), default=layers, show_default=True,
                     help="MLP hidden layers."),
        click.option("--steps", type=click.IntRange(1), default=steps, show_default=True,
                     help="Training steps (the most; --max-minutes may stop earlier)."),
        click.option("--max-minutes", type=FiniteFloatRange(0, min_open=True), default=None,
                     help="Wall-time budget of the head training (the learning rate decays over it)."),
        click.option("--batch-size", type=click.IntRange(1), default=batch_size, show_default=True,
                     help="Signals per step."),
        click.option("--coords-per-signal", type=click.IntRange(1), default=coords, show_default=True,
                     help="Output positions per signal and step."),
        click.option("--lr", type=FiniteFloatRange(0, min_open=True), default=lr, show_default=True),
        click.option("--seed", type=int, default=0, show_default=True),
    ]
    if base is not None:
        decorators.insert(4, click.option(
            "--base", type=click.Choice(["none", "classic", "average", "field"]), default=base, show_default=True,
            help="The head predicts a correction to: classic interpolation of the observed samples (hidden "
                 "samples inpainted first: biharmonic 2D/3D, linear 1D), their local average, the field's value, "
                 "or nothing."))

    def wrap(f: Callable) -> Callable:
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


HEAD_KEYS = ("inputs", "neighbours", "encoder", "encoder_depth", "encoder_width", "encoder_dilation", "feature_layers",
             "feature_proj", "hidden", "layers", "steps", "max_minutes", "batch_size", "coords_per_signal", "lr", "seed",
             "base")


def head_params(kwargs: dict) -> dict:
    """The estimator settings among a command's keyword arguments (removed from ``kwargs``)."""
    return {k: kwargs.pop(k) for k in HEAD_KEYS if k in kwargs}


def train_into(out: str | Path, overwrite: bool, fit: Callable[[Path], dict | None], write: Callable[[Path, dict], None]
               ) -> None:
    """Train into ``OUT.partial`` (checkpoints there; kept when interrupted, resumed by the same command)
    and rename it to ``OUT`` when the head is written."""
    from funcml.errors import OutputExistsError
    from funcml.io import atomic_dir
    from funcml.io.lock import OutputLock

    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    lock = OutputLock(out)
    try:
        with atomic_dir(out, overwrite=overwrite, keep_partial=True) as tmp:
            record = fit(tmp) or {}
            write(tmp, record)
            shutil.rmtree(tmp / "checkpoints", ignore_errors=True)
    finally:
        lock.release()
    info(f"head -> {out}")
