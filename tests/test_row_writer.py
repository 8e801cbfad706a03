"""Encoded rows written by a background thread: the same bytes, errors raised in the loop, checkpoints
only every so often (one flush each), and the rows handed over before a stop are kept."""

from __future__ import annotations

import errno
import json
import threading

import numpy as np
import pytest
import torch

from funcml.latents import encode as encode_mod
from funcml.latents import row_writer
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.latents.encode import encode_signal_set
from funcml.encoders.model import FieldModel
from funcml.latents.row_writer import BackgroundWriter
from funcml.encoders.siren import ModulatedSiren
from funcml.latents.latentset import LatentSetWriter


class ArraySink:
    """Rows into arrays; records each checkpoint (and can fail or wait in ``write``)."""

    def __init__(self, n=12, p=3, fail_at=None, gate=None):
        self.arrays = {"latents": np.full((n, p), np.nan, np.float32), "psnr": np.full(n, np.nan, np.float32)}
        self.checkpoints, self.fail_at, self.gate, self.writes = [], fail_at, gate, 0

    def write(self, start, columns):
        if self.gate is not None:
            self.gate.wait()
        self.writes += 1
        if self.writes == self.fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        for name, values in columns.items():
            self.arrays[name][start:start + len(values)] = values

    def checkpoint(self, rows_done):
        self.checkpoints.append(rows_done)


def _chunks(n=12, p=3, bs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(s, {"latents": torch.randn(min(bs, n - s), p, generator=g),
                 "psnr": torch.rand(min(bs, n - s), generator=g)}) for s in range(0, n, bs)]


def test_rows_written_on_the_thread_are_the_rows_handed_over():
    sink, chunks = ArraySink(), _chunks()
    with BackgroundWriter(sink, checkpoint_seconds=float("inf"), checkpoint_bytes=1 << 40) as w:
        for start, cols in chunks:
            w.submit(start, cols)
    assert np.array_equal(sink.arrays["latents"], torch.cat([c["latents"] for _, c in chunks]).numpy())
    assert np.array_equal(sink.arrays["psnr"], torch.cat([c["psnr"] for _, c in chunks]).numpy())
    assert sink.checkpoints == [12]   # one checkpoint, at the end


def test_checkpoints_come_every_so_many_bytes_and_always_at_the_end():
    sink = ArraySink()
    with BackgroundWriter(sink, checkpoint_seconds=float("inf"), checkpoint_bytes=2 * 4 * 16) as w:
        for start, cols in _chunks():    # 4 rows x (3 + 1) float32 = 64 bytes a chunk
            w.submit(start, cols)
    assert sink.checkpoints == [8, 12]


def test_an_error_on_the_thread_is_raised_in_the_loop_and_stops_the_writes():
    sink = ArraySink(fail_at=2)
    with pytest.raises(OSError, match="No space left"):
        with BackgroundWriter(sink, checkpoint_seconds=0.0) as w:
            for start, cols in _chunks():
                w.submit(start, cols)
    assert sink.checkpoints == [4]                       # the first chunk only; none after the failure
    assert np.isnan(sink.arrays["psnr"][4:]).all()


def test_rows_handed_over_before_the_loop_stops_are_written_and_checkpointed():
    sink, chunks = ArraySink(), _chunks()
    with pytest.raises(KeyboardInterrupt):
        with BackgroundWriter(sink, checkpoint_seconds=float("inf")) as w:
            w.submit(*chunks[0])
            w.submit(*chunks[1])
            raise KeyboardInterrupt
    assert sink.checkpoints == [8] and not np.isnan(sink.arrays["psnr"][:8]).any()


def test_the_queue_is_bounded():
    gate = threading.Event()
    sink, chunks = ArraySink(n=20, gate=gate), _chunks(n=20)
    w = BackgroundWriter(sink, max_pending=2)
    feeder = threading.Thread(target=lambda: [w.submit(s, c) for s, c in chunks])
    feeder.start()
    feeder.join(timeout=0.5)   # one chunk waits in write, two in the queue: the fourth cannot be handed over
    assert feeder.is_alive() and sink.writes == 0
    gate.set()
    feeder.join()
    w.close()
    assert sink.writes == 5 and sink.checkpoints[-1] == 20


def test_a_dataset_encode_flushes_at_checkpoints_not_after_every_chunk(tmp_path, monkeypatch):
    """10 chunks, one final checkpoint: the data file is flushed 3 times (set-up, checkpoint, finalize)
    and progress.json written twice (0, then all rows); before, both happened after every chunk."""
    from conftest import make_signal_set

    monkeypatch.setattr(row_writer, "CHECKPOINT_SECONDS", 1e9)
    flushes, records = [], []
    real_flush, real_json = LatentSetWriter.flush, encode_mod.atomic_write_json
    monkeypatch.setattr(LatentSetWriter, "flush", lambda self: (flushes.append(1), real_flush(self)))
    monkeypatch.setattr(encode_mod, "atomic_write_json", lambda path, obj: (records.append((path.name, obj)),
                                                                             real_json(path, obj)))
    field = FieldConfig(dim_in=1, channels=1, width=8, depth=2, latent_dim=4, omega_first=5.0, omega_last=10.0)
    model = FieldModel(ModulatedSiren(field), (1, 8), EncodeConfig(steps=2, batch_size=2))
    model.save(tmp_path / "m")
    got, _ = encode_signal_set(model, make_signal_set(20, (1, 8), seed=1), tmp_path / "lat", model_dir=tmp_path / "m",
                               progress=False)
    assert len(got) == 20 and len(flushes) == 3
    assert [obj for name, obj in records if name == "progress.json"] == [{"rows_done": 0}, {"rows_done": 20}]
    assert got.manifest["encoding"]["precision"] == "fp32"
