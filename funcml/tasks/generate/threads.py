"""Temporarily limit torch's intra-op CPU threads.

The generator's MLP and the feature CNN are small: their matrix products gain little from several
threads, and on a busy machine OpenMP threads waiting for each other cost far more than they
give (measured on the project's shared 2-core machine: 100 generator steps took 6 s single-threaded
and 38-142 s with two threads). So they run single-threaded by default (``n_threads=1``);
``None`` keeps torch's setting.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def limit_threads(n_threads: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n_threads)`` (restored afterwards)."""
    if n_threads is None or n_threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(n_threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
