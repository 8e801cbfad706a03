"""Training a query head on a frozen field: one loop for values (MSE) and class logits (cross-entropy).

The head trains through :func:`funcml.engine.fit` on batches drawn from a
:class:`funcml.query.pairs.PairSet`: AdamW with a cosine learning rate over the run's progress (steps
done, or the time budget spent on its clock, wall or process CPU time, whichever is further),
rounds of ``val_every`` steps, each validated (PSNR on a validation PairSet; the best head is kept)
and, with a checkpoint folder, checkpointed, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from funcml.engine import CLOCKS, SCHEMA, Checkpoints, FitResult, Plan, fit
from funcml.errors import ArtifactError, ConfigError
from funcml.io.checkpoint import CHECKPOINT_DIR, read_checkpoint_meta
from funcml.grids import grid_cell
from funcml.query.head import Query, QueryHead
from funcml.query.pairs import PairSet



@dataclass(frozen=True)
class HeadTraining:
    """How a head is trained.

    Attributes:
        steps: optimisation steps (the most; ``max_minutes`` may end the run earlier).
        batch_size: signals per step. coords_per_signal: output positions per signal and step.
        lr, weight_decay: AdamW. max_minutes: time budget (None: none); the learning rate
            follows the budget, so a run ends with a decayed rate either way.
        clock: what ``max_minutes`` counts: ``wall`` time, or the ``process``'s CPU time (all its
            threads; on a shared machine the compute the run actually got).
        jitter: move each output position uniformly within its cell (labels between samples).
        val_every: steps between validations (and checkpoints): one round of the training engine.
        seed: seeds initialisation and batches.
    """

    steps: int = 2000
    batch_size: int = 16
    coords_per_signal: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    max_minutes: float | None = None
    clock: str = "wall"
    jitter: bool = False
    val_every: int = 250
    seed: int = 0

    def validate(self) -> "HeadTraining":
        if min(self.steps, self.batch_size, self.coords_per_signal, self.val_every) < 1:
            raise ConfigError("--steps, --batch-size, --coords-per-signal and --val-every must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ConfigError(f"--lr must be > 0 and --weight-decay >= 0; got {self.lr}, {self.weight_decay}")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock must be one of {tuple(CLOCKS)}; got {self.clock!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ConfigError(f"--max-minutes must be > 0; got {self.max_minutes}")
        return self


def predict_query(head: QueryHead, net, q: Query, chunk_points: int = 1 << 16) -> torch.Tensor:
    """Head outputs ``(B, N, out_dim)`` without gradients, about ``chunk_points`` (signal, coordinate)
    pairs at a time (bounded memory for large 3D grids and batches)."""
    chunk = max(1, chunk_points // max(1, q.latents.shape[0]))
    with torch.no_grad():
        parts = [head(net, q.select(q.coords[s:s + chunk])) for s in range(0, q.coords.shape[0], chunk)]
    return torch.cat(parts, dim=1)


def pairs_psnr(head: QueryHead, net, pairs: PairSet, batch_size: int = 32) -> dict[str, float]:
    """Mean per-signal PSNR of the head and of its base over every pair (hidden samples only with masks)."""
    scores: dict[str, list[np.ndarray]] = {"head": [], "base": []}
    for k, g in enumerate(pairs.groups):
        coords = pairs.coords(k)
        for s in range(0, len(g), batch_size):
            r = torch.arange(s, min(s + batch_size, len(g)), device=g.latents.device)
            obs = None if g.observed is None else g.observed[r]
            sig = None if g.inputs is None else g.inputs[r]
            q = Query(g.latents[r], coords, g.grid_in, sig, obs, grid_cell(g.grid_in, g.grid_out, g.align),
                      None if g.filled is None else g.filled[r])
            truth = g.targets[g.rows[r]].flatten(2).transpose(1, 2)
            w = torch.ones(truth.shape[:2], device=truth.device) if obs is None else (~obs.flatten(1)).float()
            preds = {"head": predict_query(head, net, q)}
            with torch.no_grad():
                base = head.base(net, q)
            if base is not None:
                preds["base"] = base
            for name, p in preds.items():
                se = ((p.clamp(0, 1) - truth) ** 2).mean(-1) * w
                mse = se.sum(1) / w.sum(1).clamp_min(1)
                scores[name].append((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).cpu().numpy())
    return {k: float(np.mean(np.concatenate(v))) for k, v in scores.items() if v}


def _loss(out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, kind: str) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), target.reshape(-1))
    se = (out - target).pow(2).mean(-1)
    if weights is None:
        return se.mean()
    return (se * weights).sum() / weights.sum().clamp_min(1.0)


def _check_identity(ckpt: Path | None, identity: dict, fresh_on_mismatch: bool) -> None:
    """Refuse (or, with ``fresh_on_mismatch``, discard) a checkpoint in ``ckpt`` of another training."""
    if ckpt is None or not (ckpt / CHECKPOINT_DIR).exists():
        return
    try:
        last = read_checkpoint_meta(ckpt, SCHEMA)
    except ArtifactError:
        last = None
    if last is not None and last["identity"] == identity:
        return
    if not fresh_on_mismatch:
        raise ConfigError(f"{ckpt} holds a head training with other settings or data; pass --overwrite to start over")
    shutil.rmtree(ckpt / CHECKPOINT_DIR, ignore_errors=True)


def _plan(cfg: HeadTraining, validating: bool, progress: bool) -> Plan:
    """Rounds of ``val_every`` steps, a cosine rate over steps or budget, the best validation PSNR kept."""
    return Plan(rounds=math.ceil(cfg.steps / cfg.val_every), total_steps=cfg.steps, max_minutes=cfg.max_minutes,
                clock=cfg.clock, stop_within_round=True, check_finite=True, maximize=True,
                lr_schedule=lambda p: cfg.lr * 0.5 * (1.0 + math.cos(math.pi * p)), progress=progress,
                desc="query head", unit="round", score_name="val_head_psnr" if validating else None)


def train_head(head: QueryHead, net, pairs: PairSet, cfg: HeadTraining, *, loss: str = "mse",
               val: PairSet | None = None, checkpoint_dir: str | Path | None = None, meta: dict | None = None,
               fresh_on_mismatch: bool = False, progress: bool = True, log: Callable[[str], None] | None = None
               ) -> dict:
    """Train ``head`` in place on ``pairs`` through :func:`funcml.engine.fit`; return the record
    (history, steps, seconds, CPU seconds, best validation).

    With ``val`` the head is validated every ``val_every`` steps and the one with the best PSNR is
    kept. With ``checkpoint_dir`` the run checkpoints at every validation and resumes from
    ``checkpoint_dir/checkpoints`` when it holds a checkpoint of the same ``meta`` (one of other
    settings is refused, or discarded with ``fresh_on_mismatch``).
    """
    cfg = cfg.validate()
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    identity = json.loads(json.dumps({"field": dict(meta or {}), "train": asdict(cfg),
                                      "data_fingerprint": str((meta or {}).get("data", ""))}))
    _check_identity(ckpt, identity, fresh_on_mismatch)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def batches(rnd: int):
        for step in range(rnd * cfg.val_every, min((rnd + 1) * cfg.val_every, cfg.steps)):
            yield pairs.batch(step, cfg.batch_size, cfg.coords_per_signal, cfg.seed, jitter=cfg.jitter)

    def validate(_train_loss: float) -> tuple[float, dict]:
        score = pairs_psnr(head, net, val)
        if log:
            log(f"validation PSNR head {score['head']:.2f} dB" + (f", base {score['base']:.2f} dB" if "base" in score else ""))
        return score["head"], {f"val_{k}_psnr": v for k, v in score.items() if k != "head"}

    def step_loss(batch) -> torch.Tensor:
        q, target, w = batch
        return _loss(head(net, q), target, w, loss)

    run = fit(head, opt, batches, step_loss, _plan(cfg, val is not None, progress),
              validate=validate if val is not None else None,
              checkpoints=None if ckpt is None else Checkpoints(ckpt, identity), log=log)
    head.eval()
    return _record(run, cfg)


def _record(run: FitResult, cfg: HeadTraining) -> dict:
    """The training record of a head: its history with the step of every round, steps, times, best round."""
    history = [{"step": min(e["round"] * cfg.val_every, run.steps_done), "loss": e["train_loss"],
                **{k: v for k, v in e.items() if k.startswith("val_")}} for e in run.history]
    best_step = history[run.best_round - 1]["step"] if run.best_round else None
    return {"steps": run.steps_done, "seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "history": history,
            "best_val_psnr": run.best_score, "best_step": best_step, "stopped_by": run.stopped_by,
            "training": asdict(cfg)}
