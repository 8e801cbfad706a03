"""The latent-gradient pass of a whole batch in one call, tile by tile of coordinates (CPU, float32).

:func:`funcml.encoders.kernels.latent_grads` runs a layer at a time over a cache-sized group of
signals: each layer's ``(b, n, L)`` cosines go out to memory in the forward and come back in the
backward, and each operation is a Python call. Every quantity of that pass except the sums over
coordinates is per coordinate, so here one C call (:mod:`funcml.encoders.fused_loops`) runs the
forward *and* the backward of all layers for a tile of ``T`` coordinates of one signal before it
moves to the next tile: the tile's activations (``(S + 3) T L`` floats, about 1 MB) stay in the
core's cache, each thread takes whole tiles and calls the BLAS ``sgemm`` that torch itself uses
(single-threaded inside the tile), and the sums over coordinates come out per tile and are added in
double in tile order (the result does not depend on the thread count).

Same math as :func:`funcml.encoders.kernels.latent_grads` (``tests/test_tiled.py``: float32
rounding). Used by :func:`funcml.encoders.fused.latent_grads` when :func:`available` (a C compiler
and an MKL build of torch, whose ``sgemm_`` and ``MKL_Set_Num_Threads_Local`` are exported);
otherwise, and with ``FUNCML_TILED=0`` (or ``FUNCML_FUSED_LOOPS=0``), the layer-by-layer path runs.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import torch

from funcml.encoders import fused_loops

TILE_BYTES = 1 << 20  # per-thread activations of one tile: within a core's L2 on current CPUs
PART_BYTES = 64 << 20  # the per-tile sums of one call; larger batches run in groups of signals
_STATE: list = []     # [True] once the BLAS is handed to the C library, [False] when unavailable
_LOCK = threading.Lock()


def _blas_symbols() -> tuple[int, int] | None:
    """Addresses of ``sgemm_`` and ``MKL_Set_Num_Threads_Local`` in torch's CPU library, if exported."""
    path = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        lib = ctypes.CDLL(str(path))
        return (ctypes.cast(lib.sgemm_, ctypes.c_void_p).value, ctypes.cast(lib.MKL_Set_Num_Threads_Local,
                                                                            ctypes.c_void_p).value)
    except (OSError, AttributeError):
        return None


def available() -> bool:
    """Whether the tiled pass can run here: the C loops built and not switched off
    (``FUNCML_FUSED_LOOPS=0`` switches off both), torch's MKL ``sgemm_`` found, ``FUNCML_TILED`` not 0."""
    if os.environ.get("FUNCML_TILED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not fused_loops._fusable():
        return False
    if not _STATE:
        with _LOCK:
            if not _STATE:
                lib, symbols = fused_loops._load(), _blas_symbols()
                if lib is not None and symbols is not None:
                    lib.funcml_tiled_init(*symbols)
                _STATE.append(lib is not None and symbols is not None)
    return _STATE[0]


def tile_rows(num_layers: int, width: int) -> int:
    """Coordinates per tile: ``(S + 3) T L`` floats within :data:`TILE_BYTES`, a multiple of 16 in [16, 512]."""
    t = TILE_BYTES // (4 * (num_layers + 3) * width)
    return int(max(16, min(512, t // 16 * 16)))


def _part_bytes(n: int, num_layers: int, width: int, masked: bool) -> int:
    """Bytes of one signal's per-tile sums (double)."""
    return 8 * -(-n // tile_rows(num_layers, width)) * (1 + num_layers * width * (2 if masked else 1))


def applies(*tensors: torch.Tensor | None) -> bool:
    """The tiled pass takes these inputs: float32 CPU tensors (None ignored) and the pass available."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and available()


def fits(n: int, num_layers: int, width: int, masked: bool) -> bool:
    """One signal's per-tile sums fit within :data:`PART_BYTES` (else the layer-by-layer path runs)."""
    return _part_bytes(n, num_layers, width, masked) <= PART_BYTES


def latent_grads(h: torch.Tensor, sigma: torch.Tensor, wps: list, WK: torch.Tensor, bK: torch.Tensor,
                 values: torch.Tensor, weights: torch.Tensor | None, mask: torch.Tensor | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss (B,), t (B, S, L), t_sub (B, S, L) | None)``: the loss and the sums over coordinates of
    ``q_k = cos u_k * g_k`` (all, and ``mask``-weighted), as in :func:`kernels.latent_grads`.

    h ``(n, L)`` (omega_1 c W_1^T); sigma ``(B, S, L)``; wps ``[None, W'_2, ..., W'_S]`` ``(L, L)``;
    WK ``(C, L)``; bK ``(C,)``; values ``(B, n, C)``; weights ``(B, n)`` or None; mask ``(n,)`` 0/1 or None.
    """
    B, S, L = sigma.shape
    n, C = h.shape[0], WK.shape[0]
    T = tile_rows(S, L)
    ntiles = -(-n // T)
    h, sigma, values = h.contiguous(), sigma.contiguous(), values.contiguous()
    wp = torch.stack(wps[1:]).contiguous() if S > 1 else h.new_zeros(1)
    WK, bK = WK.detach().contiguous(), (bK.detach() + 0.5).contiguous()
    w = None if weights is None else weights.to(values.dtype).contiguous()
    if w is None:
        norm = torch.full((B,), float(n * C), dtype=values.dtype)
    else:
        norm = (w.sum(dim=1) * C).clamp_min(1e-12)
    efac = (2.0 / norm).contiguous()
    m = None if mask is None else mask.to(values.dtype).contiguous()
    width = 1 + S * L * (1 if m is None else 2)
    group = max(1, PART_BYTES // _part_bytes(n, S, L, m is not None))
    total = torch.empty(B, width, dtype=torch.float64)
    for s in range(0, B, group):
        e = min(B, s + group)
        part = torch.empty(e - s, ntiles, width, dtype=torch.float64)
        rc = fused_loops._load().funcml_latent_grads(
            h.data_ptr(), sigma[s:e].data_ptr(), wp.data_ptr(), WK.data_ptr(), bK.data_ptr(),
            values[s:e].data_ptr(), fused_loops._ptr(None if w is None else w[s:e]), fused_loops._ptr(m),
            efac[s:e].data_ptr(), part.data_ptr(), e - s, n, L, S, C, T, torch.get_num_threads(),
            fused_loops.LIMIT)
        if rc != 0:
            raise MemoryError("funcml_latent_grads: out of memory for its tile buffers")
        torch.sum(part, dim=1, out=total[s:e])
    loss = (total[:, 0] / norm.double()).to(values.dtype)
    t = total[:, 1:1 + S * L].to(values.dtype).view(B, S, L)
    sub = None if m is None else total[:, 1 + S * L:].to(values.dtype).view(B, S, L)
    return loss, t, sub
