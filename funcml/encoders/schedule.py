"""Outer learning-rate schedules: over a number of steps, or over a time budget.

With ``TrainConfig.budget_minutes`` the cosine decay follows the run's wall time instead of a step
count: the warm-up takes ``warmup_steps`` steps, then the learning rate decays from its peak at the
warm-up's end to its floor when the budget is spent, and training stops at the last step that fits.
:class:`ScheduleState` is what a checkpoint keeps of it, so that a resumed run continues on the same
schedule (the time spent before the interruption counts against the budget).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from funcml.encoders.config import TrainConfig


def cosine_factor(progress: float, min_ratio: float) -> float:
    """Cosine from 1 at ``progress`` 0 to ``min_ratio`` at 1 (clamped to [0, 1])."""
    p = min(max(progress, 0.0), 1.0)
    return min_ratio + 0.5 * (1.0 - min_ratio) * (1.0 + math.cos(math.pi * p))


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.outer_lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.outer_lr * cosine_factor((step - cfg.warmup_steps) / span, cfg.min_lr_ratio)


@dataclass
class ScheduleState:
    """The schedule's progress, checkpointed with the weights.

    Attributes:
        elapsed: seconds of wall time the run has spent (time budgets count them).
        warmup_end: ``elapsed`` when the warm-up ended (time budgets; None until then).
        lr_scale: factor on the whole schedule; the collapse guard lowers it at each rollback.
        step_seconds: the recent step time (the estimate a resumed run starts from).
    """

    elapsed: float = 0.0
    warmup_end: float | None = None
    lr_scale: float = 1.0
    step_seconds: float = 0.0


def budget_lr(step: int, elapsed: float, horizon: float, state: ScheduleState, cfg: TrainConfig) -> float:
    """Learning rate of update ``step`` under a time budget: the warm-up over the first
    ``warmup_steps`` steps, then cosine over the time from the warm-up's end to ``horizon`` seconds
    (the budget less what the run needs to finish). ``elapsed``: the run's time at the end of this
    step (expected), so that the last step that fits the budget ends the schedule. Records the
    warm-up's end in ``state``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.outer_lr * state.lr_scale * (step + 1) / cfg.warmup_steps
    if state.warmup_end is None:
        state.warmup_end = elapsed
    progress = (elapsed - state.warmup_end) / max(horizon - state.warmup_end, 1e-9)
    return cfg.outer_lr * state.lr_scale * cosine_factor(progress, cfg.min_lr_ratio)


class StepClock:
    """Wall-time bookkeeping of a run: ``elapsed()`` counts from the run's start plus the time spent
    before a resumption; ``clock`` is injectable (tests drive the schedule without sleeping)."""

    def __init__(self, clock, spent_before: float = 0.0) -> None:
        self.clock = clock
        self.t0 = clock()
        self.spent_before = spent_before

    def elapsed(self) -> float:
        return self.spent_before + (self.clock() - self.t0)

    def run_seconds(self) -> float:
        """Seconds since this process started the run (without earlier sessions)."""
        return self.clock() - self.t0
