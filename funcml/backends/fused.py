"""The hand-derived reverse as autograd Functions: one inner step, the first step on a shared field, the
outer loss.

Second-order CAVIA differentiates *through* the inner gradient. With plain autograd that is a
double backward over a graph of many small element-wise operations. Here one inner step
``phi' = phi - alpha * grad_phi MSE`` (the gradient in closed form, see :mod:`funcml.backends.kernels`)
is a single :class:`torch.autograd.Function` whose backward is the hand-derived reverse of it: the
meta-gradient needs one ordinary backward, every ``sin``/``cos`` is computed once, the omegas are
folded into the weights and buffers are updated in place. Further exact savings:

* the first step from ``phi = 0`` (:class:`FirstStep`): every signal then has the same field,
  so the forward runs once and the backward once per output channel instead of per signal;
* ``recompute=True``: an inner step keeps only its inputs and recomputes its intermediates in the
  backward (about a third more inner-loop work for a fraction of the memory);
* :class:`ProjectionGrad`: the latent projection's gradient of all steps of one graph as one product.

The network is any module with :class:`~funcml.encoders.siren.ModulatedSiren`'s parameters
(``first``, ``hidden``, ``out``, ``shift``, ``omegas``); :func:`funcml.encoders.dispatch.fast_path`
sends here only networks that compute exactly its forward pass. The kernels run through a
:class:`Kernels` (their primitives, eager or compiled); :class:`funcml.backends.backend.FusedBackend`
builds on these functions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from funcml.backends import kernels
from funcml.backends.constants import device_constant
from funcml.backends.ops import AtenOps

# torch.compile mode of the kernels, on every device: inductor's fused loops without CUDA graphs.
# "reduce-overhead" (CUDA graphs) replays each kernel into the same static output buffers, but the
# fused steps keep their outputs: an inner step's intermediates stay in ``ctx.saved`` for the
# backward while the next inner step replays the same kernel, and its phi' is the next step's
# input. CUDA graph trees then fail with "accessing tensor output of CUDAGraphs that has been
# overwritten by a subsequent run" (docs/gpu.md). Cloning every kept output would cost the
# memory traffic the graphs save, and step markers (torch.compiler.cudagraph_mark_step_begin) do
# not help inside one meta-step, whose G steps all need their outputs until its backward.
COMPILE_MODE = "default"


@functools.lru_cache(maxsize=None)
def compiled(name: str):
    """The kernel ``name`` of :mod:`funcml.backends.kernels` through ``torch.compile`` (mode
    :data:`COMPILE_MODE`), made once per process: compiling takes minutes on a CPU."""
    return torch.compile(getattr(kernels, name), dynamic=True, mode=COMPILE_MODE)


@dataclass(frozen=True)
class Kernels:
    """The kernels with their primitives ``ops``: ``kernels("inner_forward", *args)`` runs
    ``kernels.inner_forward(ops, *args)``, through ``torch.compile`` with ``compile``."""

    ops: AtenOps
    compile: bool = False

    def __call__(self, name: str, *args):
        fn = compiled(name) if self.compile else getattr(kernels, name)
        return fn(self.ops, *args)


def flat_params(net: torch.nn.Module) -> list[torch.Tensor]:
    """``[W_1, b_1, ..., W_S, b_S, W_K, b_K, A, a]``, the order the kernels take."""
    out = [net.first.weight, net.first.bias]
    for layer in net.hidden:
        out += [layer.weight, layer.bias]
    return out + [net.out.weight, net.out.bias, net.shift.weight, net.shift.bias]


def sine_omegas(net: torch.nn.Module) -> tuple[float, ...]:
    """``omega_1 .. omega_S`` of the sine layers."""
    return tuple(net.omegas[:net.num_sine_layers])


@dataclass
class _Inputs:
    """The non-differentiable inputs of a fused call."""

    kernels: Kernels
    coords: torch.Tensor          # (n, d)
    values: torch.Tensor          # (B, n, C)
    weights: torch.Tensor | None  # (B, n) or None
    omegas: tuple[float, ...]     # omega_1 .. omega_S
    recompute: bool = False
    projection: "ProjectionGrad | None" = None


def _inputs(kern: Kernels, net: torch.nn.Module, coords, values, weights, recompute: bool = False,
            projection: "ProjectionGrad | None" = None) -> _Inputs:
    return _Inputs(kern, coords, values, weights, sine_omegas(net), recompute, projection)


class ProjectionGrad:
    """The latent projection's gradient of one graph of fused steps, as one product.

    Each fused step's backward adds to ``A.grad`` a product of rank ``B`` (``sbar^T phi`` and
    ``Tw^T gradbar``, ``(S L, P)`` from ``(B, S L)`` and ``(B, P)`` factors); formed step by step
    these dense matrices cost more memory traffic than their matmuls (29 MB each at 64^2, width 256,
    P 2048). The steps of one graph take :attr:`token` as an input instead and leave their factors
    in :attr:`us` / :attr:`vs`; the token's own backward, which autograd runs after all of theirs,
    forms the sum with one matmul (the same sum in another order of additions).
    """

    def __init__(self, net: torch.nn.Module) -> None:
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


def projection_grad(net: torch.nn.Module) -> ProjectionGrad | None:
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
        phi_next, loss, saved = inp.kernels("inner_forward", inp.coords, inp.values, inp.weights, inp.omegas, phi, lr,
                                               params)
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
            saved = inp.kernels("inner_forward", inp.coords, inp.values, inp.weights, inp.omegas, phi, lr,
                                tuple(params))[2]
        factor = _defers_projection(ctx, 3)
        phibar, lrbar, grads = inp.kernels("inner_backward", inp.coords, inp.omegas, phibar_next, phi, lr,
                                           tuple(params), saved, ctx.needs_input_grad[1], ctx.needs_input_grad[4],
                                           factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (phibar, lrbar, None, tokenbar, *grads)


class FirstStep(torch.autograd.Function):
    """``(lr, inputs, token, *params) -> (phi_1, loss)``: the inner step from ``phi = 0`` on one
    shared field."""

    @staticmethod
    def forward(ctx, lr, inp: _Inputs, token, *params):
        phi1, loss, saved = inp.kernels("first_forward", inp.coords, inp.values, inp.weights, inp.omegas, lr, params)
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
        lrbar, grads = inp.kernels("first_backward", inp.coords, inp.omegas, phibar1, lr, tuple(params), ctx.saved,
                                   ctx.needs_input_grad[0], ctx.needs_input_grad[3], factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (lrbar, None, tokenbar, *grads)


class OuterLoss(torch.autograd.Function):
    """``(phi, inputs, token, *params) -> loss (B,)``: the per-signal MSE of the fields at ``phi``."""

    @staticmethod
    def forward(ctx, phi, inp: _Inputs, token, *params):
        loss, saved = inp.kernels("outer_forward", inp.coords, inp.values, inp.weights, inp.omegas, phi, params)
        ctx.inp = inp
        ctx.saved = saved
        ctx.save_for_backward(phi, *params)
        return loss

    @staticmethod
    def backward(ctx, lossbar):
        inp = ctx.inp
        phi, *params = ctx.saved_tensors
        factor = _defers_projection(ctx, 2)
        phibar, grads = inp.kernels("outer_backward", inp.coords, inp.omegas, lossbar, phi, tuple(params), ctx.saved,
                                    ctx.needs_input_grad[3], factor)
        ctx.saved = None
        grads, tokenbar = _finish(ctx, grads, factor)
        return (phibar, None, tokenbar, *grads)


def _lr_tensor(lr: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``lr`` as a 0-d tensor on ``like``'s device (a cached constant: no host-to-device copy per step)."""
    return lr if isinstance(lr, torch.Tensor) else device_constant(float(lr), like.dtype, like.device)


