"""Backends of the fitting stack: faster ways to compute what :mod:`funcml.encoders` defines.

The method (the SIREN, the CAVIA inner loop, the meta-gradient, test-time encoding) is written once,
in plain autograd, in :mod:`funcml.encoders`; that is the reference. A backend computes the same
numbers faster and is tested against it (``tests/test_backend*.py``). ``fused`` is the closed-form
latent gradient with a hand-derived exact reverse, on CPU and CUDA (:mod:`~funcml.backends.backend`,
:mod:`~funcml.backends.fused`, :mod:`~funcml.backends.kernels`, :mod:`~funcml.backends.ops`); ``cpu``
is ``fused`` with the element-wise work in C loops and a tiled encoding pass
(:mod:`~funcml.backends.native`, :mod:`~funcml.backends.tiled`, ``csrc/cpu_loops.c``, built at install).

Which one runs is an explicit :class:`Execution` option (``--backend auto|reference|fused|cpu``);
:mod:`funcml.backends.precision` scopes CUDA's TF32 flag for a run at ``tf32``. Nothing here keeps
mutable state beyond caches of what was loaded or compiled.
"""

from funcml.backends.backend import FusedBackend, backend_for, resolve
from funcml.backends.execution import BACKENDS, Execution

__all__ = ["BACKENDS", "Execution", "FusedBackend", "backend_for", "resolve"]
