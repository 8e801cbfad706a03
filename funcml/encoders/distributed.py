"""Data-parallel meta-training across processes started by ``torchrun`` (gloo on CPU, nccl on GPU).

Each process computes the meta-gradient of its share of the global meta-batch, scaled by
1 / global batch size; an all-reduce (sum) then gives every process the full-batch gradient, and
all take the same optimizer step. The result matches a single process with the same global batch.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from funcml import environment


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else single process.

    On CUDA the process is bound to the GPU of its ``LOCAL_RANK`` first (``torch.cuda.set_device``,
    and ``device_id=`` to ``init_process_group`` where torch has it), so that NCCL's collectives and
    barriers use that GPU and not GPU 0. The caller that owns the process ends it with
    :func:`shutdown` (the CLI commands do).
    """
    world = environment.world_size()
    if world <= 1:
        return DistInfo()
    local_rank = environment.local_rank()
    if not dist.is_initialized():
        kwargs = {}
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
            if "device_id" in inspect.signature(dist.init_process_group).parameters:
                kwargs["device_id"] = torch.device("cuda", local_rank)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", **kwargs)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def current() -> DistInfo:
    """This process's place in an initialised process group (one process when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=environment.local_rank())


def from_main(value: int | None, device: torch.device) -> int | None:
    """Process 0's ``value`` (a non-negative int, or None when it failed) in every process, by one
    broadcast: lets the others go on with what process 0 prepared, or stop with a message instead of
    waiting at a later collective for a process that failed."""
    if not current().enabled:
        return value
    t = torch.tensor([-1 if value is None else int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    got = int(t.item())
    return None if got < 0 else got


def all_reduce_gradients(params: list[torch.nn.Parameter]) -> None:
    """Sum ``.grad`` over processes, as one flat buffer."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_tensor(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (in place, on its device: no host sync); returns it."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_parameters(module: torch.nn.Module) -> None:
    for p in module.state_dict().values():
        dist.broadcast(p, src=0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (if one is initialised): call once at the end of a torchrun process."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def session() -> Iterator[None]:
    """The lifetime of a command's process group: :func:`shutdown` at the end of the block, also
    after an error (the CLI's ``train`` and ``encode`` run inside one)."""
    try:
        yield
    finally:
        shutdown()
