"""Configuration dataclasses of the encoder stack: architecture, meta-training, encoding.

Every field can be overridden from ``funcml train`` options; ``validate()`` checks ranges and
raises :class:`~funcml.errors.ConfigError` naming the bad value.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from funcml.backends.execution import BACKENDS
from funcml.errors import ConfigError

T = TypeVar("T")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _finite(**values: float | None) -> None:
    """Refuse NaN and infinite values (``--outer-lr inf`` would silently ruin a run)."""
    for name, value in values.items():
        if value is not None and not math.isfinite(value):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number; got {value}")


@dataclass(frozen=True)
class FieldConfig:
    """Architecture of the latent-modulated SIREN.

    Attributes:
        dim_in: coordinate dimension (1 for ECG, 2 for images, 3 for volumes).
        channels: output channels C (1 grey, 3 RGB, ...).
        width: hidden width L.
        depth: number of linear layers K, output layer included (the official ``num_layers``):
            K - 1 modulated sine layers and one linear output layer.
        latent_dim: size P of the latent vector phi.
        omega_first, omega_last: the omega-schedule: layer k (k = 1..K) uses
            ``omega_k = omega_first + (k - 1) (omega_last - omega_first) / (K - 1)``
            in ``sin(omega_k (W_k x + b_k + s_k))`` and in its SIREN initialisation
            (the output layer's omega only sets its initialisation). Equal values give classic SIREN.
        meta_sgd: learn a per-dimension inner learning rate (Meta-SGD, as in Functa).
    """

    dim_in: int
    channels: int
    width: int = 256
    depth: int = 15
    latent_dim: int = 2048
    omega_first: float = 20.0
    omega_last: float = 400.0
    meta_sgd: bool = False

    def validate(self) -> "FieldConfig":
        _finite(omega_first=self.omega_first, omega_last=self.omega_last)
        _check(self.dim_in in (1, 2, 3), f"dim_in must be 1, 2 or 3; got {self.dim_in}")
        _check(self.channels >= 1, f"channels must be >= 1; got {self.channels}")
        _check(self.width >= 1, f"--width must be >= 1; got {self.width}")
        _check(self.depth >= 2, f"--depth counts the output layer and must be >= 2; got {self.depth}")
        _check(self.latent_dim >= 1, f"--latent-dim must be >= 1; got {self.latent_dim}")
        _check(self.omega_first > 0 and self.omega_last > 0,
               f"omegas must be positive; got {self.omega_first} -> {self.omega_last}")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Meta-training (second-order CAVIA with context reduction) and its bookkeeping.

    Attributes:
        steps: outer (meta) steps; the cosine learning-rate schedule spans them.
        batch_size: meta-batch size (signals per outer step, over all processes).
        micro_batch_size: signals per forward/backward pass; the gradients of the parts are
            accumulated, so the update equals the full-batch one. None: automatic (on CPU sized to
            bound the activation memory, see ``trainer.auto_micro_batch``; on CUDA the whole batch).
        inner_steps: G, inner SGD steps on phi per outer step.
        inner_lr: alpha, the inner learning rate (the initial value when meta-SGD is on).
        context_ratio: gamma, the fraction of coordinates each inner step sees (a fresh random
            subset at every step); the outer loss always uses all coordinates.
        first_order: drop second-order terms (gradients do not flow through the inner updates).
        first_order_warmup: the first this fraction of the schedule (of ``steps``, or of the time
            budget) runs first-order, the rest second-order.
        outer_lr: peak AdamW learning rate of the shared weights theta.
        omega_lr: each sine layer's weights learn at ``omega_1 / omega_k`` times ``outer_lr`` (the
            same phase change per step in every layer; see ``trainer.param_groups``).
        weight_decay: AdamW weight decay.
        grad_clip: clip the global gradient norm of theta to this value (0 disables).
        warmup_steps: linear warm-up before the cosine decay.
        min_lr_ratio: the cosine schedule decays to ``outer_lr * min_lr_ratio``.
        val_every: validation PSNR on held-out signals every this many steps (0: only at the end).
        val_signals: how many held-out signals the validation encodes.
        test_steps: H, test-time steps used to encode (validation and the model's default).
        grad_rescale: test-time gradient-norm rescaling as in the official code.
        tune_momentum: at the end, choose the model's test-time momentum (``EncodeConfig.momentum``)
            on the validation signals from ``MOMENTUM_GRID`` of :mod:`funcml.encoders.trainer`.
        checkpoint_every: save a resumable checkpoint every this many steps (and every
            ``checkpoint_minutes``), whichever comes first.
        checkpoint_minutes: time-based checkpoint interval.
        log_every: record training metrics every this many steps.
        seed: seeds every random choice (batches, context subsets, initialisation).
        max_minutes: stop (and keep a resumable checkpoint) after this much wall time; the
            schedule still spans ``steps``.
        budget_minutes: a time budget that is the schedule: warm-up, then cosine decay over the
            wall time, and training ends when the budget is spent (``steps`` is then only an upper
            bound). None: the schedule spans ``steps``.
        guard_drop_db: the collapse guard rolls back to the last good checkpoint when the logged
            training PSNR falls this far below its best (0: only non-finite values trigger it).
        max_rollbacks: rollbacks allowed before the run stops as diverged.
        rollback_lr_factor: each rollback multiplies the learning-rate schedule by this factor.
        recompute: keep only each inner step's inputs and recompute its intermediates in the
            backward (same result; less memory for about a third more inner-loop work).
        compile: run the fused kernels through ``torch.compile`` (same result; minutes of compile
            time on a CPU, pays for long runs; no CUDA graphs, see docs/gpu.md).
        precision: matmuls of the per-coordinate activations in "fp32", "tf32" (CUDA tensor cores)
            or "bf16"; "auto" (default): tf32 on CUDA, fp32 elsewhere (a trainer records the
            resolved value). The lower precisions change results (see docs/gpu.md).
        backend: which implementation computes the meta-gradient: "reference" (plain autograd),
            "fused" (hand-derived reverse), "cpu" (fused with C loops) or "auto" (default: cpu on a
            CPU where the loops are built, else fused); see :mod:`funcml.backends`. The same math;
            float rounding differs.
    """

    steps: int = 250_000
    batch_size: int = 24
    micro_batch_size: int | None = None
    inner_steps: int = 10
    inner_lr: float = 1e-2
    context_ratio: float = 0.25
    first_order: bool = False
    first_order_warmup: float = 0.0
    outer_lr: float = 3e-6
    omega_lr: bool = False
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    val_every: int = 1000
    val_signals: int = 256
    test_steps: int = 20
    grad_rescale: bool = True
    tune_momentum: bool = True
    checkpoint_every: int = 1000
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    seed: int = 0
    max_minutes: float | None = None
    budget_minutes: float | None = None
    guard_drop_db: float = 5.0
    max_rollbacks: int = 3
    rollback_lr_factor: float = 0.5
    recompute: bool = False
    compile: bool = False
    precision: str = "auto"
    backend: str = "auto"

    def validate(self) -> "TrainConfig":
        _finite(inner_lr=self.inner_lr, context_ratio=self.context_ratio, outer_lr=self.outer_lr,
                first_order_warmup=self.first_order_warmup,
                weight_decay=self.weight_decay, grad_clip=self.grad_clip, min_lr_ratio=self.min_lr_ratio,
                checkpoint_minutes=self.checkpoint_minutes, max_minutes=self.max_minutes,
                budget_minutes=self.budget_minutes, guard_drop_db=self.guard_drop_db,
                rollback_lr_factor=self.rollback_lr_factor)
        _check(self.steps >= 1, f"--steps must be >= 1; got {self.steps}")
        _check(self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        _check(self.micro_batch_size is None or self.micro_batch_size >= 1,
               f"--micro-batch-size must be >= 1; got {self.micro_batch_size}")
        _check(self.inner_steps >= 0, f"--inner-steps must be >= 0; got {self.inner_steps}")
        _check(self.inner_lr > 0, f"--inner-lr must be > 0; got {self.inner_lr}")
        _check(0 < self.context_ratio <= 1, f"--context-ratio must be in (0, 1]; got {self.context_ratio}")
        _check(self.outer_lr > 0, f"--outer-lr must be > 0; got {self.outer_lr}")
        _check(self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}")
        _check(self.grad_clip >= 0, f"--grad-clip must be >= 0; got {self.grad_clip}")
        _check(0 <= self.min_lr_ratio <= 1, f"--min-lr-ratio must be in [0, 1]; got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {self.warmup_steps}")
        _check(self.val_every >= 0 and self.val_signals >= 1, "--val-every must be >= 0 and --val-signals >= 1")
        _check(self.test_steps >= 0, f"--test-steps must be >= 0; got {self.test_steps}")
        _check(self.checkpoint_every >= 1, f"--checkpoint-every must be >= 1; got {self.checkpoint_every}")
        _check(self.checkpoint_minutes > 0, f"checkpoint_minutes must be > 0; got {self.checkpoint_minutes}")
        _check(self.log_every >= 1, f"log_every must be >= 1; got {self.log_every}")
        _check(self.max_minutes is None or self.max_minutes > 0, f"--max-minutes must be > 0; got {self.max_minutes}")
        _check(self.budget_minutes is None or self.budget_minutes > 0,
               f"--max-minutes (the budget) must be > 0; got {self.budget_minutes}")
        _check(self.guard_drop_db >= 0, f"--guard-drop-db must be >= 0; got {self.guard_drop_db}")
        _check(self.max_rollbacks >= 0, f"--max-rollbacks must be >= 0; got {self.max_rollbacks}")
        _check(0 < self.rollback_lr_factor <= 1, f"rollback_lr_factor must be in (0, 1]; got {self.rollback_lr_factor}")
        _check(0 <= self.first_order_warmup <= 1, f"--first-order-warmup must be in [0, 1]; got {self.first_order_warmup}")
        _check_execution(self.precision, self.backend)
        return self


def _check_execution(precision: str, backend: str) -> None:
    _check(precision in ("auto", "fp32", "tf32", "bf16"),
           f"--precision must be auto, fp32, tf32 or bf16; got {precision!r}")
    _check(backend in BACKENDS, f"--backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


@dataclass(frozen=True)
class EncodeConfig:
    """Test-time optimisation of phi with theta frozen.

    Attributes:
        steps: H, SGD steps on phi (from zero).
        inner_lr: alpha (ignored with meta-SGD models, which use their learnt rates).
        context_ratio: gamma for the subsampled gradient (used for the rescaling norm, or as
            the gradient itself with ``grad_rescale=False``).
        grad_rescale: official-code test-time rule: step along the full-context gradient,
            rescaled per signal to the norm of the subsampled one.
        batch_size: signals encoded together.
        seed: seeds the context subsets (encoding is deterministic for a given seed and batch size).
        optimizer: "sgd" (steps of ``inner_lr``, or of the meta-learnt rates of a meta-SGD model)
            or "adam" (Adam on phi with learning rate ``adam_lr``, fed the same gradients).
        adam_lr: Adam's learning rate.
        momentum: heavy-ball momentum of the SGD steps on phi (0: plain SGD; Adam ignores it). A
            model's default is chosen for its H on its validation signals at the end of
            meta-training (see :meth:`at_steps`).
        auto_stop: stop each signal when its loss has not improved by ``stop_tol`` (relative) for
            ``stop_patience`` steps, keeping its best latent; ``steps`` is then the most it takes.
        backend: which implementation computes the test-time gradients (see ``TrainConfig.backend``).
        precision: matmul precision, "auto" (tf32 on CUDA, fp32 elsewhere), "fp32", "tf32" or "bf16".
        compile: run the fused kernels through ``torch.compile``.
    """

    steps: int = 20
    inner_lr: float = 1e-2
    context_ratio: float = 0.25
    grad_rescale: bool = True
    batch_size: int = 64
    seed: int = 0
    optimizer: str = "sgd"
    adam_lr: float = 1e-2
    momentum: float = 0.0
    auto_stop: bool = False
    stop_tol: float = 1e-3
    stop_patience: int = 5
    backend: str = "auto"
    precision: str = "auto"
    compile: bool = False

    def at_steps(self, steps: int | None = None, auto_stop: bool = False) -> "EncodeConfig":
        """This config with ``steps`` test-time steps (None: unchanged), or at most ``steps`` with
        ``auto_stop``. A model's momentum is chosen for its H: at another H, or stopping per signal,
        the steps are plain SGD (momentum 0) unless a momentum is set afterwards."""
        if steps is None or (steps == self.steps and auto_stop == self.auto_stop):
            return self
        return dataclasses.replace(self, steps=steps, auto_stop=auto_stop, momentum=0.0)

    def validate(self) -> "EncodeConfig":
        _finite(inner_lr=self.inner_lr, context_ratio=self.context_ratio, adam_lr=self.adam_lr, stop_tol=self.stop_tol)
        _check(self.optimizer in ("sgd", "adam"), f"--optimizer must be sgd or adam; got {self.optimizer!r}")
        _check(self.adam_lr > 0, f"--adam-lr must be > 0; got {self.adam_lr}")
        _finite(momentum=self.momentum)
        _check(0 <= self.momentum < 1, f"--momentum must be in [0, 1); got {self.momentum}")
        _check(self.stop_tol >= 0 and self.stop_patience >= 1,
               f"stop_tol must be >= 0 and stop_patience >= 1; got {self.stop_tol}, {self.stop_patience}")
        _check(self.steps >= 0, f"--steps must be >= 0; got {self.steps}")
        _check(self.inner_lr > 0, f"--inner-lr must be > 0; got {self.inner_lr}")
        _check(0 < self.context_ratio <= 1, f"--context-ratio must be in (0, 1]; got {self.context_ratio}")
        _check(self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        _check_execution(self.precision, self.backend)
        return self


# Fields added after models and latent sets were first written: a file without them reads as these.
ENCODE_ADDED = {"backend": "auto", "precision": "auto", "compile": False,
                "optimizer": "sgd", "adam_lr": 1e-2, "auto_stop": False, "stop_tol": 1e-3, "stop_patience": 5,
                "momentum": 0.0}


def to_dict(cfg: Any) -> dict:
    return asdict(cfg)


def from_dict(cls: type[T], data: dict, what: str = "config", require_all: bool = False) -> T:
    """Build a config dataclass from a dict, refusing unknown keys and values of the wrong type (a corrupt
    or foreign file). ``require_all``: every field must be present (files funcml wrote in full)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a JSON object")
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(f"{what} has unknown field(s) {sorted(unknown)}")
    missing = sorted(names - set(data)) if require_all else []
    if missing:
        raise ConfigError(f"{what} lacks field(s) {missing}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if not _type_ok(value, hints[key]):
            expected = str(hints[key]).replace("typing.", "").replace("<class '", "").replace("'>", "")
            raise ConfigError(f"{what}: {key} must be {expected}, got {value!r}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"{what} is incomplete: {exc}") from None


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a field annotation (``int``, ``float``, ``bool``, ``X | None``)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_type_ok(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return True


def replace(cfg: T, **changes: Any) -> T:
    """``dataclasses.replace`` that ignores None values (unset CLI options)."""
    return dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
