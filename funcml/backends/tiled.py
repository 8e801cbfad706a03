"""The latent-gradient pass of a whole batch in one call, tile by tile of coordinates (``cpu`` backend, float32).

:func:`funcml.backends.kernels.latent_grads` runs a layer at a time over a cache-sized group of
signals: each layer's ``(b, n, L)`` cosines go out to memory in the forward and come back in the
backward, and each operation is a Python call. Every quantity of that pass except the sums over
coordinates is per coordinate, so here one C call (``funcml_latent_grads`` of the C loops,
:mod:`funcml.backends.native`) runs the forward *and* the backward of all layers for a tile of ``T``
coordinates of one signal before it moves to the next tile: the tile's activations (``(S + 3) T L``
floats, about 1 MB) stay in the core's cache, each thread takes whole tiles, and the sums over
coordinates come out per tile and are added in double in tile order (the result does not depend on
the thread count).

The tiles' matmuls call a BLAS ``sgemm`` (:func:`blas`) through a public interface, chosen by
``FUNCML_TILED_BLAS`` (:mod:`funcml.environment`; default ``auto``):

* ``aten``: torch's own BLAS (MKL on x86 wheels) through ATen's C++ API (``at::cpu::mm_out``), in the
  optional extension ``funcml.backends._aten_sgemm`` (``csrc/aten_sgemm.cpp``) built with the
  package. A whole tile per call. It is used only under the torch version it was built against.
* ``scipy``: the ``sgemm`` that SciPy exports for Cython code (``scipy.linalg.cython_blas``, whose
  capsule holds its address), limited to one thread for the duration of a pass (``threadpoolctl``;
  each of our threads calls it). That BLAS is OpenBLAS, which packs both operands of a larger
  product for every call; its small-matrix kernels (products of at most :data:`SMALL_GEMM`
  multiply-adds) skip the packing, so each tile's products go in calls of :func:`gemm_rows` rows,
  with the forward's weights handed over transposed (both products ``N, N``).

``auto`` takes ``aten`` where it loads, else ``scipy`` (``docs/design/performance.md`` has the measurements).

Same contract and math as :func:`funcml.backends.kernels.latent_grads` (``tests/test_backend_cpu.py``:
float32 rounding). Used by the ``cpu`` backend where :func:`available`; ``FUNCML_TILED=0`` (see
:mod:`funcml.environment`) measures the layer-by-layer path instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
from dataclasses import dataclass

import torch

from funcml import environment
from funcml.backends import kernels, native

log = logging.getLogger(__name__)

ATEN_MODULE = "funcml.backends._aten_sgemm"  # the extension built by setup.py

TILE_BYTES = 1 << 20  # per-thread activations of one tile: within a core's L2 on current CPUs
SMALL_GEMM = 1_000_000  # OpenBLAS runs an sgemm of at most 100**3 multiply-adds without packing its operands
PART_BYTES = 64 << 20  # the per-tile sums of one call; larger batches run in groups of signals


@dataclass(frozen=True)
class Blas:
    """An ``sgemm`` for the pass's tiles: ``name`` (``aten`` or ``scipy``), the function's ``address``,
    and for SciPy's OpenBLAS the ``threadpoolctl`` selection that is limited to one thread during a pass."""

    name: str
    address: int
    limiter: object | None = None

    def rows_per_call(self, width: int, tile: int) -> int:
        """Rows of a ``tile`` per call: the whole tile (ATen), or :func:`gemm_rows` (OpenBLAS's small kernels)."""
        return tile if self.name == "aten" else gemm_rows(width)

    def one_thread(self):
        """A context in which the BLAS runs on its calling thread only."""
        return self.limiter.limit(limits=1) if self.limiter is not None else contextlib.nullcontext()


