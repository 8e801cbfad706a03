"""Shards of a scale-out encode: each process's rows in its own file, merged by process 0.

Under ``torchrun`` the chunks still to encode are split into one contiguous range per process
(:func:`chunk_ranges`). Process ``r`` writes its rows to ``OUT.partial/shards/rank-r.safetensors``
(latents and PSNR of its range only) and records its progress in ``rank-r.json``, at checkpoints,
after flushing the file, like the one-process encode. Process 0 waits until every record says
its range is complete, copies the shards into the latent set's data file and publishes the set.

A rerun of the same command with the same number of processes resumes every shard from its
record; a shard whose record belongs to another job or range (another process count) starts over.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from funcml.io import atomic_write_json, create_tensor_file, open_tensors_mmap, read_json, release_pages
from funcml.latents.latentset import LatentSetWriter, all_finite

SHARD_DIR = "shards"
POLL_SECONDS = 0.1
_IDENTITY = ("job", "world_size", "rank", "start", "end")


def chunk_ranges(first: int, end: int, world: int) -> list[tuple[int, int]]:
    """Chunks ``first..end-1`` split into ``world`` contiguous ranges as even as possible."""
    m = end - first
    return [(first + r * m // world, first + (r + 1) * m // world) for r in range(world)]


def shard_paths(partial: Path, rank: int) -> tuple[Path, Path]:
    """``(data file, progress record)`` of process ``rank``'s shard."""
    d = partial / SHARD_DIR
    return d / f"rank-{rank}.safetensors", d / f"rank-{rank}.json"


class ShardRows:
    """A :class:`funcml.latents.row_writer.RowSink` for rows ``start:end`` of the latent set, held in
    a shard file. ``record``: the shard's identity (job hash, world size, rank, start, end)."""

    def __init__(self, partial: Path, record: dict, arrays: dict[str, np.ndarray], rows_done: int) -> None:
        self.data, self.meta = shard_paths(partial, record["rank"])
        self.record = record
        self.arrays = arrays
        self.rows_done = rows_done
        self.resumed_from = rows_done

    def write(self, start: int, columns: dict[str, np.ndarray]) -> None:
        at = start - self.record["start"]
        for name, values in columns.items():
            self.arrays[name][at:at + len(values)] = values
            release_pages(self.arrays[name])

    def checkpoint(self, rows_done: int) -> None:
        for arr in self.arrays.values():
            arr.flush()
            release_pages(arr)
        atomic_write_json(self.meta, {**self.record, "rows_done": rows_done, "resumed_from": self.resumed_from})
        self.rows_done = rows_done

    def close(self) -> None:
        """Unmap the file (its rows are durable once the last checkpoint is taken)."""
        self.arrays = {}


def open_shard(partial: Path, record: dict, latent_dim: int, batch_size: int) -> ShardRows:
    """The shard of ``record``, resumed where its progress record says, or created empty."""
    data, meta = shard_paths(partial, record["rank"])
    rows = _resume_point(data, meta, record, latent_dim, batch_size)
    if rows is not None:
        return ShardRows(partial, record, open_tensors_mmap(data, mode="r+"), rows)
    data.parent.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    m = record["end"] - record["start"]
    arrays = create_tensor_file(data, {"latents": ("float32", (m, latent_dim)), "psnr": ("float32", (m,))})
    arrays["psnr"][:] = np.nan
    shard = ShardRows(partial, record, arrays, record["start"])
    shard.checkpoint(record["start"])
    return shard


def _resume_point(data: Path, meta: Path, record: dict, latent_dim: int, batch_size: int) -> int | None:
    """Rows done by a shard of the same identity, or None (no usable shard: start it over)."""
    if not (data.is_file() and meta.is_file()):
        return None
    try:
        old = read_json(meta, what="shard progress")
        arrays = open_tensors_mmap(data)
    except Exception:  # noqa: BLE001 - a damaged shard is encoded again, not trusted
        return None
    if not isinstance(old, dict) or any(old.get(k) != record[k] for k in _IDENTITY):
        return None
    rows, m = old.get("rows_done"), record["end"] - record["start"]
    if (not isinstance(rows, int) or not record["start"] <= rows <= record["end"]
            or (rows % batch_size and rows != record["end"])):
        return None
    if (arrays.get("latents") is None or arrays["latents"].shape != (m, latent_dim)
            or arrays.get("psnr") is None or arrays["psnr"].shape != (m,)
            or not all_finite(arrays["psnr"][:rows - record["start"]])):
        return None
    return rows


def wait_for_shards(partial: Path, records: list[dict], poll: float | None = None) -> list[dict]:
    """Block until every shard's progress record says its range is complete; returns the records.

    If another process dies, ``torchrun`` stops this one too; a rerun resumes the shards.
    """
    done: dict[int, dict] = {}
    while len(done) < len(records):
        for record in records:
            if record["rank"] in done:
                continue
            meta = shard_paths(partial, record["rank"])[1]
            try:
                got = read_json(meta, what="shard progress") if meta.is_file() else None
            except Exception:  # noqa: BLE001 - being replaced right now: read it at the next poll
                got = None
            if isinstance(got, dict) and all(got.get(k) == record[k] for k in _IDENTITY) \
                    and got.get("rows_done") == record["end"]:
                done[record["rank"]] = got
        if len(done) < len(records):
            time.sleep(POLL_SECONDS if poll is None else poll)
    return [done[r["rank"]] for r in records]


def merge_shards(writer: LatentSetWriter, partial: Path, records: list[dict], rows_per_copy: int = 4096) -> None:
    """Copy each shard's rows into the latent set's data file and flush it."""
    for record in records:
        shard = open_tensors_mmap(shard_paths(partial, record["rank"])[0])
        m = record["end"] - record["start"]
        for a in range(0, m, rows_per_copy):
            b = min(m, a + rows_per_copy)
            writer.write_rows(record["start"] + a, latents=shard["latents"][a:b], psnr=shard["psnr"][a:b])
            writer.release()
            release_pages(shard["latents"])
    writer.flush()
