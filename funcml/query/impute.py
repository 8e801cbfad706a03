"""Imputation from partial observations: fit only the observed samples, render the whole signal,
and score the hidden part against interpolation and inpainting baselines."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from funcml.data.base import SignalSet
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import decode, fit_latents
from funcml.errors import DataError
from funcml.query.observed import ObservedMasks
from funcml.seeding import generator

BASELINES = ("nearest", "linear", "biharmonic")


def interpolate_missing(x: np.ndarray, observed: np.ndarray, method: str) -> np.ndarray:
    """Fill the hidden samples of one signal ``(C, *spatial)`` from its observed ones (``(*spatial)`` bool).

    ``linear``: piecewise-linear interpolation (1D ``np.interp``; 2D/3D ``scipy.interpolate.griddata``
    on a Delaunay triangulation, nearest-neighbour outside the hull); ``nearest``; ``biharmonic``:
    scikit-image's biharmonic inpainting.
    """
    from scipy.interpolate import griddata

    spatial = x.shape[1:]
    obs = np.asarray(observed, dtype=bool)
    out = np.array(x, dtype=np.float64)
    hidden = ~obs
    if not hidden.any():
        return out.astype(np.float32)
    if method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic

        out = inpaint_biharmonic(out, hidden, channel_axis=0)
        return np.clip(out, 0, 1).astype(np.float32)
    if len(spatial) == 1:
        t = np.arange(spatial[0])
        for c in range(len(out)):
            if method == "linear":
                out[c, hidden] = np.interp(t[hidden], t[obs], out[c, obs])
            else:
                near = np.abs(t[hidden][:, None] - t[obs][None]).argmin(axis=1)
                out[c, hidden] = out[c, obs][near]
        return out.astype(np.float32)
    pts_obs = np.argwhere(obs).astype(np.float64)
    pts_hid = np.argwhere(hidden).astype(np.float64)
    for c in range(len(out)):
        vals = out[c][obs]
        near = griddata(pts_obs, vals, pts_hid, method="nearest")
        if method == "linear" and len(pts_obs) > len(spatial):
            try:
                lin = griddata(pts_obs, vals, pts_hid, method="linear")
                near = np.where(np.isfinite(lin), lin, near)
            except Exception:  # noqa: BLE001 - Qhull refuses degenerate (e.g. collinear) point sets
                pass
        out[c][hidden] = near
    return np.clip(out, 0, 1).astype(np.float32)


def inpaint_signals(x: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Fill the hidden samples of ``(n, C, *spatial)`` from ``observed`` ``(n, *spatial)``: linear
    interpolation in 1D, biharmonic inpainting in 2D and 3D (the classic estimate of hidden samples)."""
    method = "linear" if x.ndim == 3 else "biharmonic"
    return np.stack([interpolate_missing(x[i], observed[i], method) for i in range(len(x))]) if len(x) else x


def hidden_psnr(pred: np.ndarray, truth: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """PSNR per signal over the hidden samples only: ``(b, C, *S)`` x2 and ``(b, *S)`` -> ``(b,)``."""
    hid = ~np.asarray(observed, dtype=bool)[:, None]
    err = (pred.astype(np.float64) - truth.astype(np.float64)) ** 2 * hid
    mse = err.reshape(len(pred), -1).sum(axis=1) / np.maximum(hid.reshape(len(pred), -1).sum(axis=1) * pred.shape[1], 1)
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / mse)


