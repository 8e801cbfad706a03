"""Training statistics kept on the device, and the collapse guard that reads them.

Meta-training can collapse: after thousands of good steps the training PSNR falls by 10-20 dB and
does not recover (see docs/fidelity.md). :class:`CollapseGuard` detects it from the statistics of
each log interval, non-finite values as well as a PSNR far below the best so far; the trainer then
rolls back to its last good checkpoint with a lower learning rate. :class:`TrainWindow` sums the
per-step statistics on the device so that nothing is read back to the host between log lines.
"""

from __future__ import annotations

import math

import torch

from funcml.encoders.meta import MetaStats


class TrainWindow:
    """The steps since the last log line: their :class:`MetaStats`, step count, summed learning rate
    and outer gradient norm (before clipping), the latter as device tensors."""

    def __init__(self, stats: MetaStats | None = None, steps: int = 0, grad_norm: float = 0.0,
                 grad_norm_max: float = 0.0) -> None:
        self.stats = stats or MetaStats()
        self.steps = steps
        self.grad_norm: float | torch.Tensor = grad_norm
        self.grad_norm_max: float | torch.Tensor = grad_norm_max

    def add_step(self, stats: MetaStats, grad_norm: torch.Tensor) -> None:
        """Add one meta-step (``grad_norm``: 0-d tensor, not read)."""
        self.stats.merge(stats)
        self.steps += 1
        g = grad_norm.detach().to(torch.float64)
        self.grad_norm = self.grad_norm + g
        self.grad_norm_max = torch.maximum(torch.as_tensor(self.grad_norm_max, dtype=torch.float64,
                                                           device=g.device), g)

    def tensors(self) -> list[torch.Tensor]:
        """What must be finite for the window to be healthy (for one joint check)."""
        device = next((v.device for v in (self.grad_norm, self.stats.outer_loss) if isinstance(v, torch.Tensor)),
                      torch.device("cpu"))
        return [self.stats.sums(device), torch.as_tensor(self.grad_norm, dtype=torch.float64, device=device)]

    def means(self) -> dict[str, float]:
        """Mean losses, PSNRs and gradient norm of the window (one sync)."""
        n = max(self.steps, 1)
        return {**self.stats.means(), "grad_norm": float(self.grad_norm) / n,
                "grad_norm_max": float(self.grad_norm_max)}

    def record(self) -> dict:
        """Plain numbers for a checkpoint (one sync)."""
        return {**self.stats.as_floats(), "steps": self.steps, "grad_norm": float(self.grad_norm),
                "grad_norm_max": float(self.grad_norm_max)}

    @classmethod
    def from_record(cls, record: dict | None) -> "TrainWindow":
        record = dict(record or {})
        extra = {k: record.pop(k) for k in ("steps", "grad_norm", "grad_norm_max") if k in record}
        return cls(MetaStats(**record), **extra)


class CollapseGuard:
    """Decide from each log interval whether training collapsed.

    A collapse is a non-finite loss, gradient or weight, or a logged training PSNR more than
    ``drop_db`` below the best logged so far (``drop_db`` 0: non-finite values only).
    """

    def __init__(self, drop_db: float, history: list[dict] | None = None) -> None:
        self.drop_db = drop_db
        values = [h["psnr_outer"] for h in history or [] if math.isfinite(h.get("psnr_outer", math.nan))]
        self.best: float | None = max(values) if values else None

    def check(self, finite: bool, psnr: float | None = None) -> str | None:
        """The reason for a rollback, or None when the interval is healthy (then ``psnr`` counts
        towards the best)."""
        if not finite or (psnr is not None and not math.isfinite(psnr)):
            return "non-finite loss, gradient or weights"
        if psnr is None:
            return None
        if self.drop_db > 0 and self.best is not None and psnr < self.best - self.drop_db:
            return f"training PSNR {psnr:.2f} dB, {self.best - psnr:.1f} dB below its best {self.best:.2f} dB"
        self.best = psnr if self.best is None else max(self.best, psnr)
        return None
