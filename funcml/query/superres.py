"""Super-resolution evaluation: encode low-resolution signals, render them at the high resolution,
compare with the real high-resolution signals, next to classic interpolation of the same inputs."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from funcml.data.base import SignalSet
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents, reconstruction_psnr
from funcml.encoders.multires import check_pairs
from funcml.errors import DataError
from funcml.metrics import psnr, ssim
from funcml.grids import default_align
from funcml.query.interpolate import classic_mode, interpolate_signals
from funcml.query.render import render_latents
from funcml.seeding import generator

BASELINES = {1: ("nearest", "linear"), 2: ("nearest", "bilinear", "bicubic"), 3: ("nearest", "trilinear")}


def _predictions(model, phi: torch.Tensor, x_low: np.ndarray, out_shape, align: str, heads: dict | None,
                 extra: dict | None) -> dict[str, np.ndarray]:
    """Every method's ``(b, C, *out_shape)`` from the same low-resolution signals and latents."""
    in_shape = x_low.shape[2:]
    preds = {"funcml": render_latents(model.net, phi, in_shape, out_shape, align=align).cpu().numpy()}
    for name, head in (heads or {}).items():
        preds[name] = head.predict(phi.cpu().numpy(), out_shape, signals=x_low, grid=in_shape)
    for name, fn in (extra or {}).items():
        preds[name] = fn(x_low)
    for mode in BASELINES[x_low.ndim - 2]:
        preds[mode] = interpolate_signals(x_low, out_shape, mode, align=align)
    return preds


def _summary(per: dict, methods: tuple[str, ...], fit_then_classic: str, heads: dict | None) -> dict:
    """Means over signals and the gains over the classic interpolation."""
    metrics: dict = {m: {"psnr": float(np.mean(np.concatenate(per[m]["psnr"]))),
                         "ssim": float(np.nanmean(np.concatenate(per[m]["ssim"])))}
                     for m in (*methods, fit_then_classic)}
    base = metrics[fit_then_classic.replace("funcml_fit_", "")]
    for name in ("funcml", *(heads or {})):
        key = "gain_over_classic" if name == "funcml" else f"{name}_gain_over_classic"
        metrics[key] = {k: metrics[name][k] - base[k] for k in ("psnr", "ssim")}
    metrics["gain_between_samples"] = {k: metrics["funcml"][k] - metrics[fit_then_classic][k] for k in ("psnr", "ssim")}
    return metrics


def superres_evaluate(model, low: SignalSet, high: SignalSet, *, split: str = "test", align: str | None = None,
                      config: EncodeConfig | None = None, max_items: int | None = None, progress: bool = True,
                      log: Callable[[str], None] | None = None, heads: dict | None = None,
                      extra: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None
                      ) -> tuple[dict, dict[str, np.ndarray]]:
    """Compare funcml super-resolution with interpolation on ``split`` of a (low, high) pair of data sets.

    Returns ``(metrics, examples)``: metrics ``{method: {"psnr", "ssim"}}`` (means over the split;
    ``funcml`` and the baselines of :data:`BASELINES`), plus counts, grids, the low-resolution
    reconstruction PSNR and ``funcml_fit_<classic>``: the classic interpolation (bicubic in 2D) of
    funcml's own low-resolution reconstruction. That separates the two errors of ``funcml``: how well
    the fields fit their samples (``funcml_fit_<classic>`` minus ``<classic>``) and how well they fill
    the space between them (``funcml`` minus ``funcml_fit_<classic>``: positive where the field
    interpolates better than the classic method would from the same fitted samples);
    ``examples`` holds up to 6 signals per method for a figure. ``heads`` ``{name: QueryRegressor}``
    (heads for ``model``, e.g. ``funcml_head``) add rows that read the same latents and
    low-resolution signals; ``extra`` adds rows ``{name: low (b, C, *in) -> (b, C, *out)}`` (other
    super-resolution methods on the same inputs).
    """
    from funcml.progress import progress_bar

    check_pairs(low, high)
    model.check_signals(low.signal_shape, allow_other_resolution=True)
    idx = low.indices(split)
    if max_items is not None:
        idx = idx[:max_items]
    if len(idx) == 0:
        raise DataError(f"{low.spec}: the {split} split is empty")
    cfg = (config or model.encode_defaults).validate()
    align = align or default_align(low.dim)
    in_shape, out_shape = low.spatial_shape, high.spatial_shape
    classic = classic_mode(low.dim)
    fit_then_classic = f"funcml_fit_{classic}"
    methods = ("funcml", *(heads or {}), *(extra or {}), *BASELINES[low.dim])
    per: dict[str, dict[str, list]] = {m: {"psnr": [], "ssim": []} for m in (*methods, fit_then_classic)}
    recon_psnr = []
    examples: dict[str, list[np.ndarray]] = {m: [] for m in ("low", "high", *methods)}
    bar = progress_bar(total=len(idx), desc="superres", unit="sig", disable=not progress, leave=False)
    for k, start in enumerate(range(0, len(idx), cfg.batch_size)):
        part = idx[start:start + cfg.batch_size]
        x_low = torch.from_numpy(low.get(part)).to(model.device)
        x_high = high.get(part)
        phi = fit_latents(model.net, x_low, cfg, generator=generator(cfg.seed, "encode", k))
        recon_psnr.append(reconstruction_psnr(model.net, phi, x_low).cpu().numpy())
        x_low_np = x_low.cpu().numpy()
        preds = _predictions(model, phi, x_low_np, out_shape, align, heads, extra)
        fitted = render_latents(model.net, phi, in_shape, in_shape, align=align).cpu().numpy()
        fit_pred = interpolate_signals(fitted, out_shape, classic, align=align)
        for m, pred in (*preds.items(), (fit_then_classic, fit_pred)):
            per[m]["psnr"].append(psnr(pred, x_high))
            per[m]["ssim"].append(ssim(pred, x_high))
        for m, v in {"low": x_low_np, "high": x_high, **preds}.items():
            examples[m] += list(v[:max(0, 6 - len(examples[m]))])
        bar.update(len(part))
    bar.close()
    metrics = _summary(per, methods, fit_then_classic, heads)
    metrics.update({"split": split, "count": int(len(idx)), "low_shape": list(low.signal_shape),
                     "high_shape": list(high.signal_shape), "align": align, "classic": classic,
                     "encode": {"steps": cfg.steps, "inner_lr": cfg.inner_lr},
                     "low_reconstruction_psnr": float(np.mean(np.concatenate(recon_psnr)))})
    if log:
        log(f"{split}: {len(idx)} signals {low.signal_shape} -> {high.signal_shape}")
        for m in (*methods, fit_then_classic):
            log(f"  {m:>11}: PSNR {metrics[m]['psnr']:6.2f} dB  SSIM {metrics[m]['ssim']:.4f}")
    return metrics, {k: np.stack(v) for k, v in examples.items() if len(v)}
