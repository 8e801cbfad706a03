"""The ``cpu`` backend's element-wise loops (float32, in C): :class:`NativeOps`.

Between its matmuls a SIREN layer of the fused kernels does element-wise work that ATen runs as
several passes over ``(B, n, L)`` tensors: the per-signal shift, ``sin u`` (the forward) and
``cos u`` (the latent gradient) of the same pre-activations, and in the backward the product
``q = cos u * g`` with its sums over the coordinates (all of them, and the context subset).
On a 2-core CPU ATen's two precise (0.5 ulp) transcendental passes cost about as much as the
layer's matmul. The C loops (``funcml/backends/csrc/cpu_loops.c``) do each group in one
multi-threaded, vectorised pass:

* ``shifted_sin_cos`` (and ``sin_cos_into``): ``sin`` and ``cos`` of ``u + shift`` from one Cody-Waite
  range reduction to ``[-pi/4, pi/4]`` and the cephes ``sinf``/``cosf`` minimax polynomials, largest
  error 1e-7 (1.5 ulp near 1; ATen 0.5 ulp; ``tests/test_backend_cpu.py``), i.e. float32 rounding,
  not a change of the math. Rows holding an argument beyond ``2**16`` in magnitude (or a non-finite
  one) take libm's ``sinf``/``cosf``.
* ``mul_sum_``: ``q = c * g`` in place and both coordinate sums (float blocks, double partials,
  combined in thread order: deterministic for a thread count).
* ``field_adjoint``: a sine layer's pre-activation adjoint of the second-order reverse and its sum.

The loops are compiled at install time (``setup.py``: the optional extension
``funcml.backends._cpu_loops``) and called through :mod:`ctypes` (which releases the GIL); they use the
OpenMP runtime torch has loaded and torch's thread count. Where a call cannot use them (another
dtype or device, a non-contiguous tensor, autograd, inside ``torch.compile``, too small to pay for
the call) it runs :class:`~funcml.backends.ops.AtenOps`' operations; without the built library the
``cpu`` backend is not available and ``auto`` chooses ``fused``.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import logging
from dataclasses import dataclass

import torch

from funcml.backends.ops import AtenOps

log = logging.getLogger(__name__)

MODULE = "funcml.backends._cpu_loops"  # the extension built by setup.py
LIMIT = 65536.0  # |u| beyond this (or NaN/inf) goes to libm: the reduction is exact below it
MIN_ELEMENTS = 4096  # below this the ctypes call costs more than it saves


def load_extension(module: str, fallback: str) -> ctypes.CDLL | None:
    """The shared library of the built extension ``module`` (setup.py), or None where it was not built or
    does not load; ``fallback`` (what runs instead) goes into the log line that says so."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        log.info("%s is not built: %s", module, fallback)
        return None
    try:
        return ctypes.CDLL(spec.origin)
    except OSError as exc:
        log.info("%s cannot be loaded (%s): %s", module, exc, fallback)
        return None


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The built C loops (loaded once), or None where they were not built (no C compiler with OpenMP at
    install time) or cannot be loaded."""
    lib = load_extension(MODULE, "the cpu backend is unavailable")
    if lib is None:
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.funcml_sincos.restype = i32
    lib.funcml_sincos.argtypes = [p, i32, p, p, p, p, i64, i64, i64, i32, ctypes.c_float]
    lib.funcml_mul_sum.restype = i32
    lib.funcml_mul_sum.argtypes = [p, p, p, p, p, p, i64, i64, i64, i32]
    lib.funcml_field_adjoint.restype = i32
    lib.funcml_field_adjoint.argtypes = [p, p, p, p, i64, i64, p, p, p, i64, i64, i64, i32]
    lib.funcml_latent_grads.restype = i32
    lib.funcml_latent_grads.argtypes = [p] * 12 + [i64] * 7 + [i32, ctypes.c_float]
    return lib


def available() -> bool:
    """Whether the C loops were built and load here."""
    return library() is not None


def ptr(t: torch.Tensor | None) -> int:
    """The address of ``t``'s data (0 for None)."""
    return 0 if t is None else t.data_ptr()


def fusable(*tensors: torch.Tensor | None) -> bool:
    """All given tensors are contiguous float32 CPU tensors without autograd, outside ``torch.compile``."""
    for t in tensors:
        if t is None:
            continue
        if t.device.type != "cpu" or t.dtype != torch.float32 or not t.is_contiguous() or t.requires_grad:
            return False
    return not torch.compiler.is_compiling()


def applies(numel: int, *tensors: torch.Tensor | None) -> bool:
    """The loops take a call over ``numel`` elements of ``tensors`` (large enough to pay for the call)."""
    return numel >= MIN_ELEMENTS and fusable(*tensors)


