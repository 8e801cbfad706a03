"""Device selection shared by every command (``--device auto|cpu|cuda``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from funcml.errors import ConfigError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Map ``auto`` to CUDA when available, else CPU; validate explicit choices."""
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but no CUDA device is available")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda")


def peak_memory_bytes(device: torch.device) -> int:
    """Peak memory of this process so far: CUDA ``max_memory_allocated`` or CPU peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    # ru_maxrss is in kilobytes on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def to_device(x: torch.Tensor | np.ndarray, device: torch.device | str) -> torch.Tensor:
    """Host data on ``device``. To CUDA through page-locked (pinned) memory with a non-blocking copy:
    from ordinary pageable memory a ``non_blocking`` copy is not asynchronous, and a blocking one waits
    for the GPU. (torch's pinned-memory cache keeps the staging block until its copy is done.)"""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def to_host(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], Any]:
    """``(copies on the CPU, event)``: CUDA tensors are copied into pinned memory without waiting; the
    copies may be read once ``event.synchronize()`` returns (``event`` is None when nothing was on a
    GPU). Lets a consumer thread, not the compute loop, wait for the results."""
    out, stream = {}, None
    for name, t in tensors.items():
        if t.device.type == "cuda":
            host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
            out[name] = host.copy_(t.detach(), non_blocking=True)
            stream = torch.cuda.current_stream(t.device)   # the copy runs on the source device's stream
        else:
            out[name] = t.detach()
    if stream is None:
        return out, None
    event = torch.cuda.Event()
    event.record(stream)
    return out, event
