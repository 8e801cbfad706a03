"""The primitive operations of the fused kernels, in ATen: matmuls at a precision and the element-wise
groups of a SIREN layer.

:mod:`funcml.backends.kernels` derives the inner step and its reverse from these primitives; an
:class:`AtenOps` object is their first argument. The ``cpu`` backend hands them a
:class:`funcml.backends.native.NativeOps` instead, which runs the element-wise groups in C loops and
falls back to the methods here wherever the loops do not apply. Every method documents the ATen
operations it stands for, which are the reference for the C loops (``tests/test_backend_cpu.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _tf32(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 mantissa bits, to nearest)."""
    i = x.contiguous().view(torch.int32)
    return ((i + 0x1000) & ~0x1FFF).view(torch.float32)


@dataclass(frozen=True)
class AtenOps:
    """Primitives in ATen.

    Attributes:
        precision: of the per-coordinate matmuls: ``"fp32"``; ``"bf16"`` (bfloat16 inputs and a bfloat16
            result, accumulated in float32 inside the matmul and converted back to float32: the result
            carries bfloat16's 8 significant bits); ``"tf32"`` (TF32 tensor cores on CUDA, which
            :func:`funcml.backends.precision.scoped` switches on, float32 results; emulated on a CPU by
            rounding the inputs to 10 mantissa bits, for measuring its effect).
    """

    precision: str = "fp32"

    # -- matmuls -----------------------------------------------------------------------------------
    def gemm(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``a @ b`` (2-D) at :attr:`precision` (bf16: rounded to bfloat16, returned as float32)."""
        p = self.precision
        if p == "fp32" or a.dtype != torch.float32 or (p == "tf32" and a.is_cuda):
            return torch.mm(a, b)
        if p == "bf16":
            return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16)).to(a.dtype)
        return torch.mm(_tf32(a), _tf32(b))

    def gemm_add(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c + a @ b`` (``c`` broadcastable)."""
        return torch.addmm(c, a, b) if self.precision == "fp32" else c + self.gemm(a, b)

    def gemm_add_(self, c: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """``c += a @ b`` in place."""
        return c.addmm_(a, b) if self.precision == "fp32" else c.add_(self.gemm(a, b))

    def mm(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x (..., i) @ w (i, j)`` as one 2-D matmul."""
        return self.gemm(x.reshape(-1, x.shape[-1]), w).view(*x.shape[:-1], w.shape[1])

    def linear_shift(self, x: torch.Tensor, w: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """``x (B, n, i) @ w (i, j) + shift (B, 1 or n, j)``; the addition is fused into the matmul."""
        if self.precision == "fp32":
            return torch.baddbmm(shift, x, w.expand(x.shape[0], *w.shape))
        return self.mm(x, w).add_(shift)

    # -- element-wise groups -------------------------------------------------------------------------
    def sine_layer(self, x: torch.Tensor, w: torch.Tensor, shift: torch.Tensor, acc: torch.Tensor | None = None,
                   keep_sin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sin u, cos u)`` of ``u = x (B, n, i) @ w (i, j) + shift (B, j)``; with ``acc`` ``sin u`` is
        added to it in place and ``acc`` returned instead (with ``keep_sin``: still ``sin u``). The
        shift is added inside the matmul (``baddbmm``)."""
        u = self.linear_shift(x, w, shift.unsqueeze(1))
        s = torch.sin(u)
        u.cos_()
        if acc is not None:
            acc.add_(s)
        return (s if acc is None or keep_sin else acc), u

    def shifted_sin_cos(self, u: torch.Tensor, shift: torch.Tensor, acc: torch.Tensor | None = None,
                        keep_sin: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sin x, cos x)`` of ``x = u + shift``: a SIREN layer's activation.

        ``u`` ``(B, n, L)`` (its memory then receives ``cos x``) or ``(n, L)`` shared by the batch (then
        ``cos x`` is a new ``(B, n, L)`` tensor); ``shift`` ``(B, L)`` or ``(B, 1, L)``, one row per
        signal. With ``acc`` ``(B, n, L)``, ``sin x`` is added to it in place and ``acc`` is returned
        in its place, or, with ``keep_sin``, ``sin x`` as well.
        """
        shift2 = shift.reshape(shift.shape[0], shift.shape[-1]).contiguous()
        x = u.unsqueeze(0) + shift2.unsqueeze(1) if u.dim() == 2 else u.add_(shift2.unsqueeze(1))
        s = torch.sin(x)
        x.cos_()
        if acc is not None:
            acc.add_(s)
        return (s if acc is None or keep_sin else acc), x

    def sin_cos_into(self, u: torch.Tensor, sin_out: torch.Tensor, cos_out: torch.Tensor) -> None:
        """Write ``sin u`` to ``sin_out`` and ``cos u`` to ``cos_out`` (``cos_out`` may be ``u``)."""
        torch.sin(u, out=sin_out)
        torch.cos(u, out=cos_out)

    def mul_sum_(self, c: torch.Tensor, g: torch.Tensor, context: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``c *= g`` in place (``(B, n, L)`` each) and the sums over the ``n`` axis ``(B, L)``: of all
        rows, and, with ``context`` ``(m,)`` row indices, of those rows."""
        q = c.mul_(g)
        sub = None if context is None else q.index_select(1, context).sum(dim=1)
        return q.sum(dim=1), sub

    def field_adjoint(self, c: torch.Tensor, xbar: torch.Tensor, s: torch.Tensor | None = None,
                      cbar: torch.Tensor | None = None, g: torch.Tensor | None = None,
                      out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A sine layer's pre-activation adjoint ``ubar = c * xbar - s * cbar`` ``(B, n, L)`` and its sum
        over coordinates ``(B, L)``.

        ``c``, ``s``: the layer's cos and sin; ``xbar``: the adjoint of its output; ``cbar``: the
        adjoint of ``c`` (None: no such term), given as ``cbar * g`` when ``g`` is given (the adjoint
        of ``q = c g``), ``(B, n, L)`` or one row per signal ``(B, 1, L)``. ``out``: a buffer for
        ``ubar`` (reused layer after layer).
        """
        ubar = torch.mul(c, xbar) if out is None else torch.mul(c, xbar, out=out)
        if cbar is not None:
            ubar.addcmul_(s, cbar if g is None else cbar * g, value=-1.0)
        return ubar, ubar.sum(dim=1)
