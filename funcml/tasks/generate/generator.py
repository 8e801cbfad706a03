"""``LatentGenerator``: a class-conditional diffusion / flow-matching model over latent vectors.

Latents ``(N, P)`` are standardised per dimension (``mean_``, ``scale_``), a
:class:`~funcml.tasks.generate.denoiser.ResidualMLPDenoiser` is trained on them with the chosen
process (:mod:`~funcml.tasks.generate.processes`), labels dropped with probability ``p_uncond``
so that the same network is also the unconditional model, and an exponential moving average of
the weights is kept for sampling. Classifier-free guidance (Ho & Salimans 2022) combines the two
predictions as ``u + w (c - u)``: ``w = 0`` unconditional, ``w = 1`` plain conditional, ``w > 1``
pushes samples further towards their class.

Training is deterministic and resumable: step s draws its batch, times and noise from generators
seeded by ``(seed, s)``, and checkpoints keep weights, EMA weights and optimizer state.
Sampling is reproducible: sample chunk k draws its noise from a generator seeded by ``(seed, k)``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from funcml.errors import ArtifactError, ConfigError, DataError
from funcml.io.artifact import read_artifact_config, verify_listed_file
from funcml.io import (atomic_write_json, canonical_json, load_tensors, save_tensors, sha256_bytes,
                       sha256_file)
from funcml.seeding import derive_seed
from funcml.tasks.generate.denoiser import ResidualMLPDenoiser, default_hidden
from funcml.tasks.generate.config import GeneratorConfig
from funcml.tasks.generate.processes import make_process

FORMAT = "funcml.generator"
VERSION = 1
CONFIG_FILE = "generator.json"
WEIGHTS_FILE = "generator.safetensors"
SAMPLE_CHUNK = 1024


def _as_labels(y: np.ndarray | None, n: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise DataError(f"labels must be one class per latent, shape ({n},); got {y.shape} "
                        "(multi-label sets are modelled without labels)")
    return y.astype(np.int64)


def _every_50(history: list[dict]) -> list[dict]:
    """Per-step losses ``[{"step", "train_loss"}]`` as means over blocks of 50 steps ``[{"step", "loss"}]``."""
    blocks = [history[i:i + 50] for i in range(0, len(history), 50)]
    return [{"step": b[-1]["step"], "loss": float(np.mean([e["train_loss"] for e in b]))} for b in blocks]


class LatentGenerator:
    """Class-conditional generative model of latent vectors (scikit-learn conventions).

    Args: see :class:`GeneratorConfig` (``method`` ``"flow"`` or ``"diffusion"``), plus
        ``device`` and ``progress`` (a bar while fitting). The generator's networks are small: on a
        busy CPU one thread can be faster than several (``torch.set_num_threads`` in your script,
        ``funcml --threads 1`` on the command line).

    Attributes (after :meth:`fit`):
        mean_, scale_: ``(P,)`` the per-dimension standardisation.
        classes_: ``(K,)`` label values (None: unconditional); class_prior_: ``(K,)`` frequencies.
        net_: the EMA denoiser used for sampling; history_: ``[{"step", "loss"}]``;
        n_features_in_: P; training_: summary (steps, seconds, final loss); finished_: False when
        stopped by ``max_minutes`` (a checkpoint is kept; fit again to continue).
    """

    def __init__(self, method: str = "flow", hidden: int | None = None, blocks: int = 3, dropout: float = 0.0,
                 steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup_steps: int = 100, p_uncond: float = 0.15, ema_decay: float = 0.999, sample_steps: int = 50,
                 eta: float = 0.0, seed: int = 0, device: str | torch.device = "cpu",
                 progress: bool = False) -> None:
        self.method = method
        self.hidden = hidden
        self.blocks = blocks
        self.dropout = dropout
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_steps = warmup_steps
        self.p_uncond = p_uncond
        self.ema_decay = ema_decay
        self.sample_steps = sample_steps
        self.eta = eta
        self.seed = seed
        self.device = device
        self.progress = progress

    # -- configuration --------------------------------------------------------------------------
    @property
    def config(self) -> GeneratorConfig:
        return GeneratorConfig(self.method, self.hidden, self.blocks, self.dropout, self.steps, self.batch_size,
                               self.lr, self.weight_decay, self.warmup_steps, self.p_uncond, self.ema_decay,
                               self.sample_steps, self.eta, self.seed)

    @property
    def conditional(self) -> bool:
        return getattr(self, "classes_", None) is not None

    def _build_net(self, latent_dim: int, n_classes: int) -> ResidualMLPDenoiser:
        return ResidualMLPDenoiser(latent_dim, self.hidden or default_hidden(latent_dim), self.blocks, n_classes,
                                   self.dropout)

    def _lr(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        span = max(self.steps - self.warmup_steps, 1)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    # -- training -------------------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray | None = None, *, checkpoint_dir: str | Path | None = None,
            checkpoint_every: int = 500, max_minutes: float | None = None,
            log: Callable[[str], None] | None = None) -> "LatentGenerator":
        """Train on latents ``X`` ``(N, P)`` with optional class labels ``y`` ``(N,)``.

        With ``checkpoint_dir`` the run is checkpointed every ``checkpoint_every`` steps and a
        later ``fit`` with the same data and settings continues from the last checkpoint.
        """
        return self._fit(X, y, checkpoint_dir, checkpoint_every, max_minutes, log)

    def _fit(self, X, y, checkpoint_dir, checkpoint_every, max_minutes, log) -> "LatentGenerator":
        from funcml.engine import Checkpoints, Plan, fit

        cfg = self.config.validate()
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or len(X) < 2:
            raise DataError(f"latents must be (N, P) with N >= 2; got shape {X.shape}")
        if not np.isfinite(X).all():
            raise DataError("latents contain NaN or infinite values")
        labels = _as_labels(y, len(X))
        y_idx = self._learn_standardisation(X, labels)
        device = torch.device(self.device)
        k = 0 if self.classes_ is None else len(self.classes_)
        data = torch.from_numpy((X - self.mean_) / self.scale_).to(device)
        y_all = None if y_idx is None else torch.from_numpy(y_idx.astype(np.int64)).to(device)
        torch.manual_seed(derive_seed(cfg.seed, "init"))
        net = self._build_net(X.shape[1], k).to(device)
        ema = copy.deepcopy(net).requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        job = sha256_bytes(canonical_json({"config": asdict(cfg), "data": sha256_bytes(X.tobytes()),
                                           "labels": None if labels is None else sha256_bytes(labels.tobytes())}))
        # one round per step: the batch, times and noise of step s come from generators seeded by (seed, s)
        plan = Plan(rounds=cfg.steps, lr_at=lambda step, _round: self._lr(step), clip_grad_norm=1.0,
                    max_minutes=max_minutes, check_finite=True, progress=self.progress,
                    desc=f"generate {cfg.method}", unit="step")
        ckpt = None if checkpoint_dir is None else Checkpoints(Path(checkpoint_dir), job, every=checkpoint_every)
        loss = self._loss(net, make_process(cfg.method, cfg.eta), data, y_all, k, cfg)
        run = fit(net, opt, lambda step: [step], loss, plan, after_step=self._ema_update(net, ema, cfg),
                  checkpoints=ckpt, state=nn.ModuleDict({"net": net, "ema": ema}), log=log)
        ema.eval()
        self.net_, self.finished_ = ema, run.stopped_by != "max_minutes"
        self.history_ = _every_50(run.history)
        self.training_ = {"steps_done": run.steps_done, "steps": cfg.steps, "seconds": run.seconds,
                          "resumed_from": run.resumed_from,
                          "final_loss": self.history_[-1]["loss"] if self.history_ else None, "train_latents": len(X)}
        return self

    def _learn_standardisation(self, X: np.ndarray, labels: np.ndarray | None) -> np.ndarray | None:
        """Set ``mean_``, ``scale_``, ``classes_``, ``class_prior_``; return class indices ``(N,)`` or None."""
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0)
        self.scale_ = np.maximum(X.std(axis=0), 1e-6 * max(float(X.std()), 1e-12)).astype(np.float32)
        if labels is None:
            self.classes_, self.class_prior_ = None, None
            return None
        self.classes_, y_idx, counts = np.unique(labels, return_inverse=True, return_counts=True)
        self.class_prior_ = counts / counts.sum()
        return y_idx

    @staticmethod
    def _loss(net: nn.Module, process, data: torch.Tensor, y_all: torch.Tensor | None, k: int,
              cfg: GeneratorConfig) -> Callable[[int], torch.Tensor]:
        """The denoising loss of step ``s``: batch, times, noise and label drops seeded by ``(seed, s)``."""
        n, p, device = data.shape[0], data.shape[1], data.device

        def loss(step: int) -> torch.Tensor:
            g = torch.Generator().manual_seed(derive_seed(cfg.seed, "batch", step))
            idx = torch.randint(n, (cfg.batch_size,), generator=g).to(device)
            t = torch.rand(cfg.batch_size, generator=g).to(device)
            eps = torch.randn(cfg.batch_size, p, generator=g).to(device)
            yb = None
            if y_all is not None:
                drop = (torch.rand(cfg.batch_size, generator=g) < cfg.p_uncond).to(device)
                yb = torch.where(drop, torch.full_like(y_all[idx], k), y_all[idx])
            xt, target = process.training_pair(data[idx], t, eps)
            return (net(xt, t, yb) - target).pow(2).mean()

        return loss

    @staticmethod
    def _ema_update(net: nn.Module, ema: nn.Module, cfg: GeneratorConfig) -> Callable[[int], None]:
        def update(step: int) -> None:
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pn in zip(ema.parameters(), net.parameters()):
                    pe.lerp_(pn, 1 - decay)

        return update

    # -- sampling -------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if getattr(self, "net_", None) is None:
            raise ConfigError("this generator is not fitted yet; call fit first")

    def label_indices(self, labels: np.ndarray) -> np.ndarray:
        """Map label values ``(n,)`` to class indices; unknown labels raise :class:`ConfigError`."""
        if not self.conditional:
            raise ConfigError("this generator was trained without labels; sample without --label")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        pos = np.searchsorted(self.classes_, labels)
        bad = (pos >= len(self.classes_)) | (self.classes_[np.minimum(pos, len(self.classes_) - 1)] != labels)
        if bad.any():
            raise ConfigError(f"label {int(labels[bad][0])} is not a class of this generator "
                              f"(classes: {', '.join(str(int(c)) for c in self.classes_)})")
        return pos

    def draw_labels(self, n: int, seed: int = 0) -> np.ndarray | None:
        """``n`` labels drawn from the training class frequencies (None when unconditional)."""
        if not self.conditional:
            return None
        rng = np.random.default_rng(derive_seed(seed, "validate", 1))
        return self.classes_[rng.choice(len(self.classes_), size=n, p=self.class_prior_)]

    def predict_fn(self, y_idx: torch.Tensor | None, guidance: float):
        """``fn(x, t)``: the (guided) network prediction for class indices ``y_idx`` ``(B,)``."""
        net = self.net_
        k = 0 if self.classes_ is None else len(self.classes_)

        def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if y_idx is None or guidance == 0.0:
                return net(x, t, None)
            if guidance == 1.0:
                return net(x, t, y_idx)
            both = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y_idx, torch.full_like(y_idx, k)]))
            cond, uncond = both.chunk(2)
            return uncond + guidance * (cond - uncond)

        return fn

    def sample(self, n: int, labels: np.ndarray | int | None = None, *, guidance: float = 1.0, seed: int = 0,
               steps: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Draw ``n`` latents.

        Args:
            labels: one label for all, ``(n,)`` labels, or None (drawn from the class frequencies).
            guidance: classifier-free guidance weight w (0 unconditional, 1 conditional).
            seed: the same seed gives the same samples (chunk k of 1024 uses noise seeded by (seed, k)).
            steps: sampler steps (default ``sample_steps``).

        Returns:
            ``(latents (n, P) float32, labels (n,) int64 or None)`` like ``GaussianMixture.sample``.
        """
        return self._sample(n, labels, guidance, seed, steps)

    def _sample(self, n, labels, guidance, seed, steps) -> tuple[np.ndarray, np.ndarray | None]:
        self._check_fitted()
        if n < 1:
            raise ConfigError(f"--n must be >= 1; got {n}")
        if guidance < 0 or not math.isfinite(guidance):
            raise ConfigError(f"--guidance must be a finite number >= 0; got {guidance}")
        steps = int(steps or self.sample_steps)
        if steps < 1:
            raise ConfigError(f"--sample-steps must be >= 1; got {steps}")
        if labels is None:
            labels = self.draw_labels(n, seed)
        elif np.ndim(labels) == 0:
            labels = np.full(n, int(labels), dtype=np.int64)
        else:
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            if len(labels) != n:
                raise ConfigError(f"got {len(labels)} labels for {n} samples")
        y_idx = None if labels is None else self.label_indices(labels)
        process = make_process(self.method, self.eta)
        device = next(self.net_.parameters()).device
        out = np.empty((n, self.n_features_in_), np.float32)
        for k, start in enumerate(range(0, n, SAMPLE_CHUNK)):
            m = min(SAMPLE_CHUNK, n - start)
            g = torch.Generator().manual_seed(derive_seed(seed, "validate", 0, k))
            # always draw a whole chunk (torch's CPU normal sampler depends on the tensor size)
            noise = torch.randn(SAMPLE_CHUNK, self.n_features_in_, generator=g)[:m].to(device)
            yk = None if y_idx is None else torch.from_numpy(y_idx[start:start + m]).to(device)
            x = process.sample(self.predict_fn(yk, float(guidance)), noise, steps, g)
            out[start:start + m] = x.cpu().numpy() * self.scale_ + self.mean_
        return out, labels

    # -- persistence ----------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> str:
        """Write ``generator.json`` + ``generator.safetensors`` into ``directory``; return the id."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {f"net.{k}": v.detach().cpu() for k, v in self.net_.state_dict().items()}
        tensors["norm.mean"] = torch.from_numpy(np.asarray(self.mean_, np.float32))
        tensors["norm.scale"] = torch.from_numpy(np.asarray(self.scale_, np.float32))
        save_tensors(directory / WEIGHTS_FILE, tensors, metadata={"format": FORMAT})
        digest = sha256_file(directory / WEIGHTS_FILE)
        cfg = asdict(self.config)
        gen_id = sha256_bytes(canonical_json({"config": cfg, "weights": digest}))
        atomic_write_json(directory / CONFIG_FILE, {
            "format": FORMAT, "version": VERSION, "id": gen_id, "config": cfg,
            "latent_dim": int(self.n_features_in_),
            "classes": None if self.classes_ is None else [int(c) for c in self.classes_],
            "class_prior": None if self.class_prior_ is None else [float(v) for v in self.class_prior_],
            "training": self.training_, "history": self.history_,
            "files": {WEIGHTS_FILE: digest}, **({"extra": extra} if extra else {}),
        })
        self.id_ = gen_id
        return gen_id

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu") -> "LatentGenerator":
        """Load and verify a saved generator (raises :class:`ArtifactError` when anything is off)."""
        directory = Path(directory)
        meta = read_artifact_config(directory, CONFIG_FILE, FORMAT, VERSION, "generator")
        weights = verify_listed_file(directory, meta, WEIGHTS_FILE)
        try:
            cfg = GeneratorConfig(**meta["config"]).validate()
        except (TypeError, ConfigError) as exc:
            raise ArtifactError(f"{directory}/{CONFIG_FILE}: invalid config ({exc})") from None
        gen = cls(**asdict(cfg), device=device)
        tensors = load_tensors(weights)
        classes = meta.get("classes")
        gen.n_features_in_ = int(meta["latent_dim"])
        gen.classes_ = None if classes is None else np.asarray(classes, dtype=np.int64)
        gen.class_prior_ = None if classes is None else np.asarray(meta["class_prior"], dtype=np.float64)
        gen.mean_ = tensors.pop("norm.mean").numpy()
        gen.scale_ = tensors.pop("norm.scale").numpy()
        net = gen._build_net(gen.n_features_in_, 0 if classes is None else len(classes))
        try:
            net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{weights} does not match the generator architecture: {exc}") from None
        gen.net_ = net.to(device).eval().requires_grad_(False)
        gen.history_ = meta.get("history", [])
        gen.training_ = meta.get("training", {})
        gen.finished_ = True
        gen.id_ = meta["id"]
        gen.meta_ = meta
        return gen
