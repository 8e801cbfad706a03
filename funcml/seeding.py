"""Deterministic seeds derived from a base seed and counters (steps, chunks, ranks).

Every random choice in training and encoding is drawn from a generator seeded by
``derive_seed(seed, purpose, counter)``, so a run resumed at step s draws exactly what the
uninterrupted run would have drawn, with no RNG state to save.
"""

from __future__ import annotations

import numpy as np
import torch

PURPOSES = {"init": 0, "batch": 1, "context": 2, "encode": 3, "validate": 4, "pairs": 5}


def derive_seed(seed: int, purpose: str, *counters: int) -> int:
    """A 63-bit seed from ``seed``, a named purpose and counters (independent streams)."""
    entropy = [int(seed) & 0xFFFFFFFF, PURPOSES[purpose], *[int(c) for c in counters]]
    return int(np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32).astype(np.uint64).dot(
        np.array([1 << 31, 1], dtype=np.uint64)) & ((1 << 63) - 1))


def generator(seed: int, purpose: str, *counters: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, purpose, *counters))


def on_device(gen: torch.Generator, device: torch.device | str | None) -> torch.Generator:
    """A generator that draws on ``device``: ``gen`` itself when it is there already, else a new
    generator of that device seeded by one draw from ``gen`` (on the CPU: no device synchronisation).
    Deterministic: the same ``gen`` state gives the same device generator."""
    device = torch.device(device) if device is not None else gen.device
    if gen.device.type == device.type and device.index in (None, gen.device.index):
        return gen
    seed = int(torch.randint(0, (1 << 63) - 1, (), generator=gen, dtype=torch.int64))
    return torch.Generator(device=device).manual_seed(seed)


def epoch_batch(step: int, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Indices (into ``range(n)``) of the meta-batch at ``step``.

    The stream of indices is the concatenation of independent permutations of ``range(n)``
    (one per epoch); step s takes positions ``[s*B, (s+1)*B)``. Stateless, so resuming needs no
    sampler state.
    """
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng(derive_seed(seed, "batch", epoch)).permutation(n)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out, dtype=np.int64)
