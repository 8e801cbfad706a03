"""Where the method hands a computation to a backend: one question, asked at the top of an entry point.

:mod:`funcml.encoders.meta` and :mod:`funcml.encoders.fitting` define the method in plain autograd.
Each entry point first asks :func:`fast_path` whether a backend (:mod:`funcml.backends`) computes this
call; None means that the reference code that follows runs. A backend applies to a plain
:class:`~funcml.encoders.siren.ModulatedSiren` (not a subclass that changes its forward pass) on one
grid shared by the batch, with data that need no gradient, unless the execution asks for the
reference.
"""

from __future__ import annotations

import torch

from funcml.backends import Execution, FusedBackend, backend_for
from funcml.backends.execution import Options
from funcml.encoders.siren import ModulatedSiren


def as_execution(options: Execution | Options | None, device: torch.device | str) -> Execution:
    """``options`` as an :class:`Execution` on ``device``: an execution as it is, a configuration
    (``TrainConfig``, ``EncodeConfig``) through :meth:`Execution.of`, None the default (``auto``, fp32)."""
    if options is None:
        return Execution()
    if isinstance(options, Execution):
        return options
    return Execution.of(options, device)


def exactly_siren(net: torch.nn.Module) -> bool:
    """True when ``net`` computes exactly :class:`ModulatedSiren`'s forward pass."""
    cls = type(net)
    return (isinstance(net, ModulatedSiren) and cls.forward is ModulatedSiren.forward
            and cls.features is ModulatedSiren.features and cls.shifts is ModulatedSiren.shifts)


def applies(net: torch.nn.Module, coords: torch.Tensor, values: torch.Tensor,
            weights: torch.Tensor | None = None) -> bool:
    """Whether a backend can compute this call: a plain :class:`ModulatedSiren`, one shared grid
    ``(n, d)`` and data that need no gradient."""
    return (exactly_siren(net) and coords.dim() == 2 and not coords.requires_grad and not values.requires_grad
            and (weights is None or not weights.requires_grad))


def fast_path(options: Execution | Options | None, net: torch.nn.Module, coords: torch.Tensor, values: torch.Tensor,
              weights: torch.Tensor | None = None) -> FusedBackend | None:
    """The backend that computes this call, or None: the reference code runs.

    ``options``: an :class:`Execution`, or a configuration with ``backend``/``precision``/``compile``;
    ``coords`` ``(n, d)``; ``values`` ``(B, n, C)`` (or the signals); ``weights`` ``(B, n)`` or None.
    """
    execution = as_execution(options, values.device)
    if execution.backend == "reference" or not applies(net, coords, values, weights):
        return None
    return backend_for(execution, values.device)


def native_loops_used(net: torch.nn.Module, options: Execution | Options | None, device: torch.device | str) -> bool:
    """Whether work of ``net`` under ``options`` on ``device`` runs in the ``cpu`` backend's C loops."""
    execution = as_execution(options, device)
    if execution.backend == "reference" or not exactly_siren(net):
        return False
    return backend_for(execution, device).native_loops
