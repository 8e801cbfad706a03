"""The generator's settings (a light module: the CLI reads its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

from funcml.errors import ConfigError

METHODS = ("flow", "diffusion")


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that defines a generator's training (stored with it)."""

    method: str = "flow"
    hidden: int | None = None
    blocks: int = 3
    dropout: float = 0.0
    steps: int = 3000
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    p_uncond: float = 0.15
    ema_decay: float = 0.999
    sample_steps: int = 50
    eta: float = 0.0
    seed: int = 0

    def validate(self) -> "GeneratorConfig":
        checks = [
            (self.method in METHODS, f"--method must be one of {sorted(METHODS)}; got {self.method!r}"),
            (self.hidden is None or self.hidden >= 8, f"--hidden must be >= 8; got {self.hidden}"),
            (self.blocks >= 1, f"--blocks must be >= 1; got {self.blocks}"),
            (0 <= self.dropout < 1, f"--dropout must be in [0, 1); got {self.dropout}"),
            (self.steps >= 1, f"--steps must be >= 1; got {self.steps}"),
            (self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive; got {self.lr}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0; got {self.weight_decay}"),
            (self.warmup_steps >= 0, f"--warmup-steps must be >= 0; got {self.warmup_steps}"),
            (0 <= self.p_uncond < 1, f"--p-uncond must be in [0, 1); got {self.p_uncond}"),
            (0 <= self.ema_decay < 1, f"--ema-decay must be in [0, 1); got {self.ema_decay}"),
            (self.sample_steps >= 1, f"--sample-steps must be >= 1; got {self.sample_steps}"),
            (0 <= self.eta <= 1, f"--eta must be in [0, 1]; got {self.eta}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self
