"""One supervised training loop for every trainable part of funcml but the meta-learner.

A part (a classifier, a head, a generator, a pixel baseline) supplies its network, its optimizer
and two functions: ``batches(round)`` yields the mini-batches of one round (an epoch, or a block of
steps) and ``loss(batch)`` returns the batch's loss (a scalar tensor, or ``(loss, weight)``: the
batch's weight in the round's mean training loss). :func:`fit` owns the rest:

* the learning-rate schedule (``Plan.lr_at(step, round)``), the backward pass, gradient clipping and the
  update, then ``after_step(step)`` (an EMA, a scheduler);
* after each round, validation (``validate(train_loss)`` returns a score, or ``(score, entries)``
  for the history), the best weights kept and early stopping after ``patience`` rounds;
* a time budget (``max_minutes`` of wall or process CPU time, checked after each round or, with
  ``stop_within_round``, before every step), progress, and checkpoints that a rerun with the same
  ``identity`` resumes from (the best weights included);
* optionally a learning rate that follows the run's progress (``lr_schedule(p)``, ``p`` the larger
  of the steps done of ``total_steps`` and the budget spent), so that a run cut by its budget ends
  with a decayed rate as well.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from funcml.errors import TrainingDivergedError
from funcml.io.checkpoint import CHECKPOINT_DIR, FILE_FIELDS, load_checkpoint, read_checkpoint_meta, save_checkpoint
from funcml.io.schema import Anything, Bool, Float, Int, List, Map, Null, Obj, Str
from funcml.io.tensorfile import load_tensors, save_tensors
from funcml.progress import progress_bar

BEST_FILE = "best.safetensors"
CLOCKS = {"wall": time.perf_counter, "process": time.process_time}
STOPS = ("rounds", "patience", "max_minutes")
SCHEMA = Obj({**FILE_FIELDS, "step": Int(min=0), "round": Int(min=0), "finished": Bool(), "identity": Anything(),
              "history": List(Map(Anything())), "best_score": Float() | Null(), "best_round": Int(min=0) | Null(),
              "seconds": Float(min=0), "stopped_by": Str()}, extra=True)


@dataclass
class Plan:
    """How long and how to train.

    Attributes:
        rounds: epochs, or blocks of steps (what ``batches(round)`` yields).
        lr_at: learning rate of every parameter group at global step ``s`` in round ``r`` (both
            0-based): ``lr_at(s, r)``; None keeps the optimizer's.
        clip_grad_norm: clip the gradients' global norm to this (None: no clipping).
        patience: stop after this many rounds without a better validation score (None: never).
        maximize: a higher validation score is better (else lower, e.g. a loss).
        min_delta: how much better a score must be to count as better.
        restore_best: end with the best round's weights (when there is validation).
        max_minutes: stop after the round in which this call's budget runs out (None: no budget).
        clock: what ``max_minutes`` counts: ``wall`` time, or the ``process``'s CPU time (all its
            threads; on a shared machine the compute the run actually got).
        stop_within_round: check the budget before every step and end the round early when it is
            spent (validation and the checkpoint follow as after any round; a round may hold no step).
        total_steps, lr_schedule: with ``lr_schedule``, the learning rate at progress ``p`` in [0, 1]:
            the larger of (steps done) / ``total_steps`` and the budget spent (overrides ``lr_at``).
        check_finite: raise :class:`TrainingDivergedError` on a non-finite loss (one host sync per step).
        progress, desc: show a progress bar over rounds with this label.
        unit, score_name: the history's names for the round counter and the validation score
            (None: the score is not recorded).
    """

    rounds: int
    lr_at: Callable[[int, int], float] | None = None
    clip_grad_norm: float | None = None
    patience: int | None = None
    maximize: bool = False
    min_delta: float = 0.0
    restore_best: bool = True
    max_minutes: float | None = None
    clock: str = "wall"
    stop_within_round: bool = False
    total_steps: int | None = None
    lr_schedule: Callable[[float], float] | None = None
    check_finite: bool = False
    progress: bool = False
    desc: str = "train"
    unit: str = "epoch"
    score_name: str | None = "val_score"

    def validate(self) -> "Plan":
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds}")
        if self.clock not in CLOCKS:
            raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {self.clock!r}")
        if self.lr_schedule is not None and not (self.total_steps or self.max_minutes):
            raise ValueError("lr_schedule needs total_steps or max_minutes")
        return self


class Budget:
    """The time a :func:`fit` call has spent on its plan's clock, and the run's progress."""

    def __init__(self, plan: Plan) -> None:
        self.plan, self.clock = plan, CLOCKS[plan.clock]
        self.start = self.clock()

    def spent(self) -> float:
        """Seconds of the plan's clock since this call began."""
        return self.clock() - self.start

    def out(self) -> bool:
        return self.plan.max_minutes is not None and self.spent() > 60 * self.plan.max_minutes

    def progress(self, steps: int) -> float:
        """``p`` in [0, 1]: the larger of ``steps / total_steps`` and the fraction of the budget spent."""
        p = steps / self.plan.total_steps if self.plan.total_steps else 0.0
        if self.plan.max_minutes:
            p = max(p, self.spent() / (60 * self.plan.max_minutes))
        return min(p, 1.0)


