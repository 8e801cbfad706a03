"""Quality checks of attributions: deletion/insertion curves and the model-randomisation check.

Deletion and insertion (Petsiuk et al. 2018, RISE): features are ranked by their attribution
(most positive evidence for the target first); deletion replaces the top fraction f of features by
the baseline and follows the target's probability as f goes from 0 to 1, insertion starts from the
baseline and puts the top features back. A faithful attribution makes the deletion curve fall fast
(low area under the curve) and the insertion curve rise fast (high area), compared with the same
curves for random feature orders. A feature is one latent dimension, or one sample/pixel/voxel
location with all its channels.

The randomisation check (Adebayo et al. 2018, "Sanity checks for saliency maps") compares the
attributions of the trained classifier with those of a copy whose weights are randomised: the
Spearman rank correlation (of absolute values, per signal) must be low; attributions that hardly
change do not explain what the classifier learnt.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from scipy.stats import spearmanr
from funcml.progress import progress_bar


def auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoidal area under curves ``(n, F)`` over ``fractions`` ``(F,)`` from 0 to 1 -> ``(n,)``."""
    return np.trapezoid(curves, fractions, axis=-1)


def feature_importance(attr: torch.Tensor) -> torch.Tensor:
    """``(n, P)`` unchanged, or ``(n, C, *spatial)`` summed over channels to ``(n, prod(spatial))``."""
    if attr.dim() == 2:
        return attr
    return attr.sum(dim=1).flatten(1)


def _masked(x: torch.Tensor, baseline: torch.Tensor, keep_original: torch.Tensor) -> torch.Tensor:
    """Mix ``x`` and ``baseline`` ``(n, *shape)`` by a per-feature mask ``(n, F)`` (True: ``x``)."""
    if x.dim() == 2:
        return torch.where(keep_original, x, baseline)
    m = keep_original.view(x.shape[0], 1, *x.shape[2:])
    return torch.where(m, x, baseline)


def perturbation_curves(proba: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, baseline: torch.Tensor,
                        attr: torch.Tensor, targets: torch.Tensor, *, points: int = 11, random_orders: int = 3,
                        seed: int = 0, batch_size: int = 256, progress: bool = False, desc: str = "curves") -> dict:
    """Deletion and insertion curves of the target probability, for the attribution order and random ones.

    Args:
        proba: ``(B, *shape) -> (B, K)`` class probabilities (through the encoder for signals).
        x, baseline: inputs and the values that replace deleted features, ``(n, *shape)``.
        attr: attributions ``(n, *shape)``; targets: ``(n,)`` output columns.
        points: fractions ``0, 1/(points-1), ..., 1`` of features removed/inserted.
        random_orders: random feature orders averaged for the baseline curves.
        batch_size: inputs per ``proba`` call.

    Returns a dict with ``fractions``; for ``deletion`` and ``insertion`` each: ``auc`` and
    ``auc_random`` (means over inputs), ``auc_per_input`` and ``auc_random_per_input`` ``(n,)``,
    ``curve`` and ``curve_random`` (mean curves), ``better_than_random`` (fraction of inputs whose
    attribution order beats the random orders: lower deletion AUC, higher insertion AUC).
    """
    n = len(x)
    fractions = np.linspace(0.0, 1.0, int(points))
    imp = feature_importance(attr)
    n_feat = imp.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    orders = [torch.argsort(imp, dim=1, descending=True, stable=True)]
    orders += [torch.stack([torch.randperm(n_feat, generator=gen) for _ in range(n)]) for _ in range(random_orders)]
    ks = [int(round(f * n_feat)) for f in fractions]
    targets = torch.as_tensor(targets, dtype=torch.long)
    # the end points are the same for every order: the input itself and the baseline
    p_x = _batched(proba, x, targets, batch_size)
    p_b = _batched(proba, baseline, targets, batch_size)
    curves = {mode: np.zeros((len(orders), n, len(ks))) for mode in ("deletion", "insertion")}
    jobs = [(o, j) for o in range(len(orders)) for j, k in enumerate(ks) if 0 < k < n_feat]
    for o, j in progress_bar(jobs, desc=desc, disable=not progress, leave=False):
        top = torch.zeros(n, n_feat, dtype=torch.bool)
        top.scatter_(1, orders[o][:, :ks[j]], True)
        for mode in ("deletion", "insertion"):
            keep = ~top if mode == "deletion" else top
            curves[mode][o, :, j] = _batched(proba, _masked(x, baseline, keep.view(n, -1)), targets, batch_size)
    for j, k in enumerate(ks):
        if k == 0 or k >= n_feat:
            full_x = (k == 0)
            curves["deletion"][:, :, j] = p_x if full_x else p_b
            curves["insertion"][:, :, j] = p_b if full_x else p_x
    report: dict = {"fractions": fractions.tolist(), "features": int(n_feat), "random_orders": int(random_orders)}
    for mode, c in curves.items():
        a = auc(fractions, c)  # (orders, n)
        a_rand = a[1:].mean(axis=0) if random_orders else np.full(n, np.nan)
        better = a[0] < a_rand if mode == "deletion" else a[0] > a_rand
        report[mode] = {
            "auc": float(a[0].mean()), "auc_random": float(a_rand.mean()),
            "auc_per_input": a[0].tolist(), "auc_random_per_input": a_rand.tolist(),
            "curve": c[0].mean(axis=0).tolist(),
            "curve_random": c[1:].mean(axis=(0, 1)).tolist() if random_orders else [],
            "better_than_random": float(better.mean()),
        }
    return report


def _batched(proba, x: torch.Tensor, targets: torch.Tensor, batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            p = proba(x[s:s + batch_size])
            out.append(p.gather(1, targets[s:s + batch_size, None])[:, 0].double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, absolute: bool = True) -> np.ndarray:
    """Spearman rank correlation per input ``(n,)`` of attributions ``a`` and ``b`` ``(n, *shape)``
    (of their absolute values by default). Constant attributions give NaN."""
    a = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    b = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    if absolute:
        a, b = np.abs(a), np.abs(b)
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        if np.ptp(a[i]) > 0 and np.ptp(b[i]) > 0:
            out[i] = spearmanr(a[i], b[i]).statistic
    return out


def randomisation_summary(trained: torch.Tensor, randomised: torch.Tensor) -> dict:
    """Rank correlations of trained vs randomised-classifier attributions (absolute and signed)."""
    r_abs = rank_correlation(trained, randomised, absolute=True)
    r_sgn = rank_correlation(trained, randomised, absolute=False)
    return {"spearman_abs": _nanmean(r_abs), "spearman": _nanmean(r_sgn), "spearman_abs_median": _nanmedian(r_abs),
            "spearman_abs_per_input": r_abs.tolist()}


def _nanmean(v: np.ndarray) -> float:
    return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")


def _nanmedian(v: np.ndarray) -> float:
    return float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")
