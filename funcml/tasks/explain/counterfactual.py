"""Counterfactual latents: move phi along the classifier's gradient until the prediction flips.

For each latent ``phi`` with predicted class (or, multi-label, the explained label) c, gradient steps
lower the log-odds of c (raise it for a label predicted absent) in the classifier's standardised
coordinates ``u = (phi - mean) / scale``: ``u <- u - step * g / |g|`` (normalised steps of length
``step``, in units of latent standard deviations). A latent stops as soon as c is no longer
predicted and its probability is at most ``1 - confidence``. Decoding the result and subtracting the
decoded original shows what in the signal would have to change for the other decision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from funcml.tasks.explain.scores import LatentScores, log_odds_from_logits


@dataclass
class Counterfactuals:
    """Results for n latents: ``latents (n, P)``, ``flipped (n,)``, ``steps (n,)``, ``distance (n,)``
    (L2 in standardised units), ``proba_before``/``proba_after`` ``(n, K)``."""

    latents: np.ndarray
    flipped: np.ndarray
    steps: np.ndarray
    distance: np.ndarray
    proba_before: np.ndarray
    proba_after: np.ndarray

    def summary(self) -> dict:
        f = self.flipped
        return {"count": int(len(f)), "flipped": float(f.mean()) if len(f) else float("nan"),
                "steps_mean": float(self.steps[f].mean()) if f.any() else float("nan"),
                "distance_mean": float(self.distance[f].mean()) if f.any() else float("nan"),
                "distance_per_input": self.distance.tolist(), "flipped_per_input": f.astype(bool).tolist()}


def _is_flipped(proba: torch.Tensor, cls: torch.Tensor, sign: torch.Tensor, multilabel: bool,
                confidence: float) -> torch.Tensor:
    p_c = proba.gather(1, cls[:, None])[:, 0]
    if multilabel:
        # a label predicted present must drop to <= 1 - confidence; one predicted absent must rise to >= confidence
        return torch.where(sign > 0, p_c <= 1 - confidence, p_c >= confidence)
    return (proba.argmax(dim=1) != cls) & (p_c <= 1 - confidence)


def latent_counterfactuals(scores: LatentScores, z: np.ndarray | torch.Tensor, classes: np.ndarray, *,
                           step: float = 0.1, max_steps: int = 500, confidence: float = 0.5) -> Counterfactuals:
    """Counterfactual latents of ``z`` ``(n, P)`` away from output columns ``classes`` ``(n,)``.

    Needs a differentiable classifier (``scores.module``). ``confidence`` in [0.5, 1): how far past
    the decision boundary to go (0.5: just across it).
    """
    if scores.module is None:
        raise TypeError("counterfactuals need a differentiable classifier")
    module = scores.module
    mean = getattr(module, "mean", None)
    scale = getattr(module, "scale", None)
    z0 = torch.as_tensor(np.asarray(z), dtype=torch.float32)
    p = z0.shape[1]
    mean = torch.zeros(p) if mean is None else mean.detach().float()
    scale = torch.ones(p) if scale is None else scale.detach().float()
    cls = torch.as_tensor(np.asarray(classes), dtype=torch.long)
    multilabel = scores.activation == "sigmoid"
    with torch.no_grad():
        before = scores.proba(z0)
    sign = torch.where(before.gather(1, cls[:, None])[:, 0] > 0.5, 1.0, -1.0) if multilabel else torch.ones(len(z0))
    u = ((z0 - mean) / scale).clone()
    done = _is_flipped(before, cls, sign, multilabel, confidence)
    steps = torch.zeros(len(z0), dtype=torch.long)
    for _ in range(int(max_steps)):
        if bool(done.all()):
            break
        active = ~done
        ua = u[active].clone().requires_grad_(True)
        logits = module(ua * scale + mean)
        lo = log_odds_from_logits(logits, scores.activation).gather(1, cls[active][:, None])[:, 0]
        (g,) = torch.autograd.grad((sign[active] * lo).sum(), ua)
        norm = g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        with torch.no_grad():
            u[active] = ua.detach() - step * g / norm
            steps[active] += 1
            done = done | _is_flipped(scores.proba(u * scale + mean), cls, sign, multilabel, confidence)
    z_cf = (u * scale + mean).detach()
    with torch.no_grad():
        after = scores.proba(z_cf)
    u0 = (z0 - mean) / scale
    return Counterfactuals(latents=z_cf.numpy(), flipped=done.numpy(), steps=steps.numpy(),
                           distance=(u - u0).norm(dim=1).detach().numpy(), proba_before=before.numpy(),
                           proba_after=after.numpy())