@dataclass
class Checkpoints:
    """Where and how often to checkpoint: ``directory``, every ``every`` rounds (and at every stop).

    ``identity``: JSON describing the run (data, settings); a checkpoint with another identity is
    not resumed but replaced.
    """

    directory: Path
    identity: Any
    every: int = 1


@dataclass
class FitResult:
    """What :func:`fit` did: ``history`` (one entry per round), counts, the best round (1-based),
    ``seconds`` (wall) and ``cpu_seconds`` (process CPU time) over all calls of the run."""

    history: list[dict] = field(default_factory=list)
    rounds_done: int = 0
    steps_done: int = 0
    best_round: int | None = None
    best_score: float | None = None
    stopped_by: str = "rounds"
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    resumed_from: int = 0
    best_state: dict[str, torch.Tensor] | None = None


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _better(score: float, best: float | None, plan: Plan) -> bool:
    if best is None:
        return True
    return score > best + plan.min_delta if plan.maximize else score < best - plan.min_delta


def _resume(ckpt: Checkpoints | None, net: torch.nn.Module, optimizer: torch.optim.Optimizer) -> FitResult:
    """The state of a run to continue: restored from ``ckpt`` when it holds this identity, else fresh."""
    if ckpt is None:
        return FitResult()
    meta = read_checkpoint_meta(ckpt.directory, SCHEMA)
    if meta is None or meta["identity"] != ckpt.identity:
        return FitResult()
    meta = load_checkpoint(ckpt.directory, net, optimizer, SCHEMA)
    best_file = Path(ckpt.directory) / CHECKPOINT_DIR / BEST_FILE
    best_state = load_tensors(best_file) if meta["best_round"] is not None and best_file.is_file() else None
    return FitResult(history=list(meta["history"]), rounds_done=meta["round"], steps_done=meta["step"],
                     best_round=meta["best_round"], best_score=meta["best_score"],
                     stopped_by="patience" if meta["stopped_by"] == "patience" else "rounds",
                     seconds=meta["seconds"], cpu_seconds=float(meta.get("cpu_seconds", 0.0)),
                     resumed_from=meta["round"], best_state=best_state)


def _save(ckpt: Checkpoints, net: torch.nn.Module, optimizer: torch.optim.Optimizer, run: FitResult,
          finished: bool) -> None:
    save_checkpoint(ckpt.directory, net, optimizer, {
        "step": run.steps_done, "round": run.rounds_done, "finished": finished, "identity": ckpt.identity,
        "history": run.history, "best_score": run.best_score, "best_round": run.best_round,
        "seconds": run.seconds, "cpu_seconds": run.cpu_seconds, "stopped_by": run.stopped_by})


