"""Matmul precision of the fitting stack: ``auto``, ``fp32``, ``tf32`` or ``bf16``, chosen per run.

``auto`` (the default of ``funcml train`` and ``funcml encode``) is TF32 on CUDA, where the tensor
cores run float32 matmuls with 10-bit mantissa inputs and float32 accumulation, and plain float32
on a CPU (which has no TF32; ``tf32`` there rounds the inputs, to measure the effect only).
``--precision fp32`` opts out on a GPU.

TF32 in cuBLAS is a process-wide torch flag. :func:`cuda_tf32` sets it only for the duration of a
``with`` block and restores the previous value afterwards, through the API that torch offers:
``torch.backends.cuda.matmul.fp32_precision`` from torch 2.9 (saved and restored as it was, so a
caller's legacy ``allow_tf32`` or ``set_float32_matmul_precision`` setting reads back unchanged),
``allow_tf32`` before.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator

import torch

PRECISIONS = ("fp32", "tf32", "bf16")
CHOICES = ("auto", *PRECISIONS)


def resolve(precision: str | None, device: torch.device | str) -> str:
    """The concrete precision of ``precision`` on ``device``: ``auto`` (or None) is ``tf32`` on CUDA
    and ``fp32`` elsewhere; others are checked and returned."""
    if precision in (None, "auto"):
        return "tf32" if torch.device(device).type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {CHOICES}; got {precision!r}")
    return precision


def _has_new_api() -> bool:
    try:
        torch.backends.cuda.matmul.fp32_precision  # noqa: B018 - torch >= 2.9
    except (AttributeError, RuntimeError):
        return False
    return True


@contextmanager
def cuda_tf32(enabled: bool) -> Iterator[None]:
    """Inside the block, CUDA float32 matmuls use TF32 tensor cores iff ``enabled``; the previous
    setting is restored on exit (also after an exception)."""
    matmul = torch.backends.cuda.matmul
    if _has_new_api():
        old = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = old
        return
    old_flag = matmul.allow_tf32
    matmul.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        matmul.allow_tf32 = old_flag


def scoped(precision: str, device: torch.device | str) -> ContextManager[None]:
    """The CUDA setting a run at ``precision`` needs, for the duration of a ``with`` block: TF32 float32
    matmuls on CUDA iff ``precision`` (resolved) is ``tf32``; nothing to do on a CPU. ``funcml train``
    and ``funcml encode`` run inside it; the fused kernels take the precision itself from their
    :class:`funcml.backends.Execution`."""
    device = torch.device(device)
    if device.type != "cuda":
        return nullcontext()
    return cuda_tf32(resolve(precision, device) == "tf32")
