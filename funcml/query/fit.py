"""Training a query head on a frozen field: one loop for values (MSE) and class logits (cross-entropy).

The loop draws batches from a :class:`funcml.query.pairs.PairSet`, runs AdamW with a cosine
learning rate over the run's progress (steps done, or the wall-time budget spent, whichever is
further), shows a progress bar, validates every ``val_every`` steps (values: PSNR on a validation
PairSet; the best head is kept), and with a checkpoint folder writes a resumable checkpoint every
``checkpoint_every`` steps, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from funcml.encoders.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from funcml.errors import ConfigError, TrainingDivergedError
from funcml.io import load_tensors, save_tensors
from funcml.query.grids import grid_cell
from funcml.query.head import Query, QueryHead
from funcml.query.pairs import PairSet

BEST_FILE = "best.safetensors"
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


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
        val_every, checkpoint_every: steps between validations and between checkpoints.
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
    checkpoint_every: int = 250
    seed: int = 0

    def validate(self) -> "HeadTraining":
        if min(self.steps, self.batch_size, self.coords_per_signal, self.val_every, self.checkpoint_every) < 1:
            raise ConfigError("--steps, --batch-size, --coords-per-signal, --val-every and --checkpoint-every must be >= 1")
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


def _lr(cfg: HeadTraining, step: int, spent: float) -> tuple[float, float]:
    """``(progress in [0, 1], learning rate)``: steps done or budget spent, whichever is further."""
    p = step / cfg.steps
    if cfg.max_minutes:
        p = max(p, spent / (60.0 * cfg.max_minutes))
    p = min(p, 1.0)
    return p, cfg.lr * 0.5 * (1.0 + math.cos(math.pi * p))


@dataclass
class _State:
    step: int = 0
    elapsed: float = 0.0
    cpu: float = 0.0
    best: float | None = None
    best_step: int | None = None
    history: list | None = None
    best_state: dict | None = None


def _resume(ckpt: Path | None, head: QueryHead, opt, meta: dict, fresh_on_mismatch: bool) -> _State:
    if ckpt is None or read_checkpoint_meta(ckpt) is None:
        return _State(history=[])
    last = read_checkpoint_meta(ckpt)
    if last["config"] != meta:
        if fresh_on_mismatch:
            shutil.rmtree(ckpt / "checkpoints", ignore_errors=True)
            return _State(history=[])
        raise ConfigError(f"{ckpt} holds a head training with other settings or data; pass --overwrite to start over")
    load_checkpoint(ckpt, head, opt)
    return _State(int(last["step"]), float(last.get("elapsed", 0.0)), float(last.get("cpu", 0.0)),
                  last["best_val_psnr"], last["best_step"],
                  list(last["history"]))


def _checkpoint(ckpt: Path, head: QueryHead, opt, st: _State, meta: dict, finished: bool) -> None:
    save_checkpoint(ckpt, head, opt, {"step": st.step, "finished": finished, "best_val_psnr": st.best,
                                      "best_step": st.best_step, "config": meta, "history": st.history,
                                      "elapsed": st.elapsed, "cpu": st.cpu})


def _validate(head: QueryHead, net, val: PairSet, st: _State, ckpt: Path | None, log) -> None:
    head.eval()
    score = pairs_psnr(head, net, val)
    head.train()
    if not st.history or st.history[-1]["step"] != st.step:
        st.history.append({"step": st.step, "seconds": round(st.elapsed, 1)})
    st.history[-1].update({f"val_{k}_psnr": v for k, v in score.items()})
    if st.best is None or score["head"] > st.best:
        st.best, st.best_step = score["head"], st.step
        if ckpt is not None:
            save_tensors(ckpt / "checkpoints" / BEST_FILE, {k: v.detach().cpu() for k, v in head.state_dict().items()})
        else:
            st.best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
    if log:
        log(f"step {st.step}: validation PSNR head {score['head']:.2f} dB" +
            (f", base {score['base']:.2f} dB" if "base" in score else ""))


def _loop(head, net, pairs: PairSet, cfg: HeadTraining, opt, st: _State, loss: str, val, ckpt, meta, bar, log) -> None:
    """The optimisation steps from ``st.step`` until the steps or the time budget are used up."""
    t0, e0, c0, cpu0, running = time.perf_counter(), st.elapsed, time.process_time(), st.cpu, []
    while True:
        st.elapsed, st.cpu = e0 + time.perf_counter() - t0, cpu0 + time.process_time() - c0
        p, lr = _lr(cfg, st.step, st.cpu if cfg.clock == "process" else st.elapsed)
        if p >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = lr
        q, target, w = pairs.batch(st.step, cfg.batch_size, cfg.coords_per_signal, cfg.seed, jitter=cfg.jitter)
        value = _loss(head(net, q), target, w, loss)
        if not torch.isfinite(value):
            raise TrainingDivergedError(f"the head's loss became {value.item()} at step {st.step}; try a lower --lr")
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        st.step += 1
        running.append(value.item())
        bar.update(1)
        if st.step % 50 == 0 or st.step % cfg.val_every == 0:
            st.history.append({"step": st.step, "loss": float(np.mean(running)), "seconds": round(st.elapsed, 1)})
            bar.set_postfix(loss=f"{st.history[-1]['loss']:.5f}")
            running = []
            if val is not None and st.step % cfg.val_every == 0:
                _validate(head, net, val, st, ckpt, log)
        if ckpt is not None and st.step % cfg.checkpoint_every == 0:
            _checkpoint(ckpt, head, opt, st, meta, False)
    if running:
        st.history.append({"step": st.step, "loss": float(np.mean(running)), "seconds": round(st.elapsed, 1)})


def train_head(head: QueryHead, net, pairs: PairSet, cfg: HeadTraining, *, loss: str = "mse",
               val: PairSet | None = None, checkpoint_dir: str | Path | None = None, meta: dict | None = None,
               fresh_on_mismatch: bool = False, progress: bool = True, log: Callable[[str], None] | None = None
               ) -> dict:
    """Train ``head`` in place on ``pairs``; return the record (history, steps, seconds, best validation).

    With ``val`` the head with the best validation PSNR is kept. With ``checkpoint_dir`` the run
    resumes from ``checkpoint_dir/checkpoints`` when it holds a checkpoint of the same ``meta``
    (one of other settings is refused, or discarded with ``fresh_on_mismatch``), and an interrupt
    (Ctrl-C) writes a checkpoint before it ends the run.
    """
    cfg = cfg.validate()
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    meta = json.loads(json.dumps({"field": dict(meta or {}), "train": asdict(cfg),
                                  "data_fingerprint": str((meta or {}).get("data", ""))}))
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    st = _resume(ckpt, head, opt, meta, fresh_on_mismatch)
    head.train()
    bar = tqdm(total=cfg.steps, initial=st.step, desc="query head", unit="step", disable=not progress, leave=False)
    try:
        _loop(head, net, pairs, cfg, opt, st, loss, val, ckpt, meta, bar, log)
    except KeyboardInterrupt:
        if ckpt is not None:
            _checkpoint(ckpt, head, opt, st, meta, False)
        raise
    bar.close()
    if val is not None and (not st.history or "val_head_psnr" not in st.history[-1]):
        _validate(head, net, val, st, ckpt, log)
    if val is not None and st.best_step != st.step:
        best = load_tensors(ckpt / "checkpoints" / BEST_FILE) if ckpt is not None else st.best_state
        head.load_state_dict(best)
    if ckpt is not None:
        _checkpoint(ckpt, head, opt, st, meta, True)
    head.eval()
    return {"steps": st.step, "seconds": st.elapsed, "cpu_seconds": st.cpu, "history": st.history, "best_val_psnr": st.best,
            "best_step": st.best_step, "training": asdict(cfg)}
