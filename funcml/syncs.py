"""Counting what makes the host wait for a GPU (the checks behind docs/gpu.md).

Two counters:

* :class:`HostSyncOps` (any device, also a CPU): the operations that need a host-device
  synchronisation when their tensors are on a GPU: reading a value on the host (``.item()``,
  ``float()``, ``bool()``: ``aten._local_scalar_dense``), output shapes that depend on the data
  (``nonzero``, ``masked_select``, ``unique``), tensors made from host data (``torch.tensor(...)``:
  ``aten.lift_fresh``, a blocking copy when made on a GPU) and copies between devices. On a CPU it
  shows, without a GPU, that a loop would not wait for one.
* :func:`cuda_syncs` (CUDA): torch's own sync check, ``torch.cuda.set_sync_debug_mode("warn")``,
  whose warnings are counted, each with the line of Python that caused it (``found.sites``); the
  previous mode is restored on exit.
"""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_KINDS = {
    "_local_scalar_dense": "host read", "nonzero": "data-dependent shape", "masked_select": "data-dependent shape",
    "unique": "data-dependent shape", "_unique": "data-dependent shape", "_unique2": "data-dependent shape",
    "unique_consecutive": "data-dependent shape", "lift_fresh": "tensor from host data",
}


def _devices(args, kwargs) -> set[str]:
    found = set()
    for a in [*args, *(kwargs or {}).values()]:
        if isinstance(a, torch.Tensor):
            found.add(a.device.type)
    return found


class HostSyncOps(TorchDispatchMode):
    """``with HostSyncOps() as ops: ...``; then ``ops.counts`` (kind -> number) and ``ops.total``."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = _KINDS.get(func.overloadpacket.__name__)
        if kind is None and func.overloadpacket.__name__ in ("_to_copy", "copy_"):
            target = (kwargs or {}).get("device")
            devices = _devices(args, None) | ({torch.device(target).type} if target is not None else set())
            kind = "copy between devices" if len(devices) > 1 else None
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class SyncLog(list):
    """The warning messages of :func:`cuda_syncs` (its length is the count); ``sites`` counts them by
    ``file:line`` of the Python code that caused each."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: Counter = Counter()


@contextmanager
def cuda_syncs() -> Iterator[SyncLog]:
    """Inside the block every CUDA synchronisation torch can detect is recorded: yields a
    :class:`SyncLog`, filled when the block ends."""
    found = SyncLog()
    old = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield found
        finally:
            torch.cuda.set_sync_debug_mode(old)
            for w in caught:
                if "synchroniz" in str(w.message).lower():
                    found.append(str(w.message))
                    found.sites[f"{Path(w.filename).name}:{w.lineno}"] += 1
