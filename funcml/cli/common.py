"""Shared CLI plumbing: error handling, ``--json`` output, common options and parsers."""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable

import click
import numpy as np

from funcml.errors import ConfigError


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one JSON object on the last line of stdout (NaN/Inf become null)."""
    click.echo(json.dumps(_clean(obj), sort_keys=True))


def _clean(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    return obj


def info(message: str) -> None:
    """Human-readable progress/status (stderr, so stdout stays clean for --json)."""
    click.echo(message, err=True)


def parse_resolution(text: str | None) -> tuple[int, ...] | None:
    """``"64"`` -> (64,), ``"64x64"`` -> (64, 64), ``"32x32x32"`` -> (32, 32, 32)."""
    if text is None:
        return None
    try:
        parts = tuple(int(p) for p in str(text).lower().replace(",", "x").split("x"))
    except ValueError:
        raise ConfigError(f"--resolution must look like 64, 64x64 or 32x32x32; got {text!r}") from None
    if not parts or len(parts) > 3 or any(p < 1 for p in parts):
        raise ConfigError(f"--resolution must have 1 to 3 positive sizes; got {text!r}")
    return parts


def parse_key_values(items: tuple[str, ...], option: str = "--data-option") -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} takes KEY=VALUE; got {item!r}")
        out[key.strip()] = value.strip()
    return out


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (click's range check lets NaN through)."""

    def convert(self, value, param, ctx):
        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return rv


FINITE_FLOAT = FiniteFloatRange()


def json_option(f: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object on the last line of stdout.")(f)


def device_option(f: Callable) -> Callable:
    return click.option("--device", default="auto", show_default=True,
                        help="auto (CUDA when available), cpu or cuda[:N].")(f)


def precision_option(f: Callable) -> Callable:
    return click.option("--precision", type=click.Choice(["auto", "fp32", "tf32", "bf16"]), default=None,
                        help="Matmul precision: auto (default: tf32 on CUDA, fp32 on CPU), fp32 (opts out of TF32 "
                             "on a GPU), tf32 or bf16 (both change results slightly; see docs/gpu.md).")(f)


def backend_option(f: Callable) -> Callable:
    return click.option("--backend", type=click.Choice(["auto", "reference", "fused", "cpu"]), default=None,
                        help="Implementation of the fitting: auto (default: cpu on a CPU where funcml's C loops are "
                             "built, else fused), reference (plain autograd), fused (hand-derived reverse) or cpu "
                             "(fused with C loops). Same math; float rounding differs.")(f)


def overwrite_option(f: Callable) -> Callable:
    return click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")(f)


def data_options(f: Callable) -> Callable:
    """Options that shape how a DATA argument is read."""
    decorators = [
        click.option("--resolution", default=None, help="Grid to resample signals to: 187, 64, 64x64, 32x32x32."),
        click.option("--channels", type=click.IntRange(1, 4), default=None, help="Force 1 (grey) or 3 (RGB) channels for image folders."),
        click.option("--split-seed", type=int, default=0, show_default=True, help="Seed of random splits (sources without official splits)."),
        click.option("--val-fraction", type=FiniteFloatRange(0, 1, max_open=True), default=0.1, show_default=True),
        click.option("--test-fraction", type=FiniteFloatRange(0, 1, max_open=True), default=0.2, show_default=True),
        click.option("--data-option", "data_option", multiple=True, metavar="KEY=VALUE",
                     help="Source-specific option, e.g. test_records=100,101 (repeatable)."),
    ]
    for d in reversed(decorators):
        f = d(f)
    return f


def load_data(spec: str, resolution: tuple[int, ...] | None, channels: int | None, split_seed: int,
              val_fraction: float, test_fraction: float, data_option: tuple[str, ...]):
    """Load DATA with the data options; the source's :class:`DataWarning` s become ``warning: ...`` lines."""
    import warnings

    from funcml.data import LoadOptions, load_signals
    from funcml.errors import DataWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        signals = load_signals(spec, LoadOptions(resolution=resolution, split_seed=split_seed, val_fraction=val_fraction,
                                                 test_fraction=test_fraction, channels=channels,
                                                 extra=parse_key_values(data_option)))
    for w in caught:
        if issubclass(w.category, DataWarning):
            info(f"warning: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    return signals


def exit_with(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


class DefaultGroup(click.Group):
    """A click group that runs ``default`` when the first argument names none of its commands.

    ``funcml superres LOW HIGH ...`` stays the evaluation it always was, next to ``funcml superres train``.
    """

    def __init__(self, *args: Any, default: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default, *args]
        return super().parse_args(ctx, args)