def inner_step(kern: Kernels, net: torch.nn.Module, coords: torch.Tensor, phi: torch.Tensor, values: torch.Tensor,
               lr: float | torch.Tensor, weights: torch.Tensor | None = None, recompute: bool = False,
               projection: ProjectionGrad | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(phi - lr * grad_phi MSE, MSE (B,))`` with an exact second-order backward.

    coords ``(n, d)``; phi ``(B, P)``; values ``(B, n, C)``; weights ``(B, n)`` or None; ``lr`` a
    number or a tensor (Meta-SGD's ``(P,)`` rates); ``projection``: the graph's
    :class:`ProjectionGrad` (None: this step forms its own dense gradient of the projection).
    """
    return InnerStep.apply(phi, _lr_tensor(lr, phi), _inputs(kern, net, coords, values, weights, recompute, projection),
                           _token(projection), *flat_params(net))


def first_step(kern: Kernels, net: torch.nn.Module, coords: torch.Tensor, values: torch.Tensor,
               lr: float | torch.Tensor, weights: torch.Tensor | None = None, projection: ProjectionGrad | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`inner_step` from ``phi = 0``, on one field shared by the batch (same results)."""
    return FirstStep.apply(_lr_tensor(lr, values), _inputs(kern, net, coords, values, weights, projection=projection),
                           _token(projection), *flat_params(net))


def outer_loss(kern: Kernels, net: torch.nn.Module, coords: torch.Tensor, phi: torch.Tensor, values: torch.Tensor,
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
        return OuterLoss.apply(phi, _inputs(kern, net, coords, values, weights, projection=projection),
                               _token(projection), *params)
    loss = None
    for start in range(0, n, rows):
        part = slice(start, start + rows)
        inp = _inputs(kern, net, coords[part], values[:, part], None, projection=projection)
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


