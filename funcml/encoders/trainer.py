"""Meta-training loop: outer AdamW on theta through G unrolled inner steps on phi.

The loop is deterministic and resumable: batch membership and context subsets of step s are
drawn from generators seeded by (seed, s), and weights plus optimizer state are checkpointed, so
a run resumed from step s continues exactly the trajectory of an uninterrupted run. Validation
PSNR (test-time encoding of held-out signals) is measured every ``val_every`` steps and the best
model is kept as the output model directory.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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
from funcml.encoders.meta import MetaStats, accumulate_meta_gradient, draw_subsets
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ConfigError, DataError, FuncmlError, OutputExistsError, TrainingDivergedError
from funcml.io import atomic_write_json
from funcml.io.lock import OutputLock
from funcml.seeding import derive_seed, epoch_batch, generator

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
                "recompute", "compile"}
_TRAIN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
_TRAIN_DEFAULTS["precision"] = "fp32"  # what runs recorded before the field existed used
CACHE_BYTES = 4 << 30


def cosine_lr(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update ``step`` (0-based): linear warm-up, then cosine to ``min_lr_ratio``."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.outer_lr * (step + 1) / cfg.warmup_steps
    span = max(cfg.steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    floor = cfg.outer_lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.outer_lr - floor) * (1.0 + math.cos(math.pi * progress))


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


def make_optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """The outer AdamW on theta; its fused implementation (one pass over each parameter instead of
    about ten: 14-17 against 104-194 ms a step for the 3D preset's 30M parameters on two CPU cores,
    ``benchmarks/bench_pieces.py``; the same update up to float rounding) where this torch and device
    have it."""
    try:
        return torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):   # e.g. no fused kernel for this device in this torch
        return torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)


def apply_meta_update(params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """Clip the global gradient norm (if set) and take the AdamW step."""
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    optimizer.step()


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

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("history")
        d["val_psnr"] = self.best_val_psnr
        d["peak_memory_mb"] = self.peak_memory_bytes / 2**20
        return d


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
    """

    def __init__(self, field: FieldConfig, train: TrainConfig, signals: SignalSet, out: str | Path,
                 device: torch.device | str = "cpu", *, resume: bool | None = None, overwrite: bool = False,
                 progress: bool = True) -> None:
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
        cfg, dist_info = self.cfg, self.dist
        t_start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        net = ModulatedSiren(self.field, inner_lr=cfg.inner_lr).to(self.device)
        params = [p for p in net.parameters()]
        optimizer = make_optimizer(params, cfg)
        meta = self._resume_decision
        history: list[dict] = []
        best_val, best_step, start = None, None, 0
        window = MetaStats()
        if meta is not None:
            meta = load_checkpoint(self.out, net, optimizer)
            start, best_val, best_step = int(meta["step"]), meta.get("best_val_psnr"), meta.get("best_step")
            history = list(meta.get("history", []))
            window = MetaStats(**meta.get("window", {}))  # metrics of steps since the last log line
        if dist_info.enabled:
            ddp.broadcast_parameters(net)
        if dist_info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            for stale in self.out.glob(".*.tmp"):  # half-written files of a killed run (we hold the lock)
                stale.unlink(missing_ok=True)

        train_cache, _ = self._load_train_signals()
        val_signals = torch.from_numpy(self.signals.get(self.val_idx)).to(self.device) if len(self.val_idx) else None
        coords = make_grid(self.signals.spatial_shape, device=self.device)
        n_coords = coords.shape[0]
        enc_cfg = dataclasses.replace(encode_config_for(cfg), backend=cfg.backend, precision=cfg.precision,
                                      compile=cfg.compile)  # validation runs as the training does
        local_bs = cfg.batch_size // dist_info.world_size

        step_times: list[float] = []
        last_ckpt_time = time.perf_counter()
        stopped_by = "steps"
        last_train_psnr = next((h["psnr_outer"] for h in reversed(history) if "psnr_outer" in h), None)
        last_ckpt_step = start
        bar = progress_bar(total=cfg.steps, initial=start, desc="meta-train", unit="step",
                   disable=not (self.progress and dist_info.is_main), leave=False)

        def checkpoint(step: int, finished: bool = False) -> None:
            nonlocal last_ckpt_step
            if dist_info.is_main:
                if history:  # first: a checkpoint that exists has its log complete
                    _write_log(self.out, history)
                save_checkpoint(self.out, net, optimizer, {
                    "step": step, "finished": finished, "best_val_psnr": best_val, "best_step": best_step,
                    "config": self._config_record(), "history": history, "window": asdict(window)})
            last_ckpt_step = step

        def diverged(step: int, what: str) -> TrainingDivergedError:
            return TrainingDivergedError(
                f"meta-training diverged at step {step} ({what}); the last good checkpoint (step {last_ckpt_step}) "
                f"is kept in {self.out / CHECKPOINT_DIR}. Lower --outer-lr or --inner-lr and pass --overwrite "
                f"to start over")

        def save_model(step: int, val: float | None) -> None:
            if dist_info.is_main:
                self._model(net, step, val).save(self.out)

        if meta is None:
            checkpoint(0)  # from now on a killed run always has a checkpoint to resume from
        step = start
        interrupted = False
        with _StopRequests() as stop_requests:
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                for g in optimizer.param_groups:
                    g["lr"] = cosine_lr(step, cfg)
                batch = self.train_idx[epoch_batch(step, len(self.train_idx), cfg.batch_size, cfg.seed)]
                local = batch[dist_info.rank::dist_info.world_size] if dist_info.enabled else batch
                pos = np.searchsorted(self.train_idx, local)
                x = (train_cache[torch.from_numpy(pos).to(train_cache.device)] if train_cache is not None
                     else torch.from_numpy(self.signals.get(local))).to(self.device, non_blocking=True)
                subsets = draw_subsets(n_coords, cfg.context_ratio, cfg.inner_steps,
                                       generator(cfg.seed, "context", step), self.device)
                optimizer.zero_grad(set_to_none=True)
                stats = self.meta_gradient(net, coords, x, subsets, local, step)
                elapsed_min = (time.perf_counter() - t_start) / 60
                stop_flag = float((cfg.max_minutes is not None and elapsed_min >= cfg.max_minutes)
                                  or stop_requests.requested)
                if dist_info.enabled:
                    ddp.all_reduce_gradients(params)
                    sums = ddp.all_reduce_sum([stats.count, stats.outer_loss, stats.inner_loss, stats.outer_psnr,
                                               stats.inner_psnr, stop_flag], self.device)
                    stats = MetaStats(int(sums[0]), *sums[1:5])
                    stop_flag = sums[5]
                grads_finite = _all_finite([p.grad for p in params if p.grad is not None])
                if not (math.isfinite(stats.outer_loss) and grads_finite):
                    raise diverged(step + 1, "non-finite loss or gradient")
                apply_meta_update(params, optimizer, cfg)
                if not _all_finite(params):
                    raise diverged(step + 1, "the update made weights non-finite")
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                step_times.append(time.perf_counter() - t0)
                window.merge(stats)
                done = step + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.steps:
                    means = window.means()
                    last_train_psnr = means["psnr_outer"]
                    history.append({"step": done, "lr": optimizer.param_groups[0]["lr"], **means,
                                    "seconds": step_times[-1]})
                    bar.set_postfix(psnr=f"{means['psnr_outer']:.2f}")
                    window = MetaStats()
                if cfg.val_every and done % cfg.val_every == 0 and done != cfg.steps:
                    best_val, best_step = self._validate(net, val_signals, enc_cfg, done, history, best_val,
                                                         best_step, save_model)
                interrupted = interrupted or stop_requests.requested
                if stop_flag:
                    stopped_by = "interrupted" if interrupted else "max_minutes"
                    step = done
                    break
                if done % cfg.checkpoint_every == 0 or time.perf_counter() - last_ckpt_time > cfg.checkpoint_minutes * 60:
                    checkpoint(done)
                    last_ckpt_time = time.perf_counter()
            else:
                step = cfg.steps
        bar.close()
        if interrupted:
            checkpoint(step)
            raise TrainingInterrupted(f"interrupted after step {step}; checkpoint saved in {self.out / 'checkpoints'}. "
                                      f"Rerun the same command to resume.")

        finished = step >= cfg.steps
        if val_signals is not None and (not history or history[-1].get("val_psnr") is None or
                                         history[-1]["step"] != step):
            best_val, best_step = self._validate(net, val_signals, enc_cfg, step, history, best_val, best_step,
                                                 save_model)
        if val_signals is None:
            save_model(step, None)
        timed = step_times[3:] if len(step_times) > 5 else step_times
        result = TrainResult(
            out=str(self.out), model_id=None, steps_done=step, steps_total=cfg.steps, finished=finished,
            best_val_psnr=best_val, best_step=best_step, last_train_psnr=last_train_psnr,
            median_step_seconds=statistics.median(timed) if timed else None,
            peak_memory_bytes=peak_memory_bytes(self.device), minutes=(time.perf_counter() - t_start) / 60,
            resumed_from=start if meta is not None else None, stopped_by=stopped_by, history=history,
            fused_loops=native_loops_used(net, cfg, self.device))
        if dist_info.is_main:
            from funcml.encoders.model import read_model_config

            result.model_id = read_model_config(self.out)["id"]
            atomic_write_json(self.out / "summary.json", result.summary())
            try:
                from funcml.viz import plot_training_curves

                plot_training_curves(history, self.out / "training_curves.png")
            except Exception:  # noqa: BLE001 - a figure must never fail a finished run
                pass
        # Last: once the checkpoint says "finished", every other output is already complete.
        checkpoint(step, finished=finished)
        ddp.barrier()
        return result

    # -- hooks (subclasses change what the outer loss supervises and how the model is selected) --
    def meta_gradient(self, net: ModulatedSiren, coords: torch.Tensor, x: torch.Tensor,
                      subsets: list[torch.Tensor | None], indices: np.ndarray, step: int) -> MetaStats:
        """Accumulate this process's share of the meta-gradient of step ``step`` into ``.grad``.

        ``x`` ``(b, C, *spatial)`` holds the signals ``indices`` of the data on the grid ``coords``.
        """
        return accumulate_batch_meta_gradient(net, coords, x, subsets, self.cfg)

    def validation_score(self, net: ModulatedSiren, val_signals: torch.Tensor, enc_cfg: EncodeConfig) -> float:
        """The number the best model is chosen by (higher is better): validation PSNR."""
        return validation_psnr(net, val_signals, enc_cfg)

    def _validate(self, net, val_signals, enc_cfg, step, history, best_val, best_step, save_model):
        if val_signals is None:
            return best_val, best_step
        val = self.validation_score(net, val_signals, enc_cfg) if self.dist.is_main else float("nan")
        if history and history[-1]["step"] == step:
            history[-1]["val_psnr"] = val
        else:
            history.append({"step": step, "val_psnr": val})
        if self.dist.is_main and math.isfinite(val) and (best_val is None or val > best_val):
            best_val, best_step = val, step
            save_model(step, val)
        return best_val, best_step

    def _model(self, net: ModulatedSiren, step: int, val: float | None) -> FieldModel:
        training = {"data": {k: v for k, v in self.signals.describe().items() if k != "info"},
                    "config": asdict(self.cfg), "step": step, "val_psnr": val,
                    "world_size": self.dist.world_size}
        return FieldModel(net, self.signals.signal_shape, encode_config_for(self.cfg), training)


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every element of every tensor is finite (one device sync)."""
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


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
