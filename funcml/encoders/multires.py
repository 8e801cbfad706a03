"""Meta-training that makes fields good *between* samples (for super-resolution).

Plain meta-training asks the adapted field to reproduce its own samples, so nothing constrains it
between them. Here the inner loop still fits the low-resolution samples (as encoding does at test
time), but the outer loss compares the adapted field with a *higher-resolution* version of the same
signal at its own sample positions, which fall between the low-resolution ones (sub-pixel
supervision):

    phi = adapt(f, low-resolution samples)                       (G inner steps, as in CAVIA)
    L_outer = MSE(f(c_high; phi), x_high)                        c_high: high-res positions in the
                                                                 low-res fitting frame (funcml.grids)

Two sources of high-resolution targets:

* ``targets``: a second :class:`SignalSet` holding the same signals at a higher resolution, in the
  same order (e.g. BreastMNIST 28 and 64);
* ``downsample=F``: self-supervised: the inner loop sees the training signals downsampled by ``F``
  and the outer loss asks for the signals at their own resolution (no extra data needed).

``target_coords=K`` supervises a random subset of K high-resolution positions per step (cheaper).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from funcml.backends import Execution
from funcml.data.base import SignalSet
from funcml.data.transforms import resize_signals
from funcml.encoders.config import FieldConfig, TrainConfig
from funcml.encoders.coords import make_grid, signals_to_values
from funcml.encoders.fitting import fit_latents
from funcml.encoders.meta import MetaStats, adapt_latents, draw_subsets, per_signal_mse, psnr_from_mse
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.encoders.trainer import MetaTrainer
from funcml.errors import ConfigError, DataError
from funcml.grids import ALIGNS, query_grid
from funcml.seeding import generator


@dataclass(frozen=True)
class MultiResConfig:
    """What the outer loss supervises.

    Attributes:
        mode: ``paired`` (a second data set at a higher resolution) or ``downsample``.
        factor: ``downsample`` only: the inner loop sees signals downsampled by this factor.
        target_coords: supervise this many random high-resolution positions per step (None: all).
        align: sampling convention between the grids (``centers`` for pixels, ``corners`` for 1D).
        target_spec, target_fingerprint: the paired data (provenance, resume checks).
    """

    mode: str
    factor: float | None = None
    target_coords: int | None = None
    align: str = "centers"
    target_spec: str | None = None
    target_fingerprint: str | None = None

    def validate(self) -> "MultiResConfig":
        if self.mode not in ("paired", "downsample"):
            raise ConfigError(f"multi-resolution mode must be paired or downsample; got {self.mode!r}")
        if self.mode == "downsample" and not (self.factor and self.factor > 1):
            raise ConfigError(f"--downsample must be > 1; got {self.factor}")
        if self.target_coords is not None and self.target_coords < 1:
            raise ConfigError(f"--target-coords must be >= 1; got {self.target_coords}")
        if self.align not in ALIGNS:
            raise ConfigError(f"align must be one of {ALIGNS}; got {self.align!r}")
        return self


def cross_resolution_losses(net: ModulatedSiren, coords_in: torch.Tensor, signals_in: torch.Tensor,
                            coords_out: torch.Tensor, values_out: torch.Tensor,
                            subsets: Sequence[torch.Tensor | None], inner_lr: float, first_order: bool = False,
                            execution: Execution | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-signal outer losses ``(B,)`` at ``coords_out`` after adapting to ``signals_in``, and last inner losses.

    ``signals_in`` ``(B, C, *spatial)`` lie on ``coords_in`` ``(N, d)``; ``values_out`` ``(B, M, C)``
    are the targets at ``coords_out`` ``(M, d)``. With ``coords_out = coords_in`` and the same
    values this is the ordinary meta-loss (:func:`funcml.encoders.meta.meta_losses`). ``execution``: the
    backend of the inner loop.
    """
    values = signals_to_values(signals_in)
    phi, inner = adapt_latents(net, coords_in, values, subsets, inner_lr, create_graph=not first_order,
                               execution=execution)
    outer = per_signal_mse(net(coords_out, phi), values_out)
    return outer, inner


