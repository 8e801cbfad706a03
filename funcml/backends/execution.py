"""How the method runs: which backend, at which matmul precision, compiled or not.

An :class:`Execution` is immutable and travels as an argument (``meta.accumulate_meta_gradient(...,
execution=...)``); a run builds it from its configuration (:meth:`Execution.of` a
:class:`~funcml.encoders.config.TrainConfig` or :class:`~funcml.encoders.config.EncodeConfig`, whose
``backend``, ``precision`` and ``compile`` fields the model and the latent set record).

Backends (``--backend``):

* ``reference``: the method as written in :mod:`funcml.encoders.meta` and :mod:`funcml.encoders.fitting`,
  plain autograd (a double backward through the inner loop);
* ``fused``: the hand-derived reverse of :mod:`funcml.backends.kernels` as autograd Functions
  (:mod:`funcml.backends.fused`), element-wise work in ATen; CPU and CUDA;
* ``cpu``: ``fused`` with its element-wise work in funcml's C loops and encoding in the tiled pass
  (:mod:`funcml.backends.native`, :mod:`funcml.backends.tiled`); a CPU, and the loops built at install;
* ``auto`` (default): ``cpu`` on a CPU where the loops are built, else ``fused``.

``fused`` and ``cpu`` apply to a plain :class:`~funcml.encoders.siren.ModulatedSiren` on one shared grid
with data that need no gradient; anything else runs the reference whatever the choice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from funcml import environment
from funcml.backends.precision import PRECISIONS, resolve
from funcml.errors import ConfigError

BACKENDS = ("auto", "reference", "fused", "cpu")


class Options(Protocol):
    """What a configuration says about execution (``TrainConfig``, ``EncodeConfig``)."""

    backend: str
    precision: str
    compile: bool


@dataclass(frozen=True)
class Execution:
    """Execution options of the fitting stack (they change speed, memory and float rounding, never the math,
    except ``precision``).

    Attributes:
        backend: one of :data:`BACKENDS`.
        precision: of the per-coordinate matmuls: ``fp32``, ``tf32`` or ``bf16`` (resolved: not ``auto``).
        compile: run the fused kernels through ``torch.compile``.
        shared_first: run steps from ``phi = 0`` on one field shared by the batch (off only to measure it).
        tiled: the ``cpu`` backend's tiled latent-gradient pass (off only to measure it; default
            ``$FUNCML_TILED``, on).
    """

    backend: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    shared_first: bool = True
    tiled: bool = field(default_factory=environment.tiled_pass)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"an execution's precision must be one of {PRECISIONS}; got {self.precision!r}")

    @classmethod
    def of(cls, options: Options, device: torch.device | str) -> "Execution":
        """The execution a configuration asks for on ``device`` (``precision="auto"`` resolved there)."""
        return cls(backend=options.backend, precision=resolve(options.precision, device),
                   compile=bool(options.compile))