def _train_round(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Iterable, loss_fn: Callable,
                 plan: Plan, after_step: Callable[[int], None] | None, run: FitResult, budget: Budget) -> float:
    """One round of updates; returns the round's weighted mean training loss."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total, weight = torch.zeros((), dtype=torch.float64), 0.0
    net.train()
    for batch in batches:
        if plan.stop_within_round and budget.out():
            break
        _set_lr(optimizer, plan, run, budget)
        out = loss_fn(batch)
        loss, w = out if isinstance(out, tuple) else (out, 1.0)
        if plan.check_finite and not torch.isfinite(loss):
            raise TrainingDivergedError(f"training diverged at step {run.steps_done} (loss {float(loss.detach())}); "
                                        "lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if plan.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, plan.clip_grad_norm)
        optimizer.step()
        if after_step is not None:
            after_step(run.steps_done)
        total = total.to(loss.device) + loss.detach().double() * w
        weight += float(w)
        run.steps_done += 1
    return float(total) / weight if weight else float("nan")


def _set_lr(optimizer: torch.optim.Optimizer, plan: Plan, run: FitResult, budget: Budget) -> None:
    if plan.lr_schedule is not None:
        lr = plan.lr_schedule(budget.progress(run.steps_done))
    elif plan.lr_at is not None:
        lr = plan.lr_at(run.steps_done, run.rounds_done)
    else:
        return
    for group in optimizer.param_groups:
        group["lr"] = lr


def _end_of_round(net: torch.nn.Module, plan: Plan, validate: Callable | None, train_loss: float,
                  run: FitResult) -> dict:
    """Validate, keep the best weights, and decide whether to stop; returns the history entry."""
    entry: dict[str, Any] = {plan.unit: run.rounds_done, "train_loss": train_loss}
    if validate is None:
        return entry
    net.eval()
    with torch.no_grad():
        out = validate(train_loss)
    score, extra = out if isinstance(out, tuple) else (out, {})
    entry.update({plan.score_name: float(score)} if plan.score_name else {})
    entry.update(extra)
    if _better(float(score), run.best_score, plan):
        run.best_score, run.best_round, run.best_state = float(score), run.rounds_done, _state(net)
    elif plan.patience is not None and run.rounds_done - (run.best_round or 0) >= plan.patience:
        run.stopped_by = "patience"
    return entry


def fit(net: torch.nn.Module, optimizer: torch.optim.Optimizer, batches: Callable[[int], Iterable],
        loss: Callable[[Any], torch.Tensor | tuple[torch.Tensor, float]], plan: Plan, *,
        validate: Callable[[float], float | tuple[float, dict]] | None = None,
        after_step: Callable[[int], None] | None = None, checkpoints: Checkpoints | None = None,
        state: torch.nn.Module | None = None, log: Callable[[str], None] | None = None) -> FitResult:
    """Train ``net`` with ``optimizer`` for ``plan.rounds`` rounds (see the module docstring).

    ``state``: the module whose weights are checkpointed (default ``net``; e.g. a ModuleDict of the
    network and its EMA). Returns the :class:`FitResult`; with validation and ``plan.restore_best``,
    ``net`` ends with the best round's weights.
    """
    plan = plan.validate()
    state = net if state is None else state
    run = _resume(checkpoints, state, optimizer)
    if run.resumed_from and log:
        log(f"resuming after round {run.resumed_from} of {plan.rounds}")
    budget, t0, c0 = Budget(plan), time.perf_counter() - run.seconds, time.process_time() - run.cpu_seconds
    finished = run.rounds_done >= plan.rounds or run.stopped_by == "patience"
    bar = progress_bar(total=plan.rounds, initial=run.rounds_done, desc=plan.desc, unit=plan.unit,
                       disable=not plan.progress, leave=False)
    while not finished:
        train_loss = _train_round(net, optimizer, batches(run.rounds_done), loss, plan, after_step, run, budget)
        run.rounds_done += 1
        run.history.append(_end_of_round(net, plan, validate, train_loss, run))
        run.seconds, run.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        finished = run.rounds_done >= plan.rounds or run.stopped_by == "patience"
        out_of_time = budget.out() and not finished
        if out_of_time:
            run.stopped_by = "max_minutes"
        _record(checkpoints, state, optimizer, run, finished, out_of_time)
        bar.update(1)
        bar.set_postfix(loss=f"{train_loss:.4g}")
        if out_of_time:
            break
    bar.close()
    if validate is not None and plan.restore_best and run.best_state is not None:
        net.load_state_dict(run.best_state)
    return run


def _record(ckpt: Checkpoints | None, state: torch.nn.Module, optimizer: torch.optim.Optimizer, run: FitResult,
            finished: bool, stopping: bool) -> None:
    """Checkpoint the round (and the best weights when this round was the best)."""
    if ckpt is None:
        return
    if run.best_round == run.rounds_done and run.best_state is not None:
        save_tensors(Path(ckpt.directory) / CHECKPOINT_DIR / BEST_FILE, run.best_state,
                     metadata={"format": "funcml.engine.best"})
    if finished or stopping or run.rounds_done % max(1, ckpt.every) == 0:
        _save(ckpt, state, optimizer, run, finished)
