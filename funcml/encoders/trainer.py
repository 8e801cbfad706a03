"""Meta-training loop: outer AdamW on theta through G unrolled inner steps on phi.

The loop is deterministic and resumable: batch membership and context subsets of step s are
drawn from generators seeded by (seed, s), and weights plus optimizer state are checkpointed, so
a run resumed from step s continues exactly the trajectory of an uninterrupted run. Validation
PSNR (test-time encoding of held-out signals) is measured every ``val_every`` steps and the best
model is kept as the output model directory.

The schedule spans ``steps``, or with ``budget_minutes`` the wall time (:mod:`funcml.encoders.schedule`).
Per-step statistics stay on the device; at each log, validation and checkpoint the loop reads them
once and :class:`~funcml.encoders.guard.CollapseGuard` decides whether training collapsed, in which
case it rolls back to the last good checkpoint with a lower learning rate.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from funcml.progress import progress_bar

from funcml.data.base import SignalSet
from funcml.devices import peak_memory_bytes, to_device
from funcml.encoders import distributed as ddp
from funcml.backends import Execution, precision
from funcml.encoders.dispatch import native_loops_used
from funcml.encoders.checkpoint import CHECKPOINT_DIR, load_checkpoint, read_checkpoint_meta, save_checkpoint
from funcml.encoders.config import EncodeConfig, FieldConfig, TrainConfig
from funcml.encoders.coords import make_grid
from funcml.encoders.fitting import fit_latents, reconstruction_psnr
from funcml.encoders.guard import CollapseGuard, TrainWindow
from funcml.encoders.meta import MetaStats, accumulate_meta_gradient, draw_subsets
from funcml.encoders.schedule import ScheduleState, StepClock as _Clock, budget_lr, cosine_lr
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError, DataError, FuncmlError, OutputExistsError, TrainingDivergedError
from funcml.io import atomic_write_json
from funcml.io.lock import OutputLock
from funcml.seeding import derive_seed, epoch_batch, generator

__all__ = ["MetaTrainer", "TrainResult", "TrainingInterrupted", "choose_momentum", "cosine_lr", "encode_config_for",
           "validation_psnr"]
_log = logging.getLogger(__name__)

class TrainingInterrupted(FuncmlError):
    """SIGINT/SIGTERM stopped training between two steps; a checkpoint was written."""

    exit_code = 130


class _StopRequests:
    """Turn SIGINT/SIGTERM into a flag checked between steps (so the saved state is consistent)."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "_StopRequests":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)


# Changing these between a run and its resumption does not change the trajectory.
_RESUME_FREE = {"max_minutes", "checkpoint_minutes", "checkpoint_every", "log_every", "val_every", "val_signals",
                "recompute", "compile", "guard_drop_db", "max_rollbacks", "rollback_lr_factor", "tune_momentum"}
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_TRAIN_DEFAULTS["precision"] = "fp32"  # what runs recorded before the field existed used
CACHE_BYTES = 4 << 30
MOMENTUM_GRID = (0.0, 0.3, 0.5, 0.6)   # test-time momenta a finished run chooses from (TrainConfig.tune_momentum)


AUTO_MICRO_BATCH_BYTES = 256 << 20


