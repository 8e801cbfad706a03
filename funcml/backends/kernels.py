"""Tensor kernels of the fused inner loop: closed-form latent gradients and their exact reverse.

Everything here is a plain function of tensors (no autograd, no modules), so that
:mod:`funcml.backends.fused` can wrap it in autograd Functions and optionally hand it to
``torch.compile``. The primitives (matmuls at a precision, the element-wise groups of a layer) come
from the first argument ``ops``: :class:`~funcml.backends.ops.AtenOps`, or the ``cpu`` backend's
:class:`~funcml.backends.native.NativeOps`. Notation (S = K-1 sine layers of width L, shared
coordinates ``c (n, d)``, omegas folded into the weights ``W'_k = omega_k W_k``)::

    sigma_k = omega_k (A_k phi + a_k + b_k)          (B, S, L)
    u_1 = omega_1 c W_1^T + sigma_1,  u_k = x_{k-1} W'_k^T + sigma_k
    a_k = sin u_k,  c_k = cos u_k,  x_1 = a_1,  x_k = x_{k-1} + a_k
    y = x_S W_K^T + b_K + 0.5                        (B, n, C)
    loss = sum w (y - v)^2 / norm,  e = dloss/dy = 2 w (y - v) / norm
    g_S = e W_K,  q_k = c_k g_k,  g_{k-1} = g_k + q_k W'_k,  t_k = sum_n q_k
    grad_phi = sum_k omega_k t_k A_k                 (B, P)

The gradient is exactly what ``torch.autograd.grad`` returns (same operations up to summation
order). Parameters travel as the tuple ``(W_1, b_1, ..., W_S, b_S, W_K, b_K, A, a)``.
"""

from __future__ import annotations

import torch

from funcml.backends.constants import device_constant
from funcml.backends.ops import AtenOps

Params = tuple  # (W_1, b_1, ..., W_S, b_S, W_K, b_K, A, a)


def split(params: Params):
    """``(ws [S], bs [S], W_K, b_K, A, a)``."""
    s = (len(params) - 4) // 2
    return [params[2 * k] for k in range(s)], [params[2 * k + 1] for k in range(s)], *params[-4:]


