"""Encoded rows written by a background thread, made durable at checkpoints.

The encode loop hands each chunk's results to :class:`BackgroundWriter` and goes on with the next
chunk; one thread copies them into the output (a memory-mapped file) in order. A *checkpoint*
(the sink's ``checkpoint(rows_done)``: flush the file to disk, then record how many rows are
complete) happens every :data:`CHECKPOINT_SECONDS` or :data:`CHECKPOINT_BYTES` of rows and at the
end, not after every chunk: one fsync a checkpoint instead of one a chunk. A killed job resumes
from its last checkpoint; rows written after it are encoded again.

* Bounded: at most ``max_pending`` chunks wait in the queue (the loop blocks beyond that).
* Errors propagate: an exception on the thread (disk full, ...) is raised again, as itself, by the
  next :meth:`BackgroundWriter.submit` or at the end of the ``with`` block; rows after the failure
  are not written and no further checkpoint is taken.
* When the loop stops with an exception (Ctrl-C, a bad signal) the chunks already handed over are
  still written and checkpointed before the exception goes on.
* CUDA results are copied to pinned host memory without waiting (:func:`funcml.devices.to_host`);
  the thread, not the loop, waits for the copies.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Protocol

import numpy as np
import torch

from funcml.devices import to_host

CHECKPOINT_SECONDS = 30.0
CHECKPOINT_BYTES = 256 << 20
_DONE = object()


class RowSink(Protocol):
    """Where rows go: ``write`` rows at ``start`` (global row numbers), ``checkpoint`` makes all rows
    before ``rows_done`` durable and records that."""

    def write(self, start: int, columns: dict[str, np.ndarray]) -> None: ...

    def checkpoint(self, rows_done: int) -> None: ...


class BackgroundWriter:
    """``with BackgroundWriter(sink) as w: w.submit(start, {"latents": phi, "psnr": psnr})``.

    ``on_written(rows, columns)`` is called on the thread after each chunk is written (progress).
    """

    def __init__(self, sink: RowSink, *, max_pending: int = 2, checkpoint_seconds: float | None = None,
                 checkpoint_bytes: int | None = None,
                 on_written: Callable[[int, dict[str, np.ndarray]], None] | None = None) -> None:
        self.sink = sink
        self.checkpoint_seconds = CHECKPOINT_SECONDS if checkpoint_seconds is None else checkpoint_seconds
        self.checkpoint_bytes = CHECKPOINT_BYTES if checkpoint_bytes is None else checkpoint_bytes
        self.on_written = on_written
        self.error: BaseException | None = None
        self.rows_done: int | None = None       # end of the last written chunk
        self.checkpointed: int | None = None    # rows_done of the last checkpoint
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, max_pending))
        self._thread = threading.Thread(target=self._run, name="funcml-encode-writer", daemon=True)
        self._thread.start()

    # -- the loop's side ------------------------------------------------------------------------
    def submit(self, start: int, columns: dict[str, torch.Tensor]) -> None:
        """Queue rows ``start:start+len`` (tensors of equal length, any device); raises the thread's error."""
        self._raise_error()
        host, event = to_host(columns)
        self._queue.put((start, host, event))
        self._raise_error()

    def close(self) -> None:
        """Write what is queued, take the last checkpoint, stop the thread; raises the thread's error."""
        self._stop()
        self._raise_error()

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # keep the loop's exception; the rows handed over are still written and checkpointed
            self._stop()

    def _stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def _raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        last, pending_bytes = time.monotonic(), 0
        while True:
            item = self._queue.get()
            if item is _DONE:
                break
            if self.error is not None:
                continue  # drain: the loop must never block on a full queue
            try:
                pending_bytes += self._write(*item)
                if (time.monotonic() - last >= self.checkpoint_seconds
                        or pending_bytes >= self.checkpoint_bytes):
                    self._checkpoint()
                    last, pending_bytes = time.monotonic(), 0
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread
                self.error = exc
        if self.error is None and self.rows_done is not None and self.rows_done != self.checkpointed:
            try:
                self._checkpoint()
            except BaseException as exc:  # noqa: BLE001
                self.error = exc

    def _write(self, start: int, host: dict[str, torch.Tensor], event) -> int:
        if event is not None:
            event.synchronize()
        arrays = {name: t.numpy() for name, t in host.items()}
        rows = len(next(iter(arrays.values())))
        self.sink.write(start, arrays)
        self.rows_done = start + rows
        if self.on_written is not None:
            self.on_written(rows, arrays)
        return sum(a.nbytes for a in arrays.values())

    def _checkpoint(self) -> None:
        self.sink.checkpoint(self.rows_done)
        self.checkpointed = self.rows_done