def context_mask(context: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """``(n,)`` 0/1 mask (dtype and device of ``like``) of the coordinate indices ``context`` ``(m,)``."""
    mask = like.new_zeros(n)
    mask[context] = 1.0
    return mask


@dataclass(frozen=True)
class NativeOps(AtenOps):
    """:class:`AtenOps` with the element-wise groups in the C loops ``lib`` (see :func:`library`)."""

    lib: ctypes.CDLL | None = None

    def sine_layer(self, x, w, shift, acc=None, keep_sin=False):
        """:meth:`AtenOps.sine_layer` on a CPU in float32: a plain matmul, then the shift, sine, cosine (and
        the addition) in one loop."""
        if x.dtype == torch.float32 and x.device.type == "cpu" and not torch.compiler.is_compiling():
            return self.shifted_sin_cos(self.mm(x, w), shift, acc=acc, keep_sin=keep_sin)
        return super().sine_layer(x, w, shift, acc=acc, keep_sin=keep_sin)

    def shifted_sin_cos(self, u, shift, acc=None, keep_sin=False):
        """:meth:`AtenOps.shifted_sin_cos` without forming ``u + shift``, in one pass."""
        shared = u.dim() == 2
        b, length = shift.shape[0], shift.shape[-1]
        n = u.shape[0] if shared else u.shape[1]
        shift2 = shift.reshape(b, length).contiguous()
        if not ((acc is None or acc.shape == (b, n, length)) and applies(b * n * length, u, shift2, acc)):
            return super().shifted_sin_cos(u, shift2, acc=acc, keep_sin=keep_sin)
        c = torch.empty(b, n, length, dtype=u.dtype) if shared else u
        s = torch.empty(b, n, length, dtype=u.dtype) if acc is None or keep_sin else None
        self.lib.funcml_sincos(u.data_ptr(), int(shared), shift2.data_ptr(), ptr(s), c.data_ptr(), ptr(acc), b, n,
                               length, torch.get_num_threads(), LIMIT)
        return (s if acc is None or keep_sin else acc), c

    def sin_cos_into(self, u, sin_out, cos_out):
        """:meth:`AtenOps.sin_cos_into` in one pass."""
        if not (sin_out.shape == cos_out.shape == u.shape and applies(u.numel(), u, sin_out, cos_out)):
            return super().sin_cos_into(u, sin_out, cos_out)
        L = u.shape[-1] if u.dim() else 1
        self.lib.funcml_sincos(u.data_ptr(), 0, 0, sin_out.data_ptr(), cos_out.data_ptr(), 0, 1, u.numel() // L, L,
                               torch.get_num_threads(), LIMIT)

    def mul_sum_(self, c, g, context=None):
        """:meth:`AtenOps.mul_sum_` in one pass with double accumulators."""
        if not (c.shape == g.shape and applies(c.numel(), c, g)):
            return super().mul_sum_(c, g, context)
        b, n, length = c.shape
        mask = None if context is None else context_mask(context, n, c)
        t = torch.empty(b, length, dtype=c.dtype)
        sub = torch.empty(b, length, dtype=c.dtype) if mask is not None else None
        rc = self.lib.funcml_mul_sum(c.data_ptr(), g.data_ptr(), c.data_ptr(), ptr(mask), t.data_ptr(), ptr(sub), b,
                                     n, length, torch.get_num_threads())
        if rc != 0:
            raise MemoryError("funcml_mul_sum: out of memory for its partial sums")
        return t, sub

    def field_adjoint(self, c, xbar, s=None, cbar=None, g=None, out=None):
        """:meth:`AtenOps.field_adjoint` in one pass (``cbar``: any strides with contiguous rows)."""
        B, n, L = c.shape
        rows_ok = cbar is None or (cbar.dim() == 3 and cbar.shape[0] == B and cbar.shape[1] in (1, n)
                                   and cbar.shape[2] == L and cbar.stride(2) == 1 and cbar.dtype == torch.float32
                                   and cbar.device.type == "cpu" and not cbar.requires_grad)
        same = xbar.shape == c.shape and all(t is None or t.shape == c.shape for t in (s, g, out))
        if not (rows_ok and same and (cbar is None or s is not None) and applies(c.numel(), c, xbar, s, g, out)):
            return super().field_adjoint(c, xbar, s, cbar, g, out)
        ubar = torch.empty_like(c) if out is None else out
        t = torch.empty(B, L, dtype=c.dtype)
        nt = torch.get_num_threads()
        if cbar is None:
            rc = self.lib.funcml_mul_sum(c.data_ptr(), xbar.data_ptr(), ubar.data_ptr(), 0, t.data_ptr(), 0, B, n, L,
                                         nt)
        else:
            qsi = 0 if cbar.shape[1] == 1 else cbar.stride(1)
            rc = self.lib.funcml_field_adjoint(c.data_ptr(), xbar.data_ptr(), s.data_ptr(), cbar.data_ptr(),
                                               cbar.stride(0), qsi, ptr(g), ubar.data_ptr(), t.data_ptr(), B, n, L, nt)
        if rc != 0:
            raise MemoryError("funcml_field_adjoint: out of memory for its partial sums")
        return ubar, t