def _capsule_address(capsule) -> int:
    """The pointer a ``PyCapsule`` holds (the capsule's own name is its C signature)."""
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype, get_name.argtypes = ctypes.c_char_p, [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype, get_pointer.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


@functools.lru_cache(maxsize=None)
def scipy_blas() -> Blas | None:
    """SciPy's Cython ``sgemm`` with a ``threadpoolctl`` selection of the loaded BLAS libraries, found once;
    None where SciPy's Cython BLAS or threadpoolctl is missing."""
    try:
        from scipy.linalg import cython_blas
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    capsule = getattr(cython_blas, "__pyx_capi__", {}).get("sgemm")
    if capsule is None:
        return None
    # after SciPy's BLAS is loaded, so that the controller finds it
    return Blas("scipy", _capsule_address(capsule), ThreadpoolController().select(user_api="blas"))


@functools.lru_cache(maxsize=None)
def aten_blas() -> Blas | None:
    """The ATen ``sgemm`` of the extension :data:`ATEN_MODULE`, loaded once; None where it was not built,
    does not load, or was built against another torch than the one running."""
    lib = native.load_extension(ATEN_MODULE, "the tiled pass uses SciPy's BLAS")
    if lib is None:
        return None
    lib.funcml_aten_torch_version.restype = ctypes.c_char_p
    built = lib.funcml_aten_torch_version().decode()
    if built != torch.__version__:
        log.info("the ATen sgemm was built for torch %s, not %s: the tiled pass uses SciPy's BLAS", built,
                 torch.__version__)
        return None
    return Blas("aten", ctypes.cast(lib.funcml_aten_sgemm, ctypes.c_void_p).value)


def blas() -> Blas | None:
    """The pass's ``sgemm`` as ``FUNCML_TILED_BLAS`` chooses (see the module docstring), None where neither
    is found."""
    choice = environment.tiled_blas()
    found = aten_blas() if choice in ("auto", "aten") else None
    return found if found is not None else scipy_blas()


def available() -> bool:
    """Whether the tiled pass can run here: the C loops built and a BLAS ``sgemm`` found."""
    return native.available() and blas() is not None


def tile_rows(num_layers: int, width: int) -> int:
    """Coordinates per tile: ``(S + 3) T L`` floats within :data:`TILE_BYTES`, a multiple of 16 in [16, 512]."""
    t = TILE_BYTES // (4 * (num_layers + 3) * width)
    return int(max(16, min(512, t // 16 * 16)))


def gemm_rows(width: int) -> int:
    """Rows of a tile per ``sgemm`` call: as many as keep ``(rows, L) x (L, L)`` within :data:`SMALL_GEMM`
    multiply-adds, a multiple of 8; beyond width 353, where not even 8 rows fit, a whole tile (at most 512)."""
    g = SMALL_GEMM // (width * width) // 8 * 8
    return int(g if g >= 8 else 512)


def part_bytes(n: int, num_layers: int, width: int, masked: bool) -> int:
    """Bytes of one signal's per-tile sums (double)."""
    return 8 * -(-n // tile_rows(num_layers, width)) * (1 + num_layers * width * (2 if masked else 1))


def applies(coords, values, weights, omegas, phi, params, context) -> bool:
    """:meth:`TiledPass.latent_grads` takes these arguments: float32 CPU tensors and one signal's per-tile
    sums within :data:`PART_BYTES`; and a BLAS was found (:func:`blas`, looked for at the first call)."""
    tensors = (coords, values, weights, phi, *params)
    if not all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors):
        return False
    width = params[0].shape[0]
    return part_bytes(coords.shape[0], len(omegas), width, context is not None) <= PART_BYTES and blas() is not None


@dataclass(frozen=True)
class TiledPass:
    """The tiled pass with the C loops ``lib``; its BLAS (:func:`blas`) is loaded at its first use, so that
    work without an encoding step (a meta-training step) does not load it."""

    lib: ctypes.CDLL

    @classmethod
    def here(cls) -> "TiledPass | None":
        """The pass on this machine, or None where the C loops are not built."""
        return cls(native.library()) if native.available() else None

    def latent_grads(self, coords, values, weights, omegas, phi, params: kernels.Params,
                     context: torch.Tensor | None):
        """:func:`kernels.latent_grads` tile by tile: ``(loss (B,), grad (B, P), context_grad | None)``.

        coords ``(n, d)``; values ``(B, n, C)``; weights ``(B, n)`` or None; phi ``(B, P)``; ``context``
        ``(m,)`` coordinate indices or None. Check :func:`applies` first.
        """
        h, sigma, wps, om = kernels.prepare(params, omegas, coords, phi)
        WK, bK, A = params[-4], params[-3], params[-2]
        B, S, L = sigma.shape
        n, C = coords.shape[0], WK.shape[0]
        values = values.contiguous()
        wp = torch.stack(wps[1:]) if S > 1 else h.new_zeros(1)
        w = None if weights is None else weights.to(values.dtype).contiguous()
        norm = torch.full((B,), float(n * C)) if w is None else kernels.mse_norm(w, C)
        mask = None if context is None else native.context_mask(context, n, values)
        width = 1 + S * L * (1 if mask is None else 2)
        group = max(1, PART_BYTES // part_bytes(n, S, L, mask is not None))
        total = torch.empty(B, width, dtype=torch.float64)
        found = blas()
        wpt = wp.transpose(-1, -2).contiguous() if S > 1 else wp
        T = tile_rows(S, L)
        args = (found.address, h, wp, wpt, WK.contiguous(), (bK + 0.5).contiguous(), 2.0 / norm, mask, T,
                found.rows_per_call(L, T))
        with found.one_thread():
            for s in range(0, B, group):
                e = min(B, s + group)
                self._run(args, sigma[s:e], values[s:e], None if w is None else w[s:e], s, e, total[s:e])
        loss = (total[:, 0] / norm.double()).to(values.dtype)
        t = total[:, 1:1 + S * L].to(values.dtype).view(B, S, L)
        t_sub = None if mask is None else total[:, 1 + S * L:].to(values.dtype).view(B, S, L)
        return (loss, *kernels.grads_from_sums(t, t_sub, om, A, weights, context, values.shape))

    def _run(self, args, sigma, values, weights, s: int, e: int, out: torch.Tensor) -> None:
        """One C call for the signals ``s:e``; their sums over tiles go to ``out`` ``(e - s, width)``."""
        sgemm, h, wp, wpt, WK, bK, efac, mask, T, G = args
        B, S, L = sigma.shape
        n, C = h.shape[0], WK.shape[0]
        part = torch.empty(B, -(-n // T), out.shape[1], dtype=torch.float64)
        rc = self.lib.funcml_latent_grads(sgemm, h.data_ptr(), sigma.data_ptr(), wp.data_ptr(), wpt.data_ptr(),
                                          WK.data_ptr(), bK.data_ptr(), values.data_ptr(), native.ptr(weights),
                                          native.ptr(mask), efac[s:e].data_ptr(), part.data_ptr(), B, n, L, S, C, T, G,
                                          torch.get_num_threads(), native.LIMIT)
        if rc != 0:
            raise MemoryError("funcml_latent_grads: out of memory for its tile buffers")
        torch.sum(part, dim=1, out=out)