def low_resolution_size(spatial: Sequence[int], factor: float) -> tuple[int, ...]:
    """``round(n / factor)`` per axis (at least 2)."""
    return tuple(max(2, int(round(n / factor))) for n in spatial)


class MultiResTrainer(MetaTrainer):
    """:class:`MetaTrainer` whose outer loss supervises the field between the fitted samples.

    Args:
        signals: the data the inner loop fits (and the model's grid): the low resolution in
            ``paired`` mode, the full resolution in ``downsample`` mode.
        targets: ``paired`` mode: the same signals at a higher resolution, same order and splits.
        multires: see :class:`MultiResConfig`. Other arguments as for :class:`MetaTrainer`.
    """

    def __init__(self, field: FieldConfig, train: TrainConfig, signals: SignalSet, out: str | Path,
                 device: torch.device | str = "cpu", *, multires: MultiResConfig, targets: SignalSet | None = None,
                 resume: bool | None = None, overwrite: bool = False, progress: bool = True) -> None:
        self.multires = multires.validate()
        self.targets = targets
        if multires.mode == "paired":
            if targets is None:
                raise ConfigError("paired multi-resolution training needs the high-resolution data")
            check_pairs(signals, targets)
            self.multires = MultiResConfig(**{**asdict(multires), "target_spec": targets.spec,
                                              "target_fingerprint": targets.fingerprint})
        elif targets is not None:
            raise ConfigError("pass either high-resolution target data or --downsample, not both")
        super().__init__(field, train, signals, out, device, resume=resume, overwrite=overwrite, progress=progress)
        spatial = signals.spatial_shape
        if self.multires.mode == "paired":
            self.in_shape, self.out_shape = tuple(spatial), tuple(targets.spatial_shape)
        else:
            self.in_shape, self.out_shape = low_resolution_size(spatial, self.multires.factor), tuple(spatial)
        self._target_cache: dict[int, torch.Tensor] = {}
        self._coords: tuple[torch.Tensor, torch.Tensor] | None = None

    # -- bookkeeping ----------------------------------------------------------------------------
    def _config_record(self) -> dict:
        return {**super()._config_record(), "multires": asdict(self.multires)}

    def _model(self, net: ModulatedSiren, step: int, val: float | None) -> FieldModel:
        model = super()._model(net, step, val)
        model.training["multires"] = {**asdict(self.multires), "inner_grid": list(self.in_shape),
                                      "target_grid": list(self.out_shape),
                                      "validation": "super-resolution PSNR (inner grid -> target grid)"}
        return model

    # -- data -----------------------------------------------------------------------------------
    def _grids(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._coords is None:
            c_in = make_grid(self.in_shape, device=device)
            c_out = query_grid(self.in_shape, self.out_shape, align=self.multires.align, device=device)
            self._coords = (c_in, c_out)
        return self._coords

    def _pair(self, x: torch.Tensor, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(inner signals on the inner grid, targets on the target grid) for signals ``indices``."""
        if self.multires.mode == "downsample":
            low = resize_signals(x.detach().cpu().numpy(), self.in_shape)
            return torch.from_numpy(low).to(x.device), x
        high = torch.from_numpy(self.targets.get(indices)).to(x.device)
        return x, high

    # -- hooks ----------------------------------------------------------------------------------
    def meta_gradient(self, net, coords, x, subsets, indices, step) -> MetaStats:
        cfg = self.cfg
        x_in, x_out = self._pair(x, indices)
        c_in, c_out = self._grids(x.device)
        if self.multires.mode == "downsample":  # the given subsets index the full grid: draw inner-grid ones
            subsets = draw_subsets(c_in.shape[0], cfg.context_ratio, cfg.inner_steps,
                                   generator(cfg.seed, "context", step), x.device)
        values_out = signals_to_values(x_out)
        if self.multires.target_coords and self.multires.target_coords < c_out.shape[0]:
            g = generator(cfg.seed, "context", step, 1)
            pick = torch.randperm(c_out.shape[0], generator=g)[: self.multires.target_coords].to(x.device)
            c_out, values_out = c_out[pick], values_out[:, pick]
        stats = MetaStats()
        b = x.shape[0]
        mb = cfg.micro_batch_size or b
        for start in range(0, b, mb):
            sl = slice(start, start + mb)
            outer, inner = cross_resolution_losses(net, c_in, x_in[sl], c_out, values_out[sl], subsets, cfg.inner_lr,
                                                   cfg.first_order, Execution.of(cfg, x.device))
            (outer.sum() / cfg.batch_size).backward()
            stats.add(outer.detach(), inner)
        return stats

    def validation_score(self, net, val_signals, enc_cfg) -> float:
        """Mean super-resolution PSNR of the validation signals (encode the inner grid, render the target grid)."""
        scores = []
        c_in, c_out = self._grids(val_signals.device)
        for k, start in enumerate(range(0, len(val_signals), enc_cfg.batch_size)):
            x = val_signals[start:start + enc_cfg.batch_size]
            idx = self.val_idx[start:start + len(x)]
            x_in, x_out = self._pair(x, idx)
            phi = fit_latents(net, x_in, enc_cfg, generator=generator(enc_cfg.seed, "validate", k))
            with torch.no_grad():
                pred = net(c_out, phi).clamp(0.0, 1.0)
            scores.append(psnr_from_mse(per_signal_mse(pred, signals_to_values(x_out))))
        return float(torch.cat(scores).mean())


def check_pairs(low: SignalSet, high: SignalSet) -> None:
    """Refuse data that cannot be the same signals at two resolutions (count, splits, labels, kind)."""
    if len(low) != len(high):
        raise DataError(f"{low.spec} holds {len(low)} signals but {high.spec} holds {len(high)}: the two must be the "
                        f"same signals, in the same order, at two resolutions")
    if low.dim != high.dim or low.channels != high.channels:
        raise DataError(f"{low.spec} has {low.channels}-channel {low.dim}-D signals but {high.spec} has "
                        f"{high.channels}-channel {high.dim}-D ones")
    if not np.array_equal(low.splits, high.splits):
        raise DataError(f"{low.spec} and {high.spec} assign different splits: they are not the same signals in the same order")
    if low.labels is not None and high.labels is not None and not np.array_equal(low.labels, high.labels):
        raise DataError(f"{low.spec} and {high.spec} have different labels: they are not the same signals in the same order")
    if any(h < l for h, l in zip(high.spatial_shape, low.spatial_shape)):
        raise DataError(f"{high.spec} ({high.spatial_shape}) must not be coarser than {low.spec} ({low.spatial_shape})")


def multires_trainer(field: FieldConfig, train: TrainConfig, signals: SignalSet, out, device, *,
                     target_data: str | None = None, downsample: float | None = None, target_coords: int | None = None,
                     align: str | None = None, resume: bool | None = None, overwrite: bool = False,
                     progress: bool = True, extra: dict | None = None, split_seed: int = 0,
                     val_fraction: float = 0.1, test_fraction: float = 0.2) -> MultiResTrainer:
    """Build a :class:`MultiResTrainer` from command-line style arguments (``funcml train --target-data``)."""
    from funcml.data import LoadOptions, load_signals
    from funcml.grids import default_align

    if (target_data is None) == (downsample is None):
        raise ConfigError("pass either --target-data or --downsample, not both")
    align = align or default_align(signals.dim)
    targets = None
    if target_data is not None:
        targets = load_signals(target_data, LoadOptions(split_seed=split_seed, val_fraction=val_fraction,
                                                        test_fraction=test_fraction,
                                                        extra=dict(extra or {})))
        cfg = MultiResConfig(mode="paired", target_coords=target_coords, align=align)
    else:
        cfg = MultiResConfig(mode="downsample", factor=downsample, target_coords=target_coords, align=align)
    return MultiResTrainer(field, train, signals, out, device, multires=cfg, targets=targets, resume=resume,
                           overwrite=overwrite, progress=progress)