def auto_micro_batch(field: FieldConfig, cfg: TrainConfig, n_coords: int, batch: int, device: torch.device) -> int:
    """Signals per pass when ``micro_batch_size`` is None: on CPU the fewest passes that keep the fused
    inner loop's activations within :data:`AUTO_MICRO_BATCH_BYTES` (memory then no longer grows with
    the meta-batch; the accumulated update is the same), with the batch split evenly over them (32
    signals at a cap of 25: two passes of 16, not 25 and 7: the same passes with less memory), on
    CUDA the whole batch."""
    if device.type != "cpu":
        return batch
    n_ctx = n_coords if cfg.context_ratio >= 1 else max(1, int(cfg.context_ratio * n_coords))
    # per signal and sine layer: 3 tensors kept per inner step after the first (shared) one (sin, cos
    # and g; kernels.inner_forward), 3 in the outer pass
    per_signal = 4 * field.width * (field.depth - 1) * (3 * n_ctx * max(cfg.inner_steps - 1, 0) + 3 * n_coords)
    cap = int(min(batch, max(1, AUTO_MICRO_BATCH_BYTES // max(per_signal, 1))))
    passes = -(-batch // cap)
    return -(-batch // passes)


def compute_meta_gradient(net: ModulatedSiren, optimizer: torch.optim.Optimizer, coords: torch.Tensor,
                          x: torch.Tensor, subsets: list, cfg: TrainConfig) -> MetaStats:
    """Zero the gradients and accumulate the meta-gradient of the batch ``x`` ``(b, C, *spatial)``
    (this process's share of the global batch ``cfg.batch_size``)."""
    optimizer.zero_grad(set_to_none=True)
    return accumulate_batch_meta_gradient(net, coords, x, subsets, cfg)


def accumulate_batch_meta_gradient(net: ModulatedSiren, coords: torch.Tensor, x: torch.Tensor, subsets: list,
                                   cfg: TrainConfig) -> MetaStats:
    """Add the meta-gradient of ``x`` ``(b, C, *spatial)`` to ``.grad``, ``cfg.micro_batch_size`` signals at
    a time (None: :func:`auto_micro_batch`)."""
    micro = cfg.micro_batch_size or auto_micro_batch(net.config, cfg, coords.shape[0], x.shape[0], x.device)
    return accumulate_meta_gradient(net, coords, x, subsets, cfg.inner_lr, first_order=cfg.first_order,
                                    loss_scale=1.0 / cfg.batch_size, micro_batch_size=micro,
                                    recompute=cfg.recompute, execution=Execution.of(cfg, x.device))


def param_groups(net: ModulatedSiren, cfg: TrainConfig) -> list[dict]:
    """The outer optimizer's parameter groups. With ``cfg.omega_lr`` each sine layer's weights (and
    the output layer's) learn at ``omega_1 / omega_k`` times the learning rate (key ``layer_scale``):
    a weight change moves layer k's phase ``omega_k`` times as much, so every layer moves its phase
    by the same amount per step; the first layer and the shift map keep the full rate."""
    if not cfg.omega_lr:
        return [{"params": list(net.parameters()), "layer_scale": 1.0}]
    layers = [net.first, *net.hidden, net.out]
    scale = {id(p): net.omegas[0] / net.omegas[k] for k, layer in enumerate(layers) for p in layer.parameters()}
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for p in net.parameters():
        groups.setdefault(scale.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "layer_scale": s} for s, ps in sorted(groups.items(), key=lambda kv: -kv[0])]


def make_optimizer(params: list[torch.nn.Parameter] | list[dict], cfg: TrainConfig) -> torch.optim.AdamW:
    """The outer AdamW on theta; its fused implementation (one pass over each parameter instead of
    about ten: 14-17 against 104-194 ms a step for the 3D preset's 30M parameters on two CPU cores,
    ``benchmarks/bench_pieces.py``; the same update up to float rounding) where this torch and device
    have it."""
    try:
        return torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):   # e.g. no fused kernel for this device in this torch
        return torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)


def apply_meta_update(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                      cfg: TrainConfig) -> torch.Tensor:
    """Clip the global gradient norm (if set) and take the AdamW step; returns the norm before
    clipping (a 0-d tensor on the parameters' device, not read: no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if cfg.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    elif grads:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    else:
        norm = torch.zeros(())
    optimizer.step()
    return norm


def resolve_precision(cfg: TrainConfig, device: torch.device) -> TrainConfig:
    """``cfg`` with ``precision="auto"`` made concrete for ``device`` (tf32 on CUDA, fp32 elsewhere), so
    that checkpoints record what ran and a run resumes only at the precision it started with."""
    return dataclasses.replace(cfg, precision=precision.resolve(cfg.precision, device))


def gather_batch(cache: torch.Tensor | None, signals: SignalSet, train_idx: np.ndarray, local: np.ndarray,
                 device: torch.device) -> torch.Tensor:
    """The signals ``local`` (ids in ``train_idx``) ``(b, C, *spatial)`` on ``device`` without waiting
    for the GPU: from ``cache`` (the train signals in ``train_idx`` order, on the host or the device)
    by positions copied through pinned memory, else read from ``signals``; host data go to a GPU
    through pinned memory (:func:`funcml.devices.to_device`)."""
    if cache is None:
        return to_device(signals.get(local), device)
    pos = torch.from_numpy(np.searchsorted(train_idx, local))
    if cache.device.type == "cpu":
        return to_device(cache[pos], device)
    return cache[to_device(pos, cache.device)].to(device)


def encode_config_for(train: TrainConfig, batch_size: int = 64) -> EncodeConfig:
    """The test-time settings that match a meta-training configuration."""
    return EncodeConfig(steps=train.test_steps, inner_lr=train.inner_lr, context_ratio=train.context_ratio,
                        grad_rescale=train.grad_rescale, batch_size=batch_size, seed=train.seed)


def validation_psnr(net: ModulatedSiren, signals: torch.Tensor, cfg: EncodeConfig) -> float:
    """Mean PSNR of held-out ``signals`` ``(n, C, *spatial)`` after test-time encoding."""
    values = []
    for k, start in enumerate(range(0, len(signals), cfg.batch_size)):
        x = signals[start:start + cfg.batch_size]
        phi = fit_latents(net, x, cfg, generator=generator(cfg.seed, "validate", k))
        values.append(reconstruction_psnr(net, phi, x))
    return float(torch.cat(values).mean())


def choose_momentum(net: ModulatedSiren, signals: torch.Tensor, cfg: EncodeConfig,
                    score: Callable[[ModulatedSiren, torch.Tensor, EncodeConfig], float] = validation_psnr,
                    grid: tuple[float, ...] = MOMENTUM_GRID,
                    known: dict[float, float] | None = None) -> tuple[float, dict[float, float]]:
    """The test-time momentum of ``grid`` that scores best on held-out ``signals`` ``(n, C, *spatial)``
    encoded with ``cfg`` (higher is better; ties go to the smaller), and every momentum's score.
    ``known``: scores measured already (momentum -> score), not measured again."""
    known = known or {}
    scores = {m: known[m] if m in known else score(net, signals, dataclasses.replace(cfg, momentum=m))
              for m in grid}
    finite = {m: s for m, s in scores.items() if math.isfinite(s)}
    return (max(finite, key=finite.get) if finite else 0.0), scores


@dataclass
class TrainResult:
    """What a training run reports (also written to ``summary.json``)."""

    out: str
    model_id: str | None
    steps_done: int
    steps_total: int
    finished: bool
    best_val_psnr: float | None
    best_step: int | None
    last_train_psnr: float | None
    median_step_seconds: float | None
    peak_memory_bytes: int
    minutes: float
    resumed_from: int | None
    stopped_by: str
    history: list[dict] = field(default_factory=list, repr=False)
    fused_loops: bool = False   # the CPU element-wise work ran in funcml.encoders.fused_loops
    schedule: str = "steps"     # "steps": cosine over ``steps``; "time": over ``budget_minutes``
    budget_minutes: float | None = None
    rollbacks: list[dict] = field(default_factory=list)   # the collapse guard's rollbacks
    schedule_minutes: float = 0.0   # wall time the schedule counted (resumed runs: all sessions)
    test_momentum: float | None = None   # the model's test-time momentum, chosen on the validation signals

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        d["val_psnr"] = self.best_val_psnr
        d["peak_memory_mb"] = self.peak_memory_bytes / 2**20
        return d


@dataclass
class _Run:
    """The state of one :meth:`MetaTrainer.run`: what it trains and where it stands."""

    net: ModulatedSiren
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    clock: _Clock
    train_cache: torch.Tensor | None
    val_signals: torch.Tensor | None
    coords: torch.Tensor
    enc_cfg: EncodeConfig
    guard: CollapseGuard
    resumed: bool = False
    step: int = 0                 # steps done: the next step's index
    start: int = 0                # the step this session started at
    best_val: float | None = None
    best_step: int | None = None
    history: list[dict] = field(default_factory=list)
    window: TrainWindow = field(default_factory=TrainWindow)
    schedule: ScheduleState = field(default_factory=ScheduleState)
    rollbacks: list[dict] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    last_ckpt_step: int = 0
    last_ckpt_time: float = 0.0
    val_seconds: float = 0.0      # how long the last validation took
    stopped_by: str = "steps"
    bar: Any = None


def _recent_step_seconds(r: _Run) -> float:
    """Median wall time of the last (up to 20) steps (before the first: the checkpoint's)."""
    return statistics.median(r.step_times[-20:]) if r.step_times else r.schedule.step_seconds


class MetaTrainer:
    """Meta-train a :class:`ModulatedSiren` on the train split of a :class:`SignalSet`.

    Args:
        field: architecture (``dim_in``/``channels`` must match the data).
        train: meta-training settings.
        signals: the data; its ``train`` split is meta-trained on, ``val`` (else ``test``) validates.
        out: output directory: the best model (``config.json`` + ``model.safetensors``),
            ``checkpoints/``, ``train_log.jsonl``, ``summary.json``, ``training_curves.png``.
        device: torch device. resume: continue an unfinished run in ``out`` (``None``: automatically
            when its configuration matches). overwrite: start over in an existing ``out``.
        clock: the wall clock (seconds; default ``time.perf_counter``) that time budgets, step times
            and time-based checkpoints read.
    """

    def __init__(self, field: FieldConfig, train: TrainConfig, signals: SignalSet, out: str | Path,
                 device: torch.device | str = "cpu", *, resume: bool | None = None, overwrite: bool = False,
                 progress: bool = True, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.step_cfg = train   # the settings of the step in progress (see _step_config)
        self.field = field.validate()
        self.cfg = train.validate()
        self.signals = signals
        self.out = Path(out)
        self.device = torch.device(device)
        self.progress = progress
        self.dist = ddp.init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.cfg = resolve_precision(self.cfg, self.device)
        if (field.dim_in, field.channels) != (signals.dim, signals.channels):
            raise ConfigError(f"the model takes {field.channels}-channel {field.dim_in}-D signals but {signals.spec} "
                              f"holds {signals.channels}-channel {signals.dim}-D signals")
        if self.cfg.batch_size % self.dist.world_size:
            raise ConfigError(f"--batch-size {self.cfg.batch_size} must be divisible by the {self.dist.world_size} processes")
        self.train_idx = signals.indices("train")
        if len(self.train_idx) == 0:
            raise DataError(f"{signals.spec}: the train split is empty")
        val = signals.indices("val")
        if len(val) == 0:
            val = signals.indices("test")
        self.val_idx = val[: self.cfg.val_signals]
        # One writer per output directory (the main process writes everything); released when run() ends.
        self._lock = OutputLock(self.out) if self.dist.is_main else None
        try:
            self._resume_decision = self._decide_resume(resume, overwrite)
        except BaseException:
            self._release_lock()
            raise

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- set-up ---------------------------------------------------------------------------------
    def _config_record(self) -> dict:
        return {"field": asdict(self.field), "train": asdict(self.cfg), "data_fingerprint": self.signals.fingerprint,
                "signal_shape": list(self.signals.signal_shape), "world_size": self.dist.world_size}

    def _decide_resume(self, resume: bool | None, overwrite: bool) -> dict | None:
        """Return the checkpoint metadata to resume from, or None to start fresh."""
        meta = read_checkpoint_meta(self.out) if self.out.exists() else None
        if overwrite:
            if self.dist.is_main and self.out.exists():
                import shutil

                shutil.rmtree(self.out)
            ddp.barrier()
            return None
        if resume and meta is None:
            raise ConfigError(f"--resume: there is no checkpoint in {self.out}")
        if meta is None:
            if self.out.exists() and any(self.out.iterdir()):
                if not _only_an_unfinished_first_checkpoint(self.out):
                    raise OutputExistsError(f"output path exists: {self.out} (pass --overwrite to replace it)")
                # Killed while writing the step-0 checkpoint: nothing was trained yet, start over.
                if self.dist.is_main:
                    import shutil

                    shutil.rmtree(self.out / CHECKPOINT_DIR)
            ddp.barrier()  # every process, whichever branch it saw
            return None
        if resume is False:
            raise OutputExistsError(f"{self.out} holds a training run; pass --resume to continue or --overwrite")
        old, new = meta["config"], self._config_record()
        diffs = []
        for part in ("field", "train"):
            for key, value in new[part].items():
                if part == "train" and key in _RESUME_FREE:
                    continue
                before = old[part].get(key, _TRAIN_DEFAULTS.get(key) if part == "train" else None)
                if before != value:
                    diffs.append(f"{key}: {before!r} -> {value!r}")
        if old["data_fingerprint"] != new["data_fingerprint"]:
            diffs.append("the training data differs")
        if old.get("world_size", 1) != new["world_size"]:
            diffs.append(f"processes: {old.get('world_size', 1)} -> {new['world_size']}")
        if diffs:
            raise OutputExistsError(f"{self.out} holds a run with other settings ({'; '.join(diffs)}); "
                                    f"use the same options to resume it, or --overwrite")
        if meta.get("finished"):
            raise OutputExistsError(f"{self.out} holds a finished run ({meta['step']} steps); pass --overwrite to retrain")
        return meta

    def _load_train_signals(self) -> tuple[torch.Tensor | None, int]:
        nbytes = len(self.train_idx) * int(np.prod(self.signals.signal_shape)) * 4
        if nbytes > CACHE_BYTES:
            return None, nbytes
        x = torch.from_numpy(self.signals.get(self.train_idx))
        on_device = self.device.type == "cuda" and nbytes < (1 << 30)
        return (x.to(self.device) if on_device else x), nbytes

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Meta-train (resuming when decided so); returns the run's summary."""
        try:
            with precision.scoped(self.cfg.precision, self.device):
                return self._run()
        finally:
            self._release_lock()

    def _run(self) -> TrainResult:
        r = self._start()
        try:
            with _StopRequests() as stop_requests:
                self._loop(r, stop_requests)
        finally:
            r.bar.close()
        if r.stopped_by == "interrupted":
            self._checkpoint(r)
            raise TrainingInterrupted(f"interrupted after step {r.step}; checkpoint saved in "
                                      f"{self.out / CHECKPOINT_DIR}. Rerun the same command to resume.")
        return self._finish(r)

    def _start(self) -> _Run:
        """Build the network and optimizer, restore a checkpoint when resuming, load the data."""
        cfg = self.cfg
        clock = _Clock(self.clock)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        net = ModulatedSiren(self.field, inner_lr=cfg.inner_lr).to(self.device)
        params = list(net.parameters())
        optimizer = make_optimizer(param_groups(net, cfg), cfg)
        meta = self._resume_decision
        if meta is not None:
            meta = load_checkpoint(self.out, net, optimizer)
        if self.dist.enabled:
            ddp.broadcast_parameters(net)
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp"):  # half-written files of a killed run (we hold the lock)
                stale.unlink(missing_ok=True)
        train_cache, _ = self._load_train_signals()
        val = torch.from_numpy(self.signals.get(self.val_idx)).to(self.device) if len(self.val_idx) else None
        enc_cfg = dataclasses.replace(encode_config_for(cfg), backend=cfg.backend, precision=cfg.precision,
                                      compile=cfg.compile)  # validation runs as the training does
        r = _Run(net=net, params=params, optimizer=optimizer, clock=clock, train_cache=train_cache, val_signals=val,
                 coords=make_grid(self.signals.spatial_shape, device=self.device), enc_cfg=enc_cfg,
                 guard=CollapseGuard(cfg.guard_drop_db), resumed=meta is not None)
        if meta is not None:
            self._restore(r, meta)
            r.schedule = ScheduleState(**meta.get("schedule", {}))
            r.rollbacks = list(meta.get("rollbacks", []))
            clock.spent_before = r.schedule.elapsed
        r.start, r.last_ckpt_time = r.step, clock.t0
        r.bar = progress_bar(total=self._planned_steps(r), initial=r.step, desc="meta-train", unit="step",
                             disable=not (self.progress and self.dist.is_main), leave=False)
        if meta is None:
            self._checkpoint(r)  # from now on a killed run always has a checkpoint to resume from
        return r

    def _restore(self, r: _Run, meta: dict) -> None:
        """Take step, history, metrics window and best validation from checkpoint metadata ``meta``."""
        r.step, r.best_val, r.best_step = int(meta["step"]), meta.get("best_val_psnr"), meta.get("best_step")
        r.history = list(meta.get("history", []))
        r.window = TrainWindow.from_record(meta.get("window"))  # metrics of steps since the last log line
        r.guard = CollapseGuard(self.cfg.guard_drop_db, r.history)
        r.last_ckpt_step = r.step

    def _loop(self, r: _Run, stop_requests: _StopRequests) -> None:
        """Train until a stop reason; every sync point checks for a collapse first."""
        while True:
            reason = self._stop_reason(r, stop_requests)
            if reason is None:
                self._train_step(r)
                self._sync_point(r)
                continue
            # the last partial interval is checked and logged too; a rollback there trains on
            rolled_back = self._check(r, log=r.window.steps > 0)
            if not rolled_back or reason == "interrupted":
                r.stopped_by = reason
                return

    def _stop_reason(self, r: _Run, stop_requests: _StopRequests) -> str | None:
        """Why the run stops before its next step (None: it goes on); all processes agree."""
        cfg = self.cfg
        reason = None
        if stop_requests.requested:
            reason = "interrupted"
        elif cfg.max_minutes is not None and r.clock.run_seconds() >= cfg.max_minutes * 60:
            reason = "max_minutes"
        elif cfg.budget_minutes is not None and r.step > 0 and (
                r.clock.elapsed() + _recent_step_seconds(r) > self._horizon(r)):
            reason = "budget"
        if self.dist.enabled:
            codes = ("interrupted", "max_minutes", "budget")
            flags = ddp.all_reduce_sum([float(reason == c) for c in codes], self.device)
            reason = next((c for c, f in zip(codes, flags) if f), None)
        if reason is None and r.step >= cfg.steps:
            reason = "steps"
        return reason

    def _horizon(self, r: _Run) -> float:
        """Seconds of the budget the training steps may use: the budget less the final validation and
        the momentum choice's validations (each as long as the last validation took)."""
        return self.cfg.budget_minutes * 60 - r.val_seconds * (1 + self._momentum_trials(r))

    def _momentum_trials(self, r: _Run) -> int:
        """Validations the momentum choice adds (momentum 0 is the best model's validation score)."""
        return len(MOMENTUM_GRID) - 1 if self.cfg.tune_momentum and r.val_signals is not None else 0

    def _learning_rate(self, r: _Run) -> float:
        if self.cfg.budget_minutes is None:
            return cosine_lr(r.step, self.cfg) * r.schedule.lr_scale
        end = r.clock.elapsed() + _recent_step_seconds(r)
        return budget_lr(r.step, end, self._horizon(r), r.schedule, self.cfg)

    def _train_step(self, r: _Run) -> None:
        """One meta-step; its statistics stay on the device (no host sync)."""
        cfg, dist_info, step = self.cfg, self.dist, r.step
        t0 = r.clock.clock()
        lr = self._learning_rate(r)
        for g in r.optimizer.param_groups:
            g["lr"] = lr * g.get("layer_scale", 1.0)
        batch = self.train_idx[epoch_batch(step, len(self.train_idx), cfg.batch_size, cfg.seed)]
        local = batch[dist_info.rank::dist_info.world_size] if dist_info.enabled else batch
        x = gather_batch(r.train_cache, self.signals, self.train_idx, local, self.device)
        subsets = draw_subsets(r.coords.shape[0], cfg.context_ratio, cfg.inner_steps,
                               generator(cfg.seed, "context", step), self.device)
        r.optimizer.zero_grad(set_to_none=True)
        self.step_cfg = self._step_config(r)
        stats = self.meta_gradient(r.net, r.coords, x, subsets, local, step)
        if dist_info.enabled:
            ddp.all_reduce_gradients(r.params)
            stats = MetaStats.from_sums(stats.count * dist_info.world_size,
                                        ddp.all_reduce_tensor(stats.sums(self.device)))
        r.window.add_step(stats, apply_meta_update(r.params, r.optimizer, cfg))
        r.step += 1
        r.step_times.append(r.clock.clock() - t0)
        r.bar.update(1)

    def _step_config(self, r: _Run) -> TrainConfig:
        """The settings of the next step: first-order during ``first_order_warmup`` (a fraction of
        the steps, or of the time budget)."""
        cfg = self.cfg
        if not cfg.first_order_warmup or cfg.first_order:
            return cfg
        done = (r.step / cfg.steps if cfg.budget_minutes is None
                else r.clock.elapsed() / (cfg.budget_minutes * 60))
        return dataclasses.replace(cfg, first_order=True) if done < cfg.first_order_warmup else cfg

    def _sync_point(self, r: _Run) -> None:
        """After a step: log, validate and checkpoint when due, each after a collapse check."""
        cfg, done = self.cfg, r.step
        log = done % cfg.log_every == 0 or (cfg.budget_minutes is None and done == cfg.steps)
        val = bool(cfg.val_every) and done % cfg.val_every == 0 and done != cfg.steps
        ckpt = (done % cfg.checkpoint_every == 0
                or r.clock.clock() - r.last_ckpt_time > cfg.checkpoint_minutes * 60)
        if not (log or val or ckpt) or self._check(r, log):
            return
        if val:
            self._validate(r, done)
        if ckpt:
            self._checkpoint(r)
            r.last_ckpt_time = r.clock.clock()

    def _check(self, r: _Run, log: bool) -> bool:
        """Read the window (one sync): log it when ``log``, and roll back when the guard sees a
        collapse. Returns whether it rolled back."""
        finite = _all_finite([*r.window.tensors(), *r.params])
        means = r.window.means() if log and finite else None
        reason = r.guard.check(finite, None if means is None else means["psnr_outer"])
        if reason is not None:
            self._rollback(r, reason, means)
            return True
        if means is not None:
            steps = r.step_times[-r.window.steps:]
            r.history.append({"step": r.step, "lr": r.optimizer.param_groups[0]["lr"], **means,
                              "seconds": sum(steps) / max(len(steps), 1)})
            r.bar.set_postfix(psnr=f"{means['psnr_outer']:.2f}")
            r.window = TrainWindow()
        return False

    def _rollback(self, r: _Run, reason: str, means: dict | None) -> None:
        """Return to the last good checkpoint with the schedule scaled by ``rollback_lr_factor``
        (time already spent stays spent), or stop as diverged when no rollback is left."""
        cfg, at = self.cfg, r.step
        if len(r.rollbacks) >= cfg.max_rollbacks:
            raise TrainingDivergedError(
                f"meta-training diverged at step {at} ({reason}) after {len(r.rollbacks)} rollback(s); the last "
                f"good checkpoint (step {r.last_ckpt_step}) is kept in {self.out / CHECKPOINT_DIR}. Lower "
                f"--outer-lr or --inner-lr and pass --overwrite to start over")
        ddp.barrier()
        meta = load_checkpoint(self.out, r.net, r.optimizer)
        self._restore(r, meta)
        r.schedule.lr_scale *= cfg.rollback_lr_factor
        record = {"step": at, "to_step": r.step, "reason": reason, "lr_scale": r.schedule.lr_scale,
                  "psnr_outer": None if means is None else means["psnr_outer"],
                  "minutes": r.clock.elapsed() / 60}
        r.rollbacks.append(record)
        r.history.append({"step": r.step, "rollback": record})
        self._checkpoint(r)   # the same weights, with the lower learning rate and the record: a resumed run keeps them
        _log.warning("meta-training collapsed at step %d (%s): rolled back to step %d, learning rate x%g",
                     at, reason, r.step, r.schedule.lr_scale)
        r.bar.n = r.step
        r.bar.refresh()

    def _checkpoint(self, r: _Run, finished: bool = False) -> None:
        r.schedule.elapsed, r.schedule.step_seconds = r.clock.elapsed(), _recent_step_seconds(r)
        window = r.window.record()   # every process: the read may sync the device
        if self.dist.is_main:
            if r.history:  # first: a checkpoint that exists has its log complete
                _write_log(self.out, r.history)
            save_checkpoint(self.out, r.net, r.optimizer, {
                "step": r.step, "finished": finished, "best_val_psnr": r.best_val, "best_step": r.best_step,
                "config": self._config_record(), "history": r.history, "window": window,
                "schedule": asdict(r.schedule), "rollbacks": r.rollbacks})
        r.last_ckpt_step = r.step

    def _planned_steps(self, r: _Run) -> int:
        """The run's length in steps: ``steps``, or under a time budget an estimate from the step
        times so far (updated as it runs)."""
        if self.cfg.budget_minutes is None:
            return self.cfg.steps
        per_step = _recent_step_seconds(r)
        if per_step <= 0:
            return r.step
        left = max(self._horizon(r) - r.clock.elapsed(), 0.0)
        return min(self.cfg.steps, r.step + int(left / per_step))

    def _finish(self, r: _Run) -> TrainResult:
        """Final validation, the model, summary and figure, and the last checkpoint."""
        step, finished = r.step, r.stopped_by in ("steps", "budget")
        history = r.history
        if r.val_signals is not None and (not history or history[-1].get("val_psnr") is None
                                          or history[-1]["step"] != step):
            self._validate(r, step)
        if r.val_signals is None:
            self._save_model(r.net, step, None)
        momentum = self._tune_momentum(r) if self._momentum_trials(r) and self.dist.is_main else None
        timed = r.step_times[3:] if len(r.step_times) > 5 else r.step_times
        result = TrainResult(
            out=str(self.out), model_id=None, steps_done=step, steps_total=step if
            self.cfg.budget_minutes is not None and finished else self.cfg.steps, finished=finished,
            best_val_psnr=r.best_val, best_step=r.best_step,
            last_train_psnr=next((h["psnr_outer"] for h in reversed(history) if "psnr_outer" in h), None),
            median_step_seconds=statistics.median(timed) if timed else None,
            peak_memory_bytes=peak_memory_bytes(self.device), minutes=r.clock.run_seconds() / 60,
            resumed_from=r.start if r.resumed else None, stopped_by=r.stopped_by, history=history,
            fused_loops=native_loops_used(r.net, self.cfg, self.device),
            schedule="steps" if self.cfg.budget_minutes is None else "time",
            budget_minutes=self.cfg.budget_minutes, rollbacks=list(r.rollbacks),
            schedule_minutes=r.clock.elapsed() / 60, test_momentum=momentum)
        if self.dist.is_main:
            from funcml.encoders.model import read_model_config

            result.model_id = read_model_config(self.out)["id"]
            atomic_write_json(self.out / "summary.json", result.summary())
            try:
                from funcml.viz import plot_training_curves

                plot_training_curves(history, self.out / "training_curves.png")
            except Exception:  # noqa: BLE001 - a figure must never fail a finished run
                pass
        # Last: once the checkpoint says "finished", every other output is already complete.
        self._checkpoint(r, finished=finished)
        ddp.barrier()
        return result

    def _tune_momentum(self, r: _Run) -> float | None:
        """Set the saved model's test-time momentum to the best of :data:`MOMENTUM_GRID` on the validation
        signals (by :meth:`validation_score`); the scores go into its training record. None without a model."""
        if not (self.out / "config.json").is_file():
            return None
        model = FieldModel.load(self.out, device=self.device)
        known = {0.0: r.best_val} if r.best_val is not None else None   # the saved model's own validation
        best, scores = choose_momentum(model.net, r.val_signals, r.enc_cfg, self.validation_score, known=known)
        model.encode_defaults = dataclasses.replace(model.encode_defaults, momentum=best)
        model.training["test_momentum"] = {"chosen": best, "val_scores": {str(m): s for m, s in scores.items()}}
        model.save(self.out)
        _log.info("test-time momentum %g chosen on the validation signals (%s)", best,
                  ", ".join(f"{m:g}: {s:.2f}" for m, s in scores.items()))
        return best

    def _save_model(self, net: ModulatedSiren, step: int, val: float | None) -> None:
        if self.dist.is_main:
            self._model(net, step, val).save(self.out)

    # -- hooks (subclasses change what the outer loss supervises and how the model is selected) --
    def meta_gradient(self, net: ModulatedSiren, coords: torch.Tensor, x: torch.Tensor,
                      subsets: list[torch.Tensor | None], indices: np.ndarray, step: int) -> MetaStats:
        """Accumulate this process's share of the meta-gradient of step ``step`` into ``.grad``.

        ``x`` ``(b, C, *spatial)`` holds the signals ``indices`` of the data on the grid ``coords``.
        """
        return accumulate_batch_meta_gradient(net, coords, x, subsets, self.step_cfg)

    def validation_score(self, net: ModulatedSiren, val_signals: torch.Tensor, enc_cfg: EncodeConfig) -> float:
        """The number the best model is chosen by (higher is better): validation PSNR."""
        return validation_psnr(net, val_signals, enc_cfg)

    def _validate(self, r: _Run, step: int) -> None:
        """Validation score at ``step`` into the history; a new best is saved as the model."""
        if r.val_signals is None:
            return
        t0 = r.clock.clock()
        val = self.validation_score(r.net, r.val_signals, r.enc_cfg) if self.dist.is_main else float("nan")
        history = r.history
        if history and history[-1]["step"] == step and "rollback" not in history[-1]:
            history[-1]["val_psnr"] = val
        else:
            history.append({"step": step, "val_psnr": val})
        if self.dist.is_main and math.isfinite(val) and (r.best_val is None or val > r.best_val):
            r.best_val, r.best_step = val, step
            self._save_model(r.net, step, val)
        r.val_seconds = r.clock.clock() - t0

    def _model(self, net: ModulatedSiren, step: int, val: float | None) -> FieldModel:
        training = {"data": {k: v for k, v in self.signals.describe().items() if k != "info"},
                    "config": asdict(self.cfg), "step": step, "val_psnr": val,
                    "world_size": self.dist.world_size}
        return FieldModel(net, self.signals.signal_shape, encode_config_for(self.cfg), training)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one device sync); the tensors may lie on
    different devices (an empty training window's sums are on the host)."""
    if not tensors:
        return True
    device = next((t.device for t in tensors if t.device.type != "cpu"), torch.device("cpu"))
    return bool(torch.stack([torch.isfinite(t).all().to(device) for t in tensors]).all())


def _only_an_unfinished_first_checkpoint(out: Path) -> bool:
    """``out`` holds nothing but a ``checkpoints/`` folder without ``last.json`` (killed at step 0)."""
    entries = list(out.iterdir())
    if [e.name for e in entries] != [CHECKPOINT_DIR] or not entries[0].is_dir() or entries[0].is_symlink():
        return False
    import re

    return all(re.fullmatch(r"ckpt-0{9}\.safetensors|\..+\.tmp", f.name) and f.is_file()
               for f in entries[0].iterdir())


def _write_log(out: Path, history: list[dict]) -> None:
    import json

    lines = "".join(json.dumps(h, allow_nan=True) + "\n" for h in history)
    from funcml.io import atomic_write_bytes

    atomic_write_bytes(out / "train_log.jsonl", lines.encode())
