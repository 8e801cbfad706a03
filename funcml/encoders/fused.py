"""The fused inner loop: closed-form latent gradients with hand-derived exact reverses.

Second-order CAVIA differentiates *through* the inner gradient. With plain autograd that is a
double backward over a graph of many small element-wise operations. Here one inner step
``phi' = phi - alpha * grad_phi MSE`` (the gradient in closed form, see :mod:`kernels`) is a
single :class:`torch.autograd.Function` whose backward is the hand-derived reverse of it: the
meta-gradient needs one ordinary backward, every ``sin``/``cos`` is computed once, the omegas
are folded into the weights and buffers are updated in place. Further exact savings:

* the first step from ``phi = 0`` (:class:`FirstStep`): every signal then has the same field,
  so the forward runs once and the backward once per output channel instead of per signal;
* without a graph (encoding, first-order loops, :func:`latent_grads`) everything runs in place,
  and the context-subset gradient of the test-time rescaling rule comes from the same pass; on a
  CPU in float32 that pass runs tile by tile of coordinates in one C call (:mod:`funcml.encoders.tiled`);
* ``recompute=True``: an inner step keeps only its inputs and recomputes its intermediates in the
  backward (about a third more inner-loop work for a fraction of the memory).

These paths are used automatically for :class:`ModulatedSiren` itself (:func:`enabled_for`);
:class:`plain_autograd` switches them off (the reference for tests and benchmarks), and
:func:`set_compiled` hands the kernels to ``torch.compile`` (without CUDA graphs, see
:data:`COMPILE_MODE`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import torch

from funcml.encoders import kernels, tiled
from funcml.encoders import precision as precision_mod
from funcml.encoders.constants import device_constant
from funcml.encoders.siren import ModulatedSiren

PRECISIONS = precision_mod.PRECISIONS
# torch.compile mode of the kernels, on every device: inductor's fused loops without CUDA graphs.
# "reduce-overhead" (CUDA graphs) replays each kernel into the same static output buffers, but the
# fused steps keep their outputs: an inner step's intermediates stay in ``ctx.saved`` for the
# backward while the next inner step replays the same kernel, and its phi' is the next step's
# input. CUDA graph trees then fail with "accessing tensor output of CUDAGraphs that has been
# overwritten by a subsequent run" (docs/gpu.md). Cloning every kept output would cost the
# memory traffic the graphs save, and step markers (torch.compiler.cudagraph_mark_step_begin) do
# not help inside one meta-step, whose G steps all need their outputs until its backward.
COMPILE_MODE = "default"
_STATE = {"enabled": True, "compiled": None, "shared_first": True}
_KERNEL_NAMES = ("inner_forward", "inner_backward", "first_forward", "first_backward", "first_grads",
                 "outer_forward", "outer_backward", "latent_grads")
_K: dict = {name: getattr(kernels, name) for name in _KERNEL_NAMES}
_COMPILED: dict = {}


def set_compiled(mode: str | None) -> None:
    """Run the kernels through ``torch.compile``: ``None`` (eager) or a compile mode, normally
    :data:`COMPILE_MODE` (``"default"``: inductor's fused element-wise loops, no CUDA graphs).
    Compiling takes minutes on a CPU, so it pays for long jobs; compiled kernels are kept for the
    rest of the process."""
    if mode == _STATE["compiled"]:
        return
    _STATE["compiled"] = mode
    for name in _KERNEL_NAMES:
        if mode is None:
            _K[name] = getattr(kernels, name)
        else:
            key = (name, mode)
            if key not in _COMPILED:
                _COMPILED[key] = torch.compile(getattr(kernels, name), dynamic=True, mode=mode)
            _K[name] = _COMPILED[key]


@contextmanager
def execution(compile: bool = False, precision: str = "auto", device: torch.device | str = "cpu",
              shared_first: bool = True) -> Iterator[None]:
    """Temporarily select how the fused kernels run (the math is unchanged except by precision).

    Everything set here is restored on exit (the kernels' precision, the compiled kernels and CUDA's
    TF32 flag for float32 matmuls, see :func:`funcml.encoders.precision.cuda_tf32`).

    Args:
        compile: ``torch.compile`` the kernels (mode :data:`COMPILE_MODE`, no CUDA graphs).
        precision: matmuls of the per-coordinate activations in ``"fp32"``, ``"tf32"`` (CUDA tensor
            cores, float32 results; on a CPU emulated, only to measure its effect) or ``"bf16"``
            (bfloat16 inputs and bfloat16-rounded results, returned as float32); ``"auto"``: tf32 on
            CUDA, fp32 elsewhere. On CUDA, the other float32 matmuls use TF32 iff ``"tf32"``. Other
            operations always run in float32.
        device: where the work runs.
        shared_first: run steps from ``phi = 0`` on one shared field (off only to measure it).
    """
    device = torch.device(device)
    precision = precision_mod.resolve(precision, device)
    old = (_STATE["compiled"], kernels.MATMUL_PRECISION[0], _STATE["shared_first"])
    try:
        _STATE["shared_first"] = bool(shared_first)
        set_compiled(COMPILE_MODE if compile else None)
        kernels.MATMUL_PRECISION[0] = precision
        with (precision_mod.cuda_tf32(precision == "tf32") if device.type == "cuda" else nullcontext()):
            yield
    finally:
        set_compiled(old[0])
        kernels.MATMUL_PRECISION[0] = old[1]
        _STATE["shared_first"] = old[2]


class plain_autograd:
    """Context manager: inside it, meta-learning and encoding use plain ``torch.autograd``
    (double backward) instead of the fused paths: the reference implementation."""

    def __enter__(self) -> "plain_autograd":
        self._old = _STATE["enabled"]
        _STATE["enabled"] = False
        return self

    def __exit__(self, *exc) -> None:
        _STATE["enabled"] = self._old


def shared_first_step(net: ModulatedSiren, batch: int) -> bool:
    """Whether a step from ``phi = 0`` runs on one shared field: when the batch has more signals than
    the field has channels (its reverse runs once per channel). At ``batch <= channels`` it would do
    the same work as per-signal steps and keep more for its reverse (about twice the per-coordinate
    tensors of an inner step, and the ``(n C, S L)`` products): 0.45 GB more at 32^3, width 256."""
    return _STATE["shared_first"] and net.config.channels < batch


SHARED_FIRST_MAX_BYTES = 256 << 20


def shared_first_grads(net: ModulatedSiren, batch: int, n_coords: int) -> bool:
    """Whether :func:`latent_grads` from ``phi = 0`` runs on one shared field: only when the batch has
    more signals than the field has channels (otherwise nothing is shared) and the shared field's
    per-coordinate intermediates (about four ``(n C, S L)`` float tensors, whole grid at once) stay
    within :data:`SHARED_FIRST_MAX_BYTES`; else the step runs per signal in cache-sized passes (same
    gradient). At 32^3, width 256 they would take 1.9 GB, more than the per-signal passes."""
    c, s, w = net.config.channels, net.num_sine_layers, net.config.width
    return shared_first_step(net, batch) and 16 * n_coords * c * s * w <= SHARED_FIRST_MAX_BYTES


def supports(net: torch.nn.Module) -> bool:
    """True when ``net`` computes exactly :class:`ModulatedSiren`'s forward pass."""
    cls = type(net)
    return (isinstance(net, ModulatedSiren) and cls.forward is ModulatedSiren.forward
            and cls.features is ModulatedSiren.features and cls.shifts is ModulatedSiren.shifts)


def enabled_for(net: torch.nn.Module, coords: torch.Tensor, values: torch.Tensor,
                weights: torch.Tensor | None = None) -> bool:
    """Use the fused paths: a plain :class:`ModulatedSiren`, one shared grid ``(n, d)`` and data that
    need no gradient (anything else falls back to autograd)."""
    return (_STATE["enabled"] and supports(net) and coords.dim() == 2 and not coords.requires_grad
            and not values.requires_grad and (weights is None or not weights.requires_grad))


def flat_params(net: ModulatedSiren) -> list[torch.Tensor]:
    """``[W_1, b_1, ..., W_S, b_S, W_K, b_K, A, a]``, the order the kernels take."""
    out = [net.first.weight, net.first.bias]
    for layer in net.hidden:
        out += [layer.weight, layer.bias]
    return out + [net.out.weight, net.out.bias, net.shift.weight, net.shift.bias]


@dataclass
class _Inputs:
    """The non-differentiable inputs of a fused call."""

    coords: torch.Tensor          # (n, d)
    values: torch.Tensor          # (B, n, C)
    weights: torch.Tensor | None  # (B, n) or None
    omegas: tuple[float, ...]     # omega_1 .. omega_S
    recompute: bool = False
    projection: "ProjectionGrad | None" = None


def _inputs(net: ModulatedSiren, coords, values, weights, recompute: bool = False,
            projection: "ProjectionGrad | None" = None) -> _Inputs:
    return _Inputs(coords, values, weights, tuple(net.omegas[:net.num_sine_layers]), recompute, projection)


class ProjectionGrad:
    """The latent projection's gradient of one graph of fused steps, as one product.

    Each fused step's backward adds to ``A.grad`` a product of rank ``B`` (``sbar^T phi`` and
    ``Tw^T gradbar``, ``(S L, P)`` from ``(B, S L)`` and ``(B, P)`` factors); formed step by step
    these dense matrices cost more memory traffic than their matmuls (29 MB each at 64^2, width 256,
    P 2048). The steps of one graph take :attr:`token` as an input instead and leave their factors
    in :attr:`us` / :attr:`vs`; the token's own backward, which autograd runs after all of theirs,
    forms the sum with one matmul (the same sum in another order of additions).
    """

    def __init__(self, net: ModulatedSiren) -> None:
        self.us: list[torch.Tensor] = []
        self.vs: list[torch.Tensor] = []
        self.token = _ProjectionToken.apply(net.shift.weight, self)

    def take(self, grads: list) -> list:
        """``grads`` with the factor pair in A's slot (``grads[-2]``) moved here (None left)."""
        u, v = grads[-2]
        self.us.append(u)
        self.vs.append(v)
        return [*grads[:-2], None, grads[-1]]


class _ProjectionToken(torch.autograd.Function):
    """``(A, ProjectionGrad) -> ()`` zero token; backward: ``A``'s gradient ``U^T V`` from the factors."""

    @staticmethod
    def forward(ctx, A, projection: ProjectionGrad):
        ctx.projection = projection
        return A.new_zeros(())

    @staticmethod
    def backward(ctx, _tokenbar):
        p = ctx.projection
        if not p.us:
            return None, None
        U, V = torch.cat(p.us), torch.cat(p.vs)
        p.us, p.vs = [], []
        return torch.mm(U.t(), V), None


def projection_grad(net: ModulatedSiren) -> ProjectionGrad | None:
    """A :class:`ProjectionGrad` for one graph of fused steps, or None where nothing needs it (the
    projection is frozen or gradients are off)."""
    if not (torch.is_grad_enabled() and net.shift.weight.requires_grad):
        return None
    return ProjectionGrad(net)


def _token(projection: ProjectionGrad | None):
    return None if projection is None else projection.token


def _defers_projection(ctx, token_index: int) -> bool:
    """Whether this step's backward leaves A's factors to its :class:`ProjectionGrad`."""
    return ctx.inp.projection is not None and ctx.needs_input_grad[token_index]


def _finish(ctx, grads: list, factored: bool) -> tuple[list, torch.Tensor | None]:
    """``(grads, token_bar)``: with ``factored``, A's factors handed to the step's :class:`ProjectionGrad`."""
    if not factored:
        return grads, None
    return ctx.inp.projection.take(grads), grads[-1].new_zeros(())


class InnerStep(torch.autograd.Function):
    """``(phi, lr, inputs, token, *params) -> (phi', loss)``; ``loss`` ``(B,)`` is the step's MSE at
    ``phi`` (not differentiable); the backward is exact second order. ``token``: that of the
    inputs' :class:`ProjectionGrad`, or None."""

    @staticmethod
    def forward(ctx, phi, lr, inp: _Inputs, token, *params):
        phi_next, loss, saved = _K["inner_forward"](inp.coords, inp.values, inp.weights, inp.omegas, phi, lr, params)
        ctx.inp = inp
        ctx.saved = None if inp.recompute else saved
        ctx.save_for_backward(phi, lr, *params)
        ctx.mark_non_differentiable(loss)
        return phi_next, loss

    @staticmethod
    def backward(ctx, phibar_next, _lossbar):
        inp = ctx.inp
        phi, lr, *params = ctx.saved_tensors
        saved = ctx.saved
        if saved is None:  # recompute the step's intermediates
            saved = _K["inner_forward"](inp.coords, inp.values, inp.weights, inp.omegas, phi, lr, tuple(params))[2]
        factor = _defers_projection(ctx, 3)
        phibar, lrbar, grads = _K["inner_backward"](inp.coords, inp.omegas, phibar_next, phi, lr, tuple(params), saved,
                                                    ctx.needs_input_grad[1], ctx.needs_input_grad[4], factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (phibar, lrbar, None, tokenbar, *grads)


class FirstStep(torch.autograd.Function):
    """``(lr, inputs, token, *params) -> (phi_1, loss)``: the inner step from ``phi = 0`` on one
    shared field."""

    @staticmethod
    def forward(ctx, lr, inp: _Inputs, token, *params):
        phi1, loss, saved = _K["first_forward"](inp.coords, inp.values, inp.weights, inp.omegas, lr, params)
        ctx.inp = inp
        ctx.saved = saved
        ctx.save_for_backward(lr, *params)
        ctx.mark_non_differentiable(loss)
        return phi1, loss

    @staticmethod
    def backward(ctx, phibar1, _lossbar):
        inp = ctx.inp
        lr, *params = ctx.saved_tensors
        factor = _defers_projection(ctx, 2)
        lrbar, grads = _K["first_backward"](inp.coords, inp.omegas, phibar1, lr, tuple(params), ctx.saved,
                                            ctx.needs_input_grad[0], ctx.needs_input_grad[3], factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (lrbar, None, tokenbar, *grads)


class OuterLoss(torch.autograd.Function):
    """``(phi, inputs, token, *params) -> loss (B,)``: the per-signal MSE of the fields at ``phi``."""

    @staticmethod
    def forward(ctx, phi, inp: _Inputs, token, *params):
        loss, saved = _K["outer_forward"](inp.coords, inp.values, inp.weights, inp.omegas, phi, params)
        ctx.inp = inp
        ctx.saved = saved
        ctx.save_for_backward(phi, *params)
        return loss

    @staticmethod
    def backward(ctx, lossbar):
        inp = ctx.inp
        phi, *params = ctx.saved_tensors
        factor = _defers_projection(ctx, 2)
        phibar, grads = _K["outer_backward"](inp.coords, inp.omegas, lossbar, phi, tuple(params), ctx.saved,
                                             ctx.needs_input_grad[3], factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (phibar, None, tokenbar, *grads)


def _lr_tensor(lr: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``lr`` as a 0-d tensor on ``like``'s device (a cached constant: no host-to-device copy per step)."""
    return lr if isinstance(lr, torch.Tensor) else device_constant(float(lr), like.dtype, like.device)


def inner_step(net: ModulatedSiren, coords: torch.Tensor, phi: torch.Tensor, values: torch.Tensor,
               lr: float | torch.Tensor, weights: torch.Tensor | None = None, recompute: bool = False,
               projection: ProjectionGrad | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi - lr * grad_phi MSE, MSE (B,))`` with an exact second-order backward.

    coords ``(n, d)``; phi ``(B, P)``; values ``(B, n, C)``; weights ``(B, n)`` or None; ``lr`` a
    number or a tensor (Meta-SGD's ``(P,)`` rates); ``projection``: the graph's
    :class:`ProjectionGrad` (None: this step forms its own dense gradient of the projection).
    """
    return InnerStep.apply(phi, _lr_tensor(lr, phi), _inputs(net, coords, values, weights, recompute, projection),
                           _token(projection), *flat_params(net))


def first_step(net: ModulatedSiren, coords: torch.Tensor, values: torch.Tensor, lr: float | torch.Tensor,
               weights: torch.Tensor | None = None, projection: ProjectionGrad | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`inner_step` from ``phi = 0``, on one field shared by the batch (same results)."""
    return FirstStep.apply(_lr_tensor(lr, values), _inputs(net, coords, values, weights, projection=projection),
                           _token(projection), *flat_params(net))


def outer_loss(net: ModulatedSiren, coords: torch.Tensor, phi: torch.Tensor, values: torch.Tensor,
               weights: torch.Tensor | None = None, projection: ProjectionGrad | None = None) -> torch.Tensor:
    """``per_signal_mse(net(coords, phi), values, weights)`` ``(B,)`` with a fused backward.

    On a CPU without ``weights`` the coordinates go through in parts whose per-layer tensors stay
    within :data:`OUTER_PART_BYTES` (:func:`outer_part_rows`), the parts' losses weighted by their
    share of the coordinates: the same loss and gradients, another order of additions.
    """
    n = coords.shape[0]
    rows = n if weights is not None else outer_part_rows(phi.shape[0], n, net.config.width, values.device)
    params = flat_params(net)
    if rows >= n:
        return OuterLoss.apply(phi, _inputs(net, coords, values, weights, projection=projection), _token(projection),
                               *params)
    loss = None
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        inp = _inputs(net, coords[part], values[:, part], None, projection=projection)
        term = OuterLoss.apply(phi, inp, _token(projection), *params) * (inp.coords.shape[0] / n)
        loss = term if loss is None else loss + term
    return loss


OUTER_WHOLE_BYTES = 16 << 20
OUTER_PART_BYTES = 4 << 20


def outer_part_rows(batch: int, n_coords: int, width: int, device: torch.device) -> int:
    """Coordinates per part of :func:`outer_loss` on a CPU: all of them while one layer's
    ``(batch, n, width)`` float32 tensor stays within :data:`OUTER_WHOLE_BYTES`, else the fewest parts
    (all but the last of one size) within :data:`OUTER_PART_BYTES`; on CUDA all coordinates.

    glibc malloc serves blocks of up to 32 MB from its heap, where freed memory is reused, and larger
    ones with fresh ``mmap`` pages that fault in again at every step: at 32^3, width 256, batch 1 each
    layer's tensors were 32 MB, 250-465k page faults per meta-step; in 4 MB parts the step took 0.91x
    the time at 0.92x the peak RSS. Smaller tensors come from the heap anyway, and parts cost the
    28^2 and 16^3 CPU presets (6 MB and 8 MB tensors) 2-8% of their step (docs/benchmarks.md).
    """
    whole = 4 * batch * width * n_coords
    if device.type != "cpu" or whole <= OUTER_WHOLE_BYTES:
        return n_coords
    parts = -(-whole // OUTER_PART_BYTES)
    return -(-n_coords // parts)


@torch.no_grad()
def latent_grads(net: ModulatedSiren, coords: torch.Tensor, phi: torch.Tensor | None, values: torch.Tensor,
                 weights: torch.Tensor | None = None, context: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss (B,), grad_phi (B, P), context_grad (B, P) | None)`` without a graph.

    ``phi=None`` means zeros (then the batch shares one field: much cheaper). ``context`` ``(m,)``
    coordinate indices: ``context_grad`` is the gradient of the MSE over just those coordinates,
    from the same pass. On a CPU in float32 the pass is :func:`funcml.encoders.tiled.latent_grads`
    where it is available; otherwise layer by layer over cache-sized groups of signals.
    """
    omegas = tuple(net.omegas[:net.num_sine_layers])
    params = tuple(flat_params(net))
    if phi is None and shared_first_grads(net, values.shape[0], coords.shape[0]):
        return _K["first_grads"](coords, values, weights, omegas, params, context)
    if phi is None:
        phi = values.new_zeros(values.shape[0], net.config.latent_dim)
    if _STATE["compiled"] is None and tiled.applies(coords, values, weights, omegas, phi, params, context):
        return tiled.latent_grads(coords, values, weights, omegas, phi, params, context)
    chunk = cache_chunk(values.shape[0], coords.shape[0], net.config.width, values.device)
    if chunk >= values.shape[0]:
        return _K["latent_grads"](coords, values, weights, omegas, phi, params, context)
    parts = [_K["latent_grads"](coords, values[s:s + chunk], None if weights is None else weights[s:s + chunk],
                                omegas, phi[s:s + chunk], params, context)
             for s in range(0, values.shape[0], chunk)]
    return tuple(None if p[0] is None else torch.cat(p) for p in zip(*parts))


CACHE_CHUNK_ELEMENTS = 1 << 19


def cache_chunk(batch: int, n_coords: int, width: int, device: torch.device) -> int:
    """Signals per pass of :func:`latent_grads` on a CPU: as many as keep one layer's activations
    ``(b, n, width)`` within :data:`CACHE_CHUNK_ELEMENTS` floats (2 MB, about a CPU's cache share),
    so that the element-wise work between the matmuls runs from cache (measured: a quarter less CPU
    time at 28x28, width 128). Each signal's gradient is computed independently, so the result is
    the same; on CUDA the whole batch runs at once."""
    if device.type != "cpu":
        return batch
    return max(1, min(batch, CACHE_CHUNK_ELEMENTS // max(1, n_coords * width)))
