"""The ``fused`` and ``cpu`` backends: the inner loop, the meta-losses and the test-time gradient on the
fused kernels.

:class:`FusedBackend` is the small interface that :mod:`funcml.encoders.meta` and
:mod:`funcml.encoders.fitting` call where a backend runs their computation (:func:`backend_for` picks
it, :func:`funcml.encoders.dispatch.fast_path` decides whether one applies). Each method computes what
the reference function of the same name computes, with the autograd Functions of
:mod:`funcml.backends.fused` (second order with one ordinary backward) or, without a graph, in place.
The two backends are one class with other primitives: ``fused`` runs ATen's operations
(:class:`~funcml.backends.ops.AtenOps`), ``cpu`` the C loops (:class:`~funcml.backends.native.NativeOps`)
and the tiled pass (:class:`~funcml.backends.tiled.TiledPass`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from funcml.backends import fused, native
from funcml.backends.execution import Execution
from funcml.backends.fused import Kernels, ProjectionGrad, flat_params, projection_grad, sine_omegas
from funcml.backends.ops import AtenOps
from funcml.backends.tiled import TiledPass
from funcml.backends.tiled import applies as tiled_applies
from funcml.errors import ConfigError

SHARED_FIRST_MAX_BYTES = 256 << 20
CACHE_CHUNK_ELEMENTS = 1 << 19


class FusedBackend:
    """The hand-derived reverse (``name`` ``"fused"``) or with its CPU loops (``"cpu"``).

    Args:
        ops: the kernels' primitives. compile: run the kernels through ``torch.compile``.
        shared_first: run steps from ``phi = 0`` on one field shared by the batch (off only to measure it).
        tiled: the tiled latent-gradient pass, or None (layer by layer).
    """

    def __init__(self, ops: AtenOps, *, name: str = "fused", compile: bool = False, shared_first: bool = True,
                 tiled: TiledPass | None = None) -> None:
        self.name = name
        self.ops = ops
        self.kernels = Kernels(ops, compile)
        self.compile = compile
        self.shared_first = shared_first
        self.tiled = None if compile else tiled

    def __repr__(self) -> str:
        return f"FusedBackend({self.name!r}, {self.ops.precision}{', compiled' if self.compile else ''})"

    @property
    def native_loops(self) -> bool:
        """Whether the element-wise work runs in the C loops."""
        return isinstance(self.ops, native.NativeOps) and not self.compile

    # -- the autograd Functions, with this backend's kernels ----------------------------------------
    def inner_step(self, net, coords, phi, values, lr, weights=None, recompute=False, projection=None):
        """See :func:`funcml.backends.fused.inner_step`."""
        return fused.inner_step(self.kernels, net, coords, phi, values, lr, weights, recompute, projection)

    def first_step(self, net, coords, values, lr, weights=None, projection=None):
        """See :func:`funcml.backends.fused.first_step`."""
        return fused.first_step(self.kernels, net, coords, values, lr, weights, projection)

    def outer_loss(self, net, coords, phi, values, weights=None, projection=None):
        """See :func:`funcml.backends.fused.outer_loss`."""
        return fused.outer_loss(self.kernels, net, coords, phi, values, weights, projection)

    # -- what meta.py calls ----------------------------------------------------------------------------
    def adapt_latents(self, net, coords: torch.Tensor, values: torch.Tensor, subsets: Sequence[torch.Tensor | None],
                      lr: float | torch.Tensor, *, create_graph: bool, weights: torch.Tensor | None = None,
                      latents: torch.Tensor | None = None, recompute: bool = False,
                      projection: ProjectionGrad | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`funcml.encoders.meta.adapt_latents` (``lr``: the rate itself): second order with one
        ordinary backward, or in place without a graph; from ``phi = 0`` the batch shares one field.
        ``projection``: the graph's :class:`ProjectionGrad` (see :meth:`meta_losses`)."""
        b = values.shape[0]
        loss = torch.zeros(b, device=values.device, dtype=values.dtype)
        phi = latents  # None: zeros, and the first step runs on one shared field
        for idx in subsets:
            c, v, w = _subset(coords, values, weights, idx)
            if not create_graph:
                loss, grad, _ = self.latent_grads(net, c, None if phi is None else phi.detach(), v, w)
                phi = -lr * grad if phi is None else phi - lr * grad
            elif phi is None and self.shared_first_step(net, b):
                phi, loss = self.first_step(net, c, v, lr, w, projection=projection)
            else:
                if phi is None:
                    phi = torch.zeros(b, net.config.latent_dim, device=values.device, dtype=values.dtype)
                phi, loss = self.inner_step(net, c, phi, v, lr, w, recompute=recompute, projection=projection)
        if phi is None:
            phi = torch.zeros(b, net.config.latent_dim, device=values.device, dtype=values.dtype)
        return phi, loss.detach()

    def meta_losses(self, net, coords: torch.Tensor, values: torch.Tensor, subsets: Sequence[torch.Tensor | None],
                    lr: float | torch.Tensor, first_order: bool, *, recompute: bool = False,
                    latents: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`funcml.encoders.meta.meta_losses` on ``values`` ``(B, N, C)``: the steps and the outer
        loss leave the projection's gradient to one :class:`ProjectionGrad`."""
        projection = projection_grad(net)
        phi, inner = self.adapt_latents(net, coords, values, subsets, lr, create_graph=not first_order,
                                        recompute=recompute, projection=None if first_order else projection,
                                        latents=latents)
        return self.outer_loss(net, coords, phi, values, projection=projection), inner

    def batch_first_step(self, net, coords: torch.Tensor, values: torch.Tensor, lr: float | torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(phi_1, loss)``: the first inner step from ``phi = 0`` of a whole meta-batch on one shared
        field, its projection gradient formed as one product (see :meth:`shares_first_step`)."""
        return self.first_step(net, coords, values, lr, projection=projection_grad(net))

    def shares_first_step(self, net, batch: int, micro: int, first_order: bool, steps: int) -> bool:
        """Whether the micro-batches of ``micro`` signals of a meta-step over ``batch`` share one first inner
        step (:func:`funcml.encoders.meta.accumulate_meta_gradient`).

        From ``phi = 0`` every signal has the same field, so the first step's forward and reverse cost
        about as much for the whole batch as for one micro-batch (:class:`fused.FirstStep`): run per
        micro-batch they would be repeated, and at a micro-batch of one signal not shared at all.
        """
        return not first_order and steps > 0 and micro < batch and self.shared_first_step(net, batch)

    def shared_first_step(self, net, batch: int) -> bool:
        """Whether a step from ``phi = 0`` runs on one shared field: when the batch has more signals than
        the field has channels (its reverse runs once per channel). At ``batch <= channels`` it would do
        the same work as per-signal steps and keep more for its reverse (about twice the per-coordinate
        tensors of an inner step, and the ``(n C, S L)`` products): 0.45 GB more at 32^3, width 256."""
        return self.shared_first and net.config.channels < batch

    def shared_first_grads(self, net, batch: int, n_coords: int) -> bool:
        """Whether :meth:`latent_grads` from ``phi = 0`` runs on one shared field: only when the batch has
        more signals than the field has channels (otherwise nothing is shared) and the shared field's
        per-coordinate intermediates (about four ``(n C, S L)`` float tensors, whole grid at once) stay
        within :data:`SHARED_FIRST_MAX_BYTES`; else the step runs per signal in cache-sized passes
        (same gradient). At 32^3, width 256 they would take 1.9 GB, more than the per-signal passes."""
        c, s, w = net.config.channels, net.num_sine_layers, net.config.width
        return self.shared_first_step(net, batch) and 16 * n_coords * c * s * w <= SHARED_FIRST_MAX_BYTES

    # -- what fitting.py calls ---------------------------------------------------------------------------
    @torch.no_grad()
    def latent_grads(self, net, coords: torch.Tensor, phi: torch.Tensor | None, values: torch.Tensor,
                     weights: torch.Tensor | None = None, context: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(loss (B,), grad_phi (B, P), context_grad (B, P) | None)`` without a graph.

        ``phi=None`` means zeros (then the batch shares one field: much cheaper). ``context`` ``(m,)``
        coordinate indices: ``context_grad`` is the gradient of the MSE over just those coordinates,
        from the same pass. The ``cpu`` backend runs the tiled pass where it applies; otherwise the
        pass goes layer by layer over cache-sized groups of signals (:func:`cache_chunk`).
        """
        omegas, params = sine_omegas(net), tuple(flat_params(net))
        if phi is None and self.shared_first_grads(net, values.shape[0], coords.shape[0]):
            return self.kernels("first_grads", coords, values, weights, omegas, params, context)
        if phi is None:
            phi = values.new_zeros(values.shape[0], net.config.latent_dim)
        if self.tiled is not None and tiled_applies(coords, values, weights, omegas, phi, params, context):
            return self.tiled.latent_grads(coords, values, weights, omegas, phi, params, context)
        chunk = cache_chunk(values.shape[0], coords.shape[0], net.config.width, values.device)
        if chunk >= values.shape[0]:
            return self.kernels("latent_grads", coords, values, weights, omegas, phi, params, context)
        parts = [self.kernels("latent_grads", coords, values[s:s + chunk],
                              None if weights is None else weights[s:s + chunk], omegas, phi[s:s + chunk], params,
                              context)
                 for s in range(0, values.shape[0], chunk)]
        return tuple(None if p[0] is None else torch.cat(p) for p in zip(*parts))


def _subset(coords: torch.Tensor, values: torch.Tensor, weights: torch.Tensor | None, idx: torch.Tensor | None):
    if idx is None:
        return coords, values, weights
    return coords[idx], values[:, idx], None if weights is None else weights[:, idx]


def cache_chunk(batch: int, n_coords: int, width: int, device: torch.device) -> int:
    """Signals per pass of :meth:`FusedBackend.latent_grads` on a CPU: as many as keep one layer's
    activations ``(b, n, width)`` within :data:`CACHE_CHUNK_ELEMENTS` floats (2 MB, about a CPU's cache
    share), so that the element-wise work between the matmuls runs from cache (measured: a quarter
    less CPU time at 28x28, width 128). Each signal's gradient is computed independently, so the
    result is the same; on CUDA the whole batch runs at once."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CACHE_CHUNK_ELEMENTS // max(1, n_coords * width)))


def resolve(backend: str, device: torch.device | str) -> str:
    """The backend that ``backend`` (``auto``, ``fused`` or ``cpu``) means on ``device``: ``auto`` is
    ``cpu`` on a CPU where the C loops are built, else ``fused``; ``cpu`` elsewhere is an error."""
    device = torch.device(device)
    if backend == "auto":
        return "cpu" if device.type == "cpu" and native.available() else "fused"
    if backend == "cpu" and device.type != "cpu":
        raise ConfigError(f"--backend cpu runs on a CPU, not on {device}; use fused or auto")
    if backend == "cpu" and not native.available():
        raise ConfigError("--backend cpu needs funcml's C loops, which were not built when funcml was installed "
                          "(a C compiler with OpenMP is needed; reinstall with one, or use --backend fused)")
    if backend not in ("fused", "cpu"):
        raise ConfigError(f"no fast backend {backend!r}")
    return backend


@functools.lru_cache(maxsize=64)
def _backend(execution: Execution, name: str) -> FusedBackend:
    if name == "cpu" and not execution.compile:
        ops = native.NativeOps(execution.precision, native.library())
        tiled = TiledPass.here() if execution.tiled else None
    else:  # compiled kernels run ATen's operations (the C loops are opaque to torch.compile)
        ops, tiled = AtenOps(execution.precision), None
    return FusedBackend(ops, name=name, compile=execution.compile, shared_first=execution.shared_first, tiled=tiled)


def backend_for(execution: Execution, device: torch.device | str) -> FusedBackend:
    """The fast backend that ``execution`` asks for on ``device`` (made once, then reused)."""
    return _backend(execution, resolve(execution.backend, device))
