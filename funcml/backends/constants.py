"""Small constant tensors (omegas, learning rates) made once per device and dtype, then reused.

``torch.tensor(values, device="cuda")`` copies from pageable host memory and waits for the copy: a
host-device synchronisation, which in the inner loop happened at every step. The fused kernels take
their constants from :func:`device_constant` instead: the first call makes the tensor, later calls
return the same one (no copy, no kernel launch). Under ``torch.compile`` tracing the tensor is
made in the graph instead (the compiled code holds it as a constant).
"""

from __future__ import annotations

import torch

_CACHE: dict[tuple, torch.Tensor] = {}
MAX_ENTRIES = 256


def device_constant(values: float | tuple[float, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A read-only-by-convention tensor of ``values`` (a number: 0-d; a tuple: 1-d) on ``device``.

    Callers must not modify it in place (it is shared). Made outside inference mode, so that it can
    be saved for an autograd backward wherever it is first asked for.
    """
    if torch.compiler.is_compiling():
        return torch.tensor(values, dtype=dtype, device=device)
    key = (values, dtype, torch.device(device))
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) >= MAX_ENTRIES:  # e.g. a learning rate that changes every call
            _CACHE.clear()
        with torch.inference_mode(False), torch.no_grad():
            hit = torch.tensor(values, dtype=dtype, device=device)
        _CACHE[key] = hit
    return hit
