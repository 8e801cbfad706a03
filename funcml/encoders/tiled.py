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

Same contract and math as :func:`funcml.encoders.kernels.latent_grads` (``tests/test_tiled.py``:
float32 rounding). Used by :func:`funcml.encoders.fused.latent_grads` where :func:`applies` (a C compiler
and an MKL build of torch, whose ``sgemm_`` and ``MKL_Set_Num_Threads_Local`` are exported);
otherwise, and with ``FUNCML_TILED=0`` (or ``FUNCML_FUSED_LOOPS=0``), the layer-by-layer path runs.
"""

from __future__ import annotations

import ctypes
import functools
import os
from pathlib import Path

import torch

from funcml.encoders import fused_loops, kernels

TILE_BYTES = 1 << 20  # per-thread activations of one tile: within a core's L2 on current CPUs
PART_BYTES = 64 << 20  # the per-tile sums of one call; larger batches run in groups of signals


@functools.lru_cache(maxsize=None)
def _blas_ready() -> bool:
    """Hand ``sgemm_`` and ``MKL_Set_Num_Threads_Local`` of torch's CPU library to the C loops, once;
    False where the loops are not built or torch does not export them (no MKL)."""
    lib = fused_loops._load()
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        symbols = [ctypes.cast(getattr(torch_cpu, name), ctypes.c_void_p).value
                   for name in ("sgemm_", "MKL_Set_Num_Threads_Local")]
    except (OSError, AttributeError):
        return False
    if lib is None:
        return False
    lib.funcml_tiled_init(*symbols)
    return True


def available() -> bool:
    """Whether the tiled pass can run here: the C loops built and not switched off
    (``FUNCML_FUSED_LOOPS=0`` switches off both), torch's MKL ``sgemm_`` found, ``FUNCML_TILED`` not 0."""
    if os.environ.get("FUNCML_TILED", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    return fused_loops._fusable() and _blas_ready()


def tile_rows(num_layers: int, width: int) -> int:
    """Coordinates per tile: ``(S + 3) T L`` floats within :data:`TILE_BYTES`, a multiple of 16 in [16, 512]."""
    t = TILE_BYTES // (4 * (num_layers + 3) * width)
    return int(max(16, min(512, t // 16 * 16)))


def part_bytes(n: int, num_layers: int, width: int, masked: bool) -> int:
    """Bytes of one signal's per-tile sums (double)."""
    return 8 * -(-n // tile_rows(num_layers, width)) * (1 + num_layers * width * (2 if masked else 1))


def applies(coords, values, weights, omegas, phi, params, context) -> bool:
    """:func:`latent_grads` takes these arguments: float32 CPU tensors, one signal's per-tile sums
    within :data:`PART_BYTES`, and the pass :func:`available`."""
    tensors = (coords, values, weights, phi, *params)
    if not all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors):
        return False
    width = params[0].shape[0]
    return part_bytes(coords.shape[0], len(omegas), width, context is not None) <= PART_BYTES and available()


def latent_grads(coords, values, weights, omegas, phi, params: kernels.Params, context: torch.Tensor | None):
    """:func:`kernels.latent_grads` tile by tile: ``(loss (B,), grad (B, P), context_grad | None)``.

    coords ``(n, d)``; values ``(B, n, C)``; weights ``(B, n)`` or None; phi ``(B, P)``; ``context``
    ``(m,)`` coordinate indices or None. Check :func:`applies` first.
    """
    h, sigma, wps, om = kernels.prepare(params, omegas, coords, phi)
    WK, bK, A = params[-4], params[-3], params[-2]
    B, S, L = sigma.shape
    n, C = coords.shape[0], WK.shape[0]
    T = tile_rows(S, L)
    values = values.contiguous()
    wp = torch.stack(wps[1:]) if S > 1 else h.new_zeros(1)
    WK, bK = WK.contiguous(), (bK + 0.5).contiguous()
    w = None if weights is None else weights.to(values.dtype).contiguous()
    norm = torch.full((B,), float(n * C)) if w is None else kernels.mse_norm(w, C)
    efac = 2.0 / norm
    mask = None if context is None else fused_loops.context_mask(context, n, values)
    width = 1 + S * L * (1 if mask is None else 2)
    group = max(1, PART_BYTES // part_bytes(n, S, L, mask is not None))
    total = torch.empty(B, width, dtype=torch.float64)
    for s in range(0, B, group):
        e = min(B, s + group)
        part = torch.empty(e - s, -(-n // T), width, dtype=torch.float64)
        rc = fused_loops._load().funcml_latent_grads(
            h.data_ptr(), sigma[s:e].data_ptr(), wp.data_ptr(), WK.data_ptr(), bK.data_ptr(),
            values[s:e].data_ptr(), fused_loops._ptr(None if w is None else w[s:e]), fused_loops._ptr(mask),
            efac[s:e].data_ptr(), part.data_ptr(), e - s, n, L, S, C, T, torch.get_num_threads(),
            fused_loops.LIMIT)
        if rc != 0:
            raise MemoryError("funcml_latent_grads: out of memory for its tile buffers")
        torch.sum(part, dim=1, out=total[s:e])
    loss = (total[:, 0] / norm.double()).to(values.dtype)
    t = total[:, 1:1 + S * L].to(values.dtype).view(B, S, L)
    t_sub = None if mask is None else total[:, 1 + S * L:].to(values.dtype).view(B, S, L)
    return (loss, *kernels.grads_from_sums(t, t_sub, om, A, weights, context, values.shape))