def omega_column(omegas: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """``(S, 1)``: scales ``(B, S, L)`` tensors per layer (a cached constant: no host-to-device copy
    per call)."""
    return device_constant(tuple(omegas), like.dtype, like.device).view(-1, 1)


def prepare(params: Params, omegas: tuple[float, ...], coords: torch.Tensor, phi: torch.Tensor):
    """``(h (n, L), sigma (B, S, L), wps [S] with wps[0] None, om (S, 1))`` for ``phi (B, P)``."""
    ws, bs, WK, bK, A, a = split(params)
    width = ws[0].shape[0]
    om = omega_column(omegas, phi)
    sigma = torch.addmm(a + torch.cat(bs), phi, A.t()).view(phi.shape[0], -1, width).mul_(om)
    h = torch.mm(coords, ws[0].t()).mul_(omegas[0])
    wps = [None] + [ws[k] * omegas[k] for k in range(1, len(omegas))]
    return h, sigma, wps, om


def field_forward(ops: AtenOps, h, sigma, wps, WK, bK, keep_sin: bool, keep_xs: bool = True):
    """Forward pass keeping what a backward needs: layer inputs ``xs`` (x_1..x_{S-1}; None without
    ``keep_xs``: :func:`layer_inputs` forms them again from the ``sins``), ``sins`` (if asked),
    ``coss``, the last features and the output ``y (B, n, C)``."""
    xs, sins, coss = ([] if keep_xs else None), [], []
    x = None
    for k in range(sigma.shape[1]):
        # without xs, x_k = x_{k-1} + s_k in place, in the pass that forms s_k (x_1 is sins[0] itself,
        # so x_2 is a new tensor)
        in_place = not keep_xs and k >= 2
        if k == 0:
            s, c = ops.shifted_sin_cos(h, sigma[:, 0])
        elif in_place:
            s, c = ops.sine_layer(x, wps[k].t(), sigma[:, k], acc=x, keep_sin=keep_sin)
        else:
            if keep_xs:
                xs.append(x)
            s, c = ops.sine_layer(x, wps[k].t(), sigma[:, k])
        coss.append(c)
        if keep_sin:
            sins.append(s)
        x = s if k == 0 else x if in_place else x + s
    y = ops.gemm_add(bK + 0.5, x.reshape(-1, x.shape[-1]), WK.t()).view(*x.shape[:-1], WK.shape[0])
    return xs, sins, coss, x, y


def layer_inputs(sins: list) -> tuple[list, torch.Tensor]:
    """``(xs, x_last)`` of :func:`field_forward` again from its ``sins`` (``x_1 = a_1``, ``x_k = x_{k-1} +
    a_k``: the same additions in the same order, so the same numbers)."""
    x, xs = sins[0], []
    for s in sins[1:]:
        xs.append(x)
        x = x + s
    return xs, x


def output_grad(ops: AtenOps, e: torch.Tensor, WK: torch.Tensor) -> torch.Tensor:
    """``g_S = e W_K`` ``(B, n, L)`` from output errors ``e`` ``(B, n, C)``; for one channel a
    broadcast product (the same numbers as the rank-1 matmul, without its overhead)."""
    if e.shape[-1] == 1:
        return e * WK.view(1, 1, -1)
    return ops.mm(e, WK)


def loss_and_error(y: torch.Tensor, values: torch.Tensor, weights: torch.Tensor | None):
    """``(loss (B,), e = dloss/dy, factor = 2 w / norm)``; ``y`` is overwritten."""
    r = y.sub_(values)
    n, c = r.shape[1], r.shape[2]
    if weights is None:
        loss = r.pow(2).sum(dim=(1, 2)).mul_(1.0 / (n * c))
        factor = r.new_full((1, 1, 1), 2.0 / (n * c))
        return loss, r.mul_(2.0 / (n * c)), factor
    w = weights.unsqueeze(-1).to(r.dtype)
    norm = mse_norm(weights.to(r.dtype), c).view(-1, 1, 1)
    wr = r * w
    loss = (wr * r).sum(dim=(1, 2)) / norm.view(-1)
    factor = w * (2.0 / norm)
    return loss, wr.mul_(2.0 / norm), factor


def _mul_into(buf: torch.Tensor | None, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * b``, written into ``buf`` when there is one (a buffer reused layer after layer)."""
    return a * b if buf is None else torch.mul(a, b, out=buf)


def closed_grad(ops: AtenOps, g, coss, wps, keep_q: bool = True):
    """The closed-form backward from ``g_S``, keeping ``gs`` (and ``qs``; with ``keep_q=False`` the
    ``q_k`` go through one reused buffer and ``qs`` is None: :func:`reverse_closed_grad` recomputes
    them from ``coss`` and ``gs``, the same products); returns ``(gs, qs, T (B, S, L))``."""
    S = len(coss)
    gs, qs, ts = [None] * S, [None] * S, [None] * S
    buf = None
    for k in range(S - 1, -1, -1):
        gs[k] = g
        if keep_q:
            q = coss[k] * g
            qs[k] = q
        else:
            q = buf = _mul_into(buf, coss[k], g)
        ts[k] = q.sum(dim=1)
        if k > 0:
            g = ops.gemm_add(g.reshape(-1, g.shape[-1]), q.reshape(-1, q.shape[-1]), wps[k]).view_as(g)
    return gs, (qs if keep_q else None), torch.stack(ts, dim=1)


def reverse_closed_grad(ops: AtenOps, qbar0, gs, qs, coss, wps, reduce_channels: bool, factored: bool = False):
    """Reverse of :func:`closed_grad`. ``qbar0[k]`` is the direct adjoint of ``q_k`` (the ``t_k``
    adjoint broadcast over coordinates, or per-coordinate adjoints); ``qs`` None: the ``q_k = c_k g_k``
    are recomputed into one reused buffer. Returns ``(gbar_S, cbars, W'bars)``; with
    ``reduce_channels`` the ``c_k`` adjoints are summed over dim 0 (one field shared by one-hot
    channel backwards); with ``factored`` (and not ``reduce_channels``) ``cbars`` holds the ``q_k``
    adjoints instead (the ``c_k`` adjoints are ``cbars[k] * gs[k]``: :func:`reverse_field` with
    ``gs`` forms them inside its pass)."""
    S = len(coss)
    cbars, wpbars = [None] * S, [None] * S
    gbar = None
    buf = None
    for k in range(S):
        qbar = qbar0[k]
        if k > 0:
            qbar = ops.linear_shift(gbar, wps[k].t(), qbar)
            if qs is None:
                q = buf = _mul_into(buf, coss[k], gs[k])
            else:
                q = qs[k]
            wpbars[k] = ops.gemm(q.reshape(-1, q.shape[-1]).t(), gbar.reshape(-1, gbar.shape[-1]))
        if factored and not reduce_channels:
            cbars[k] = qbar
        else:
            cbar = qbar * gs[k]
            cbars[k] = cbar.sum(dim=0, keepdim=True) if reduce_channels else cbar
        gbar = coss[k] * qbar if gbar is None else gbar.addcmul_(coss[k], qbar)
    return gbar, cbars, wpbars


def reverse_field(ops: AtenOps, ybar, coords, omega1: float, xs, sins, coss, x_last, cbars, wps, WK,
                  want_W1: bool = True, gs=None):
    """Reverse of :func:`field_forward` from ``ybar`` (and ``c_k`` adjoints ``cbars`` or None; with
    ``gs``, ``cbars`` are the factored adjoints of :func:`reverse_closed_grad`). Each layer's ``ubar``
    and its coordinate sum are one pass (``ops.field_adjoint``) into one reused buffer.

    Returns ``(sigma_bar (B, S, L), W'bars [S] (entry 0 None), W_K bar, b_K bar, W_1 bar)``.
    """
    S = len(coss)
    L = coss[0].shape[-1]
    xbar = ops.mm(ybar, WK)
    WKbar = ops.gemm(ybar.reshape(-1, ybar.shape[-1]).t(), x_last.reshape(-1, L))
    bKbar = ybar.sum(dim=(0, 1))
    sigbars = [None] * S
    wpbars = [None] * S
    W1bar = None
    ubar = None
    for k in range(S - 1, -1, -1):
        ubar, sigbars[k] = ops.field_adjoint(coss[k], xbar, None if cbars is None else sins[k],
                                             None if cbars is None else cbars[k], None if gs is None else gs[k],
                                             out=ubar)
        if k > 0:
            wpbars[k] = ops.gemm(ubar.reshape(-1, L).t(), xs[k - 1].reshape(-1, L))
            ops.gemm_add_(xbar.view(-1, L), ubar.reshape(-1, L), wps[k])
        elif want_W1:
            W1bar = torch.mm(ubar.sum(dim=0).t(), coords).mul_(omega1)
    return torch.stack(sigbars, dim=1), wpbars, WKbar, bKbar, W1bar


def param_grads(sigbar, om, phi, A, wpbars, W1bar, WKbar, bKbar, omegas, extra_A=None, factor_A: bool = False):
    """``(phi_bar (B, P), grads in Params order)`` from the ``sigma``/``W'`` adjoints.

    The latent projection's gradient is a sum of rank-``B`` products ``U^T V``: ``sbar^T phi`` and,
    with ``extra_A = (U, V)``, ``U^T V``. They are formed with one matmul, or with ``factor_A`` left
    as the pair ``(U (k, S L), V (k, P))`` in the slot of ``A`` (see
    :class:`funcml.backends.fused.ProjectionGrad`): a dense ``(S L, P)`` matrix per inner step costs more
    memory traffic than the whole product over all steps."""
    B, S, L = sigbar.shape
    sbar = (sigbar * om).view(B, S * L)              # adjoint of s = A phi + a (+ b)
    vec = sbar.sum(dim=0)
    us, vs = ([sbar], [phi]) if phi is not None else ([], [])
    if extra_A is not None:
        us.append(extra_A[0])
        vs.append(extra_A[1])
    U, V = (us[0], vs[0]) if len(us) == 1 else (torch.cat(us), torch.cat(vs))
    Abar = (U, V) if factor_A else torch.mm(U.t(), V)
    grads = []
    for k in range(S):
        grads += [W1bar if k == 0 else wpbars[k] * omegas[k], vec[k * L:(k + 1) * L]]
    grads += [WKbar, bKbar, Abar, vec]
    return torch.mm(sbar, A), grads


# -- one inner step (batch of latents) -------------------------------------------------------------
def inner_forward(ops: AtenOps, coords, values, weights, omegas, phi, lr, params: Params):
    """``(phi', loss, saved)``: one closed-form inner SGD step and what its reverse needs."""
    h, sigma, wps, om = prepare(params, omegas, coords, phi)
    WK, bK, A = params[-4], params[-3], params[-2]
    _, sins, coss, _, y = field_forward(ops, h, sigma, wps, WK, bK, keep_sin=True, keep_xs=False)
    loss, e, factor = loss_and_error(y, values, weights)
    gs, _, T = closed_grad(ops, output_grad(ops, e, WK), coss, wps, keep_q=False)
    Tw = T.mul_(om).view(phi.shape[0], -1)
    grad = torch.mm(Tw, A)
    # per layer only sin, cos and g are kept: the reverse recomputes the x_k (layer_inputs) and q_k
    saved = (wps, om, None, sins, coss, None, gs, None, e, factor, Tw, grad)
    return phi - lr * grad, loss, saved


def inner_backward(ops: AtenOps, coords, omegas, phibar_next, phi, lr, params: Params, saved, want_lr: bool,
                   want_W1: bool, factor_A: bool = False):
    """Reverse of :func:`inner_forward`: ``(phi_bar, lr_bar, grads)`` (``factor_A``: see :func:`param_grads`)."""
    wps, om, xs, sins, coss, x_last, gs, qs, e, factor, Tw, grad = saved
    if xs is None:
        xs, x_last = layer_inputs(sins)
    WK, A = params[-4], params[-2]
    B, S, L = phi.shape[0], len(omegas), coss[0].shape[-1]
    gradbar = phibar_next * (-lr)
    lrbar = None
    if want_lr:
        lrbar = -(phibar_next * grad)
        lrbar = lrbar.sum() if lr.dim() == 0 else lrbar.sum(dim=0)
    tbar = torch.mm(gradbar, A.t()).view(B, S, L).mul_(om)
    gbar, qbars, wpbars_g = reverse_closed_grad(ops, [tbar[:, k:k + 1] for k in range(S)], gs, qs, coss, wps,
                                                False, factored=True)
    WK_from_g = ops.gemm(e.reshape(-1, e.shape[-1]).t(), gbar.reshape(-1, L))
    ybar = ops.mm(gbar, WK.t()).mul_(factor)
    sigbar, wpbars, WKbar, bKbar, W1bar = reverse_field(ops, ybar, coords, omegas[0], xs, sins, coss, x_last,
                                                        qbars, wps, WK, want_W1, gs=gs)
    wpbars = [None] + [wpbars[k] + wpbars_g[k] for k in range(1, S)]
    phibar, grads = param_grads(sigbar, om, phi, A, wpbars, W1bar, WKbar + WK_from_g, bKbar, omegas, (Tw, gradbar),
                                factor_A)
    return phibar + phibar_next, lrbar, grads


# -- the first step from phi = 0: one shared field ---------------------------------------------------
def shared_forward(ops: AtenOps, coords, values, weights, omegas, params: Params, keep: bool):
    """At phi = 0 every signal has the same field: forward once, backward once per output channel
    (one-hot errors), and the batch's ``t`` are ``E Q``. Returns ``(loss, e, Qcat, om, saved)``,
    ``Qcat`` ``(n C, S L)`` with rows ordered (coordinate, channel)."""
    A = params[-2]
    WK, bK = params[-4], params[-3]
    B, n, C = values.shape
    zero = A.new_zeros(1, A.shape[1])
    h, sigma, wps, om = prepare(params, omegas, coords, zero)
    xs, sins, coss, x_last, y = field_forward(ops, h, sigma, wps, WK, bK, keep_sin=keep)
    loss, e, factor = loss_and_error(y.expand(B, n, C).clone(), values, weights)
    L = coss[0].shape[-1]
    gs, qs, _ = closed_grad(ops, WK.view(C, 1, L).expand(C, n, L), coss, wps)
    Qcat = torch.stack(qs, dim=2).permute(1, 0, 2, 3).reshape(n * C, len(omegas) * L)
    saved = (wps, om, xs, sins, coss, x_last, gs, qs, Qcat, e, factor, zero) if keep else None
    return loss, e, Qcat, om, saved


def first_forward(ops: AtenOps, coords, values, weights, omegas, lr, params: Params):
    """``(phi_1, loss, saved)``: the inner step from phi = 0 for the whole batch."""
    loss, e, Qcat, om, saved = shared_forward(ops, coords, values, weights, omegas, params, keep=True)
    B = e.shape[0]
    Tw = torch.mm(e.reshape(B, -1), Qcat).view(B, len(omegas), -1).mul_(om).view(B, -1)
    grad = torch.mm(Tw, params[-2])
    return grad * (-lr), loss, saved + (Tw, grad)


def first_backward(ops: AtenOps, coords, omegas, phibar1, lr, params: Params, saved, want_lr: bool, want_W1: bool,
                   factor_A: bool = False):
    """Reverse of :func:`first_forward`: ``(lr_bar, grads)`` (``factor_A``: see :func:`param_grads`)."""
    wps, om, xs, sins, coss, x_last, gs, qs, Qcat, e, factor, zero, Tw, grad = saved
    WK, A = params[-4], params[-2]
    B, n, C = e.shape
    S, L = len(omegas), coss[0].shape[-1]
    gradbar = phibar1 * (-lr)
    lrbar = None
    if want_lr:
        lrbar = -(phibar1 * grad)
        lrbar = lrbar.sum() if lr.dim() == 0 else lrbar.sum(dim=0)
    Tbar = torch.mm(gradbar, A.t()).view(B, S, L).mul_(om).view(B, S * L)
    Ebar = torch.mm(Tbar, Qcat.t()).view(B, n, C)
    Qbar = torch.mm(e.reshape(B, -1).t(), Tbar).view(n, C, S, L).permute(2, 1, 0, 3)     # (S, C, n, L)
    gbar, cbars, wpbars_g = reverse_closed_grad(ops, [Qbar[k] for k in range(S)], gs, qs, coss, wps, True)
    WK_from_g = gbar.sum(dim=1)                     # g_S = W_K[j] at every coordinate
    ybar = Ebar.mul_(factor).sum(dim=0, keepdim=True)   # y is shared by the batch
    sigbar, wpbars, WKbar, bKbar, W1bar = reverse_field(ops, ybar, coords, omegas[0], xs, sins, coss, x_last,
                                                        cbars, wps, WK, want_W1)
    wpbars = [None] + [wpbars[k] + wpbars_g[k] for k in range(1, S)]
    # phi = 0: the sbar^T phi term of A's gradient is zero (None leaves it out)
    _, grads = param_grads(sigbar, om, None, A, wpbars, W1bar, WKbar + WK_from_g, bKbar, omegas, (Tw, gradbar),
                           factor_A)
    return lrbar, grads


def first_grads(ops: AtenOps, coords, values, weights, omegas, params: Params, context: torch.Tensor | None):
    """``(loss, grad, context_grad | None)`` at phi = 0 without a graph (see :func:`shared_forward`)."""
    loss, e, Qcat, om, _ = shared_forward(ops, coords, values, weights, omegas, params, keep=False)
    B, n, C = e.shape
    t = torch.mm(e.reshape(B, -1), Qcat).view(B, len(omegas), -1)
    t_sub = None
    if context is not None:
        rows = (context.view(-1, 1) * C + torch.arange(C, device=context.device)).view(-1)
        t_sub = torch.mm(e[:, context].reshape(B, -1), Qcat[rows]).view(B, len(omegas), -1)
    return (loss, *grads_from_sums(t, t_sub, om, params[-2], weights, context, e.shape))


def context_scale(weights, context, n: int, c: int):
    """Factor from the full-loss gradient terms to the context-subset loss gradient."""
    if weights is None:
        return n / context.shape[0]
    return (mse_norm(weights, c) / mse_norm(weights[:, context], c)).unsqueeze(1)


def mse_norm(weights: torch.Tensor, c: int) -> torch.Tensor:
    """``(B,)`` denominator of the weighted MSE: the sum of the weights ``(B, n)`` times the channels
    ``c``, at least 1e-12."""
    return (weights.sum(dim=1) * c).clamp_min(1e-12)


# -- the outer loss ----------------------------------------------------------------------------------
def outer_forward(ops: AtenOps, coords, values, weights, omegas, phi, params: Params):
    h, sigma, wps, om = prepare(params, omegas, coords, phi)
    xs, _, coss, x_last, y = field_forward(ops, h, sigma, wps, params[-4], params[-3], keep_sin=False)
    loss, e, _ = loss_and_error(y, values, weights)
    return loss, (wps, om, xs, coss, x_last, e)


def outer_backward(ops: AtenOps, coords, omegas, lossbar, phi, params: Params, saved, want_W1: bool,
                   factor_A: bool = False):
    wps, om, xs, coss, x_last, e = saved
    ybar = e * lossbar.view(-1, 1, 1)
    sigbar, wpbars, WKbar, bKbar, W1bar = reverse_field(ops, ybar, coords, omegas[0], xs, None, coss, x_last, None,
                                                        wps, params[-4], want_W1)
    return param_grads(sigbar, om, phi, params[-2], wpbars, W1bar, WKbar, bKbar, omegas, factor_A=factor_A)


# -- no graph: the gradient in place (encoding, first-order inner loops) ------------------------------
def latent_grads(ops: AtenOps, coords, values, weights, omegas, phi, params: Params,
                 context: torch.Tensor | None):
    """``(loss (B,), grad (B, P), context_grad | None)`` in place, keeping one tensor per layer.

    ``context`` ``(m,)``: coordinate indices; ``context_grad`` is the gradient of the MSE over
    just those coordinates, taken from the same pass (the backward acts on each coordinate
    separately and is linear in the error, so the subset's terms are a part of the full sum).
    """
    h, sigma, wps, om = prepare(params, omegas, coords, phi)
    WK, bK, A = params[-4], params[-3], params[-2]
    coss = []
    x = None
    for k in range(len(omegas)):
        x, c = ops.shifted_sin_cos(h, sigma[:, 0]) if k == 0 else ops.sine_layer(x, wps[k].t(), sigma[:, k], acc=x)
        coss.append(c)
    y = ops.gemm_add(bK + 0.5, x.reshape(-1, x.shape[-1]), WK.t()).view(*x.shape[:-1], WK.shape[0])
    loss, e, _ = loss_and_error(y, values, weights)
    g = output_grad(ops, e, WK)
    ts, subs = [None] * len(coss), [None] * len(coss)
    for k in range(len(coss) - 1, -1, -1):
        ts[k], subs[k] = ops.mul_sum_(coss[k], g, context)   # coss[k] now holds q_k = c_k g_k
        if k > 0:
            ops.gemm_add_(g.view(-1, g.shape[-1]), coss[k].reshape(-1, g.shape[-1]), wps[k])
    t_sub = None if context is None else torch.stack(subs, dim=1)
    return (loss, *grads_from_sums(torch.stack(ts, dim=1), t_sub, om, A, weights, context, values.shape))


def grads_from_sums(t, t_sub, om, A, weights, context, values_shape):
    """``(grad (B, P), context_grad | None)`` from the coordinate sums ``t = sum_n q_k`` ``(B, S, L)``
    (and ``t_sub``, those over the ``context`` rows): ``grad = sum_k omega_k t_k A_k``; ``t`` and
    ``t_sub`` are scaled in place."""
    B = t.shape[0]
    grad = torch.mm(t.mul_(om).view(B, -1), A)
    if context is None:
        return grad, None
    scale = context_scale(weights, context, values_shape[1], values_shape[2])
    return grad, torch.mm(t_sub.mul_(om).view(B, -1), A) * scale