def impute_evaluate(model, signals: SignalSet, observed: ObservedMasks, *, split: str = "test",
                    config: EncodeConfig | None = None, max_items: int | None = None,
                    baselines: tuple[str, ...] = BASELINES, progress: bool = True,
                    log: Callable[[str], None] | None = None, heads: dict | None = None
                    ) -> tuple[dict, dict[str, np.ndarray]]:
    """Encode the observed samples of ``split``, render every sample, score the hidden ones.

    Returns ``(metrics, examples)``: metrics ``{method: {"psnr_hidden", "psnr_all", "ssim_all"}}`` for ``funcml``
    and each baseline (means over signals), the hidden fraction and the count; examples for a figure.
    ``heads`` ``{name: QueryRegressor}`` (heads for ``model``, e.g. ``funcml_head``) add rows that
    read the same latents and observed samples (which they keep as they are).
    """
    from funcml.progress import progress_bar

    from funcml.metrics import psnr, ssim

    model.check_signals(signals.signal_shape, allow_other_resolution=True)
    idx = signals.indices(split)
    if max_items is not None:
        idx = idx[:max_items]
    if len(idx) == 0:
        raise DataError(f"{signals.spec}: the {split} split is empty")
    if tuple(observed.spatial) != tuple(signals.spatial_shape):
        raise DataError(f"the observed masks are on a {observed.spatial} grid but the signals on {signals.spatial_shape}")
    cfg = (config or model.encode_defaults).validate()
    methods = ("funcml", *(heads or {}), *baselines)
    scores = {m: {"psnr_hidden": [], "psnr_all": [], "ssim_all": []} for m in methods}
    hidden_fraction = []
    examples: dict[str, list] = {}
    bar = progress_bar(total=len(idx), desc="impute", unit="sig", disable=not progress, leave=False)
    for k, start in enumerate(range(0, len(idx), cfg.batch_size)):
        part = idx[start:start + cfg.batch_size]
        x = signals.get(part)
        obs = observed.masks(part)
        xt = torch.from_numpy(x).to(model.device)
        w = torch.from_numpy(obs.reshape(len(part), -1).astype(np.float32)).to(model.device)
        phi = fit_latents(model.net, xt, cfg, generator=generator(cfg.seed, "encode", k), weights=w)
        preds = {"funcml": decode(model.net, phi, tuple(signals.spatial_shape)).cpu().numpy()}
        for name, head in (heads or {}).items():
            preds[name] = head.predict(phi.cpu().numpy(), signals.spatial_shape, signals=x * obs[:, None],
                                       observed=obs, grid=signals.spatial_shape)
        for m in baselines:
            preds[m] = np.stack([interpolate_missing(x[i], obs[i], m) for i in range(len(part))])
        for m, p in preds.items():
            scores[m]["psnr_hidden"].append(hidden_psnr(p, x, obs))
            scores[m]["psnr_all"].append(psnr(p, x))
            scores[m]["ssim_all"].append(ssim(p, x))
        hidden_fraction.append(1.0 - obs.reshape(len(part), -1).mean(axis=1))
        n_show = min(6 - len(examples.get("truth", ())), len(part))
        if n_show > 0:
            new = {"observed": x[:n_show], **{m: p[:n_show] for m, p in preds.items()}, "truth": x[:n_show],
                   "_mask": obs[:n_show]}
            examples = {k: np.concatenate([examples[k], v]) if k in examples else v for k, v in new.items()}
        bar.update(len(part))
    bar.close()
    metrics: dict = {"split": split, "count": int(len(idx)), "observed": observed.tag,
                     "hidden_fraction": float(np.mean(np.concatenate(hidden_fraction))),
                     "encode": {"steps": cfg.steps, "inner_lr": cfg.inner_lr}}
    for m in methods:
        metrics[m] = {key: float(np.mean(np.concatenate(v))) for key, v in scores[m].items()}
    if log:
        log(f"{split}: {len(idx)} signals, {100 * metrics['hidden_fraction']:.0f}% hidden ({observed.tag})")
        for m in methods:
            log(f"  {m:>11}: hidden PSNR {metrics[m]['psnr_hidden']:6.2f} dB  whole-signal PSNR "
                f"{metrics[m]['psnr_all']:6.2f} dB  SSIM {metrics[m]['ssim_all']:.4f}")
    return metrics, examples
