"""Load: encoding streams into a memory-mapped file, so memory does not grow with the number of signals.

The 100k-signal curve is measured by ``benchmarks/encode_memory.py`` (docs/reliability.md); here the
same property is checked on a small scale with ``tracemalloc`` (numpy allocations are traced): the peak
of a 4x larger encode may exceed the smaller one's by a few bytes per signal (split codes, PSNR),
never by anything of the size of the latent matrix.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import torch

from funcml.data.base import ArraySignalSet
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.latents.encode import encode_signal_set
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.latents import LatentSet

P = 2048


def _signals(n: int) -> ArraySignalSet:
    grid = np.linspace(0, 1, 4, dtype=np.float32)
    data = 0.5 + 0.3 * np.sin(grid[None, None, :, None] * (np.arange(n) % 7 + 1)[:, None, None, None]
                              + grid[None, None, None, :])
    return ArraySignalSet(data.astype(np.float32), name="stream", spec=f"stream:{n}", splits=np.zeros(n, np.uint8),
                          labels=None, task="none", label_names=None, fingerprint=f"stream-{n}")


def _peak_encode_bytes(model, model_dir, out, n: int) -> int:
    """Peak of the numpy/Python allocations made while encoding (the data set itself exists before)."""
    cfg = EncodeConfig(steps=1, inner_lr=0.1, context_ratio=1.0, grad_rescale=False, batch_size=200)
    signals = _signals(n)
    tracemalloc.start()
    try:
        encode_signal_set(model, signals, out, cfg, model_dir=model_dir, progress=False)
        LatentSet.open(out, verify=True)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_encode_memory_does_not_grow_with_the_number_of_signals(tmp_path, monkeypatch):
    from funcml.latents import latentset

    # Whole-set passes read 16 MiB at a time; shrink that so both sizes below span many chunks.
    monkeypatch.setattr(latentset, "CHUNK_BYTES", 1 << 16)
    torch.manual_seed(0)
    model = FieldModel(ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=8, depth=2, latent_dim=P)), (1, 4, 4),
                       EncodeConfig())
    model.save(tmp_path / "model")
    small, large = 300, 1200
    _peak_encode_bytes(model, tmp_path / "model", tmp_path / "warm", small)  # first-call allocations
    peak_small = _peak_encode_bytes(model, tmp_path / "model", tmp_path / "small", small)
    peak_large = _peak_encode_bytes(model, tmp_path / "model", tmp_path / "large", large)
    latent_matrix = large * P * 4
    growth = peak_large - peak_small
    # Index, split and PSNR arrays cost tens of bytes per signal; a copy of (or a mask over) the latent
    # matrix would cost >= P = 2048 bytes per signal.
    assert growth < 128 * (large - small), (peak_small, peak_large, latent_matrix)
    assert LatentSet.open(tmp_path / "large").latents.shape == (large, P)
