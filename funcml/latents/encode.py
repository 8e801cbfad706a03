"""Encode a dataset to a latent set: batched, bounded memory, resumable, deterministic, scale-out.

Signals are encoded in fixed chunks of ``batch_size``; chunk k's context subsets come from a
generator seeded by (seed, k), so a chunk gives the same latents whether or not the job was
interrupted before it, and whichever process encodes it. A background thread
(:mod:`funcml.latents.row_writer`) streams the rows into the preallocated data file of
``OUT.partial`` and takes checkpoints: it flushes the file, then records in ``progress.json`` how
many rows are complete (every 30 s or 256 MB of rows, and at the end; not after every chunk).
Rerunning the same command continues after the last checkpoint.

Under ``torchrun`` (an initialised process group of N processes) the chunks are split into N
contiguous ranges; each process writes its range to its own shard and process 0 merges the shards
into one latent set (:mod:`funcml.latents.encode_shards`). Every chunk is computed exactly as in
one process, so the latent set is the same, bit for bit, as a one-process encode on the same kind
of device with the same threads per process.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from funcml.backends import precision as precision_mod
from funcml.data.base import SignalSet
from funcml.devices import to_device
from funcml.encoders import distributed as ddp
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents_counted, reconstruction_psnr
from funcml.encoders.model import FieldModel
from funcml.errors import ArtifactError, DataError, FuncmlError, OutputExistsError
from funcml.io import atomic_write_json, canonical_json, read_json, sha256_bytes
from funcml.io.lock import OutputLock
from funcml.io.schema import SHA256, Int, Obj, validate
from funcml.latents import encode_shards
from funcml.latents.latentset import DATA_FILE, LatentSet, LatentSetWriter
from funcml.latents.row_writer import BackgroundWriter
from funcml.progress import progress_bar
from funcml.seeding import generator

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
PROGRESS_SCHEMA = Obj({"rows_done": Int(min=0)})
JOB_SCHEMA = Obj({"hash": SHA256}, extra=True)

ObservedFn = Callable[[np.ndarray], np.ndarray]


def encode_signal_set(model: FieldModel, signals: SignalSet, out: str | Path, config: EncodeConfig | None = None, *,
                      model_dir: str | Path | None = None, embed_model: bool = True, indices: np.ndarray | None = None,
                      observed: ObservedFn | None = None, observed_tag: str | None = None, overwrite: bool = False,
                      progress: bool = True, max_chunks: int | None = None) -> tuple[LatentSet | None, dict]:
    """Encode ``signals`` (all, or ``indices``) with ``model`` into the latent set ``out``.

    Args:
        model: a saved :class:`FieldModel` (its id goes into the manifest).
        config: test-time settings (default: the model's own), including how they run: ``backend``,
            ``precision`` (``auto``: tf32 on CUDA, fp32 elsewhere; recorded resolved, part of the job:
            resuming needs the same) and ``compile`` (``torch.compile`` the fitting kernels: same
            latents up to float rounding, a minute or more of compile time on a CPU).
        model_dir: the model's directory, embedded in (or referenced by) the latent set.
        observed: optional ``indices -> (b, N)`` 0/1 masks of observed coordinates; only those are
            fitted. ``observed_tag`` identifies the masks in the job hash and the manifest.
        max_chunks: stop after this many chunks this run (testing interruption); returns ``None``.

    Under an initialised ``torch.distributed`` process group every process calls this with the same
    arguments; each encodes its share and process 0 returns the latent set (the others ``None``).

    Returns:
        ``(latent_set, stats)`` with stats ``{"signals", "seconds", "signals_per_second",
        "psnr_mean", "resumed_rows"}`` and the cost per signal of this run's encodes
        (``steps_per_signal``, ``steps_min``, ``steps_max``, ``seconds_per_signal``).
    """
    out = Path(out)
    cfg = (config or model.encode_defaults).validate()
    cfg = replace(cfg, precision=precision_mod.resolve(cfg.precision, model.device))
    if model.id is None:
        raise ArtifactError("save the model before encoding with it (the latent set records its id)")
    model.check_signals(signals.signal_shape, allow_other_resolution=True)
    idx = np.arange(len(signals)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise DataError(f"{signals.spec}: nothing to encode (no signals selected)")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    job = EncodeJob(model, signals, out, cfg, idx, observed, observed_tag, model_dir, embed_model, overwrite, progress,
                    max_chunks)
    dist_info = ddp.current()
    if dist_info.enabled:
        return _encode_sharded(job, dist_info)
    with OutputLock(out):
        return _encode_one_process(job)


@dataclass
class EncodeJob:
    """One encode: what is encoded with what, and how the run behaves."""

    model: FieldModel
    signals: SignalSet
    out: Path
    cfg: EncodeConfig
    idx: np.ndarray
    observed: ObservedFn | None = None
    observed_tag: str | None = None
    model_dir: str | Path | None = None
    embed_model: bool = True
    overwrite: bool = False
    progress: bool = True
    max_chunks: int | None = None

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def n_chunks(self) -> int:
        return -(-len(self.idx) // self.cfg.batch_size)

    @cached_property
    def record(self) -> dict:
        """What determines the latents (its hash identifies an unfinished job); how they are computed
        (backend, compile: float rounding only) may change between a job and its resumption."""
        encode = {k: v for k, v in asdict(self.cfg).items() if k not in ("backend", "compile")}
        return {"model_id": self.model.id, "data_fingerprint": self.signals.fingerprint, "encode": encode,
                "count": int(len(self.idx)), "indices_sha256": sha256_bytes(self.idx.astype("<i8").tobytes()),
                "observed": self.observed_tag} | (
                    {"aux_features": list(self.signals.aux_names)} if self.signals.aux_names else {})

    @cached_property
    def hash(self) -> str:
        return sha256_bytes(canonical_json(self.record))


def _resume_point(partial: Path, job_hash: str, count: int, batch_size: int) -> int | None:
    """Rows already encoded in ``partial`` for this job, or None to start over.

    ``job.json`` and ``progress.json`` are written atomically, and ``progress.json`` only after its
    rows are flushed, so a killed job leaves one of: no job file (start over), the job file alone
    (start over), or both (resume). A job file of another job, or files that do not pass their schema,
    raise: the user decides with ``--overwrite``.
    """
    if not (partial / JOB_FILE).is_file() or not (partial / DATA_FILE).is_file():
        return None
    old = validate(read_json(partial / JOB_FILE, what="encode job file"), JOB_SCHEMA, str(partial / JOB_FILE))
    if old["hash"] != job_hash:
        raise OutputExistsError(f"{partial} holds an unfinished encode with other settings; "
                                f"pass --overwrite to discard it")
    if not (partial / PROGRESS_FILE).is_file():
        return None
    rows = validate(read_json(partial / PROGRESS_FILE, what="encode progress"), PROGRESS_SCHEMA,
                    str(partial / PROGRESS_FILE))["rows_done"]
    if rows > count or (rows % batch_size and rows != count):
        raise ArtifactError(f"{partial / PROGRESS_FILE} claims {rows} of {count} rows in chunks of {batch_size}")
    return rows


def _open_writer(out: Path, job_hash: str, count: int, cfg: EncodeConfig, latent_dim: int, label_columns: int,
                 model_id: str, overwrite: bool, aux_names: tuple[str, ...] = ()) -> tuple[LatentSetWriter, int | None]:
    """The writer of ``OUT.partial`` and the rows to resume from (None: a fresh start)."""
    partial = out.with_name(out.name + ".partial")

    def make(resume: bool) -> LatentSetWriter:
        return LatentSetWriter(out, count=count, latent_dim=latent_dim, label_columns=label_columns, resume=resume,
                               aux_names=aux_names, metadata={"model_id": model_id})

    try:
        rows = _resume_point(partial, job_hash, count, cfg.batch_size) if partial.exists() else None
        if rows is None:
            return make(False), None
        writer = make(True)
        if not np.isfinite(np.asarray(writer.arrays["psnr"][:rows])).all():
            raise ArtifactError(f"{partial}: {PROGRESS_FILE} counts rows that were never written")
        return writer, rows
    except (ArtifactError, OutputExistsError) as exc:
        if overwrite:
            return make(False), None
        hint = "" if "--overwrite" in str(exc) else "; pass --overwrite to discard the unfinished encode"
        raise type(exc)(f"{exc}{hint}") from None


class FileRows:
    """The one-process :class:`funcml.latents.row_writer.RowSink`: rows go straight into the latent
    set's data file; a checkpoint flushes it and then records the rows done in ``progress.json``."""

    def __init__(self, writer: LatentSetWriter, progress: Path) -> None:
        self.writer, self.progress = writer, progress

    def write(self, start: int, columns: dict[str, np.ndarray]) -> None:
        self.writer.write_rows(start, **columns)
        self.writer.release()

    def checkpoint(self, rows_done: int) -> None:
        self.writer.flush()
        atomic_write_json(self.progress, {"rows_done": rows_done})


def _prepare(job: EncodeJob) -> tuple[LatentSetWriter, int]:
    """Open (or resume) ``OUT.partial``: ``(writer, rows already done)``. A fresh start writes the rows'
    split, index, labels and auxiliary features, then the job and progress records."""
    labels = job.signals.labels[job.idx] if job.signals.labels is not None else None
    writer, resumed = _open_writer(job.out, job.hash, len(job.idx), job.cfg, job.model.config.latent_dim,
                                   0 if labels is None else labels.shape[1], job.model.id, job.overwrite,
                                   job.signals.aux_names)
    if resumed is not None:
        return writer, resumed
    writer.write_rows(0, split=job.signals.splits[job.idx], index=job.idx)
    if labels is not None:
        writer.write_rows(0, labels=labels)
    if job.signals.aux is not None:
        writer.write_rows(0, aux=job.signals.aux[job.idx])
    writer.flush()
    atomic_write_json(job.partial / JOB_FILE, {"hash": job.hash, **job.record})
    atomic_write_json(job.partial / PROGRESS_FILE, {"rows_done": 0})
    return writer, 0


def _encode_chunks(job: EncodeJob, sink, chunks: range, bar, steps_taken: list | None = None) -> tuple[int, bool]:
    """Encode ``chunks`` into ``sink`` (through a background writer): ``(signals encoded, finished)``;
    ``job.max_chunks`` may stop it early (testing interruption). ``steps_taken`` collects the test-time
    steps each signal took."""
    device, bs, net = job.model.device, job.cfg.batch_size, job.model.net

    def written(rows: int, columns: dict[str, np.ndarray]) -> None:
        bar.update(rows)
        bar.set_postfix(psnr=f"{float(np.mean(columns['psnr'])):.2f}")

    encoded = 0
    with precision_mod.scoped(job.cfg.precision, device), BackgroundWriter(sink, on_written=written) as rows:
        for n, chunk in enumerate(chunks):
            if job.max_chunks is not None and n >= job.max_chunks:
                return encoded, False
            part = job.idx[chunk * bs:(chunk + 1) * bs]
            x = to_device(job.signals.get(part), device)
            weights = None
            if job.observed is not None:
                weights = to_device(torch.as_tensor(job.observed(part), dtype=x.dtype), device)
            phi, taken = fit_latents_counted(net, x, job.cfg, generator=generator(job.cfg.seed, "encode", chunk),
                                             weights=weights)
            if steps_taken is not None:   # a fixed H is known without reading the device (no sync)
                steps_taken.append(taken.cpu().numpy() if job.cfg.auto_stop else np.full(len(part), job.cfg.steps))
            rows.submit(chunk * bs, {"latents": phi, "psnr": reconstruction_psnr(net, phi, x)})
            encoded += len(part)
    return encoded, True


def _bar(job: EncodeJob, total: int, initial: int, show: bool = True):
    return progress_bar(total=total, initial=initial, desc="encode", unit="sig", disable=not (job.progress and show),
                        leave=False)


def _encode_one_process(job: EncodeJob) -> tuple[LatentSet | None, dict]:
    writer, rows_done = _prepare(job)
    bs = job.cfg.batch_size
    t0 = time.perf_counter()
    steps_taken: list[np.ndarray] = []   # test-time steps per signal (this run's chunks)
    with _bar(job, len(job.idx), rows_done) as bar:
        encoded, finished = _encode_chunks(job, FileRows(writer, job.partial / PROGRESS_FILE),
                                           range(-(-rows_done // bs), job.n_chunks), bar, steps_taken)
    if not finished:
        return None, {"signals": encoded, "rows_done": rows_done + encoded}
    return _publish(job, writer, encoded, time.perf_counter() - t0, rows_done, steps_taken)


def _encode_sharded(job: EncodeJob, dist_info: ddp.DistInfo) -> tuple[LatentSet | None, dict]:
    """The torchrun encode: process 0 prepares ``OUT.partial`` (and holds the output lock), every
    process encodes its range of the remaining chunks into its shard, process 0 merges and publishes."""
    lock = writer = error = rows_done = None
    if dist_info.is_main:
        try:
            lock = OutputLock(job.out)
            writer, rows_done = _prepare(job)
        except (FuncmlError, OSError) as exc:
            error = exc
    try:
        rows_done = ddp.from_main(rows_done, job.model.device)
        if error is not None:
            raise error
        if rows_done is None:
            raise FuncmlError(f"process 0 could not start the encode of {job.out} (see its message)")
        bs, n = job.cfg.batch_size, len(job.idx)
        records = [{"job": job.hash, "world_size": dist_info.world_size, "rank": r, "start": lo * bs,
                    "end": min(hi * bs, n)} for r, (lo, hi) in
                   enumerate(encode_shards.chunk_ranges(rows_done // bs, job.n_chunks, dist_info.world_size))]
        t0 = time.perf_counter()
        encoded, finished = _encode_shard(job, records[dist_info.rank], dist_info.is_main)
        if not finished or not dist_info.is_main:
            return None, {"signals": encoded, "rank": dist_info.rank}
        records = [r for r in records if r["end"] > r["start"]]
        done = encode_shards.wait_for_shards(job.partial, records)
        encode_shards.merge_shards(writer, job.partial, records)
        atomic_write_json(job.partial / PROGRESS_FILE, {"rows_done": n})
        shutil.rmtree(job.partial / encode_shards.SHARD_DIR, ignore_errors=True)
        resumed = rows_done + sum(d["resumed_from"] - d["start"] for d in done)
        return _publish(job, writer, n - resumed, time.perf_counter() - t0, resumed)
    finally:
        if lock is not None:
            lock.release()


def _encode_shard(job: EncodeJob, record: dict, is_main: bool) -> tuple[int, bool]:
    """Encode this process's rows ``record["start"]:record["end"]`` into its shard."""
    if record["end"] <= record["start"]:
        return 0, True
    bs = job.cfg.batch_size
    shard = encode_shards.open_shard(job.partial, record, job.model.config.latent_dim, bs)
    # rows_done is a multiple of the batch size or the end: a complete shard is never encoded again
    chunks = range(-(-shard.rows_done // bs), -(-record["end"] // bs))
    try:
        with _bar(job, record["end"] - record["start"], shard.rows_done - record["start"], is_main) as bar:
            return _encode_chunks(job, shard, chunks, bar)
    finally:
        shard.close()


def _publish(job: EncodeJob, writer: LatentSetWriter, encoded: int, seconds: float, resumed_rows: int,
             steps_taken: list[np.ndarray] = ()) -> tuple[LatentSet, dict]:
    """Finalize ``OUT.partial`` into the latent set ``OUT``; ``(latent_set, stats)``."""
    psnr_all = np.asarray(writer.arrays["psnr"], dtype=np.float64)
    split_all = np.asarray(writer.arrays["split"])
    metrics = {"psnr_mean": float(np.nanmean(psnr_all)),
               "psnr_by_split": {name: float(np.nanmean(psnr_all[split_all == code]))
                                 for code, name in enumerate(("train", "val", "test")) if (split_all == code).any()}}
    encoding = {**asdict(job.cfg), "device": str(job.model.device), "observed": job.observed_tag}
    signals = job.signals
    source = {"name": signals.name, "spec": signals.spec, "fingerprint": signals.fingerprint}
    model_dir = job.model_dir
    if model_dir is None:
        model_dir = job.partial / "_model_tmp"
        job.model.save(model_dir)
    latent_set = writer.finalize(task=signals.task, label_names=signals.label_names,
                                 signal_shape=signals.signal_shape, source=source, encoding=encoding,
                                 model_id=job.model.id, model_dir=model_dir, embed_model=job.embed_model,
                                 metrics=metrics, overwrite=job.overwrite,
                                 extra={"source_info": signals.info} if signals.info else None)
    for leftover in (JOB_FILE, PROGRESS_FILE, "_model_tmp", encode_shards.SHARD_DIR):
        p = latent_set.path / leftover
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    stats = {"signals": encoded, "seconds": seconds,
             "signals_per_second": encoded / seconds if seconds > 0 else float("nan"),
             "psnr_mean": metrics["psnr_mean"], "resumed_rows": resumed_rows, **_step_cost(list(steps_taken), seconds)}
    return latent_set, stats


def _step_cost(steps_taken: list[np.ndarray], seconds: float) -> dict:
    """What the test-time fit cost per signal: steps (mean, min, max) and seconds."""
    if not steps_taken:
        return {}
    steps = np.concatenate(steps_taken).astype(np.float64)
    return {"steps_per_signal": float(steps.mean()), "steps_min": int(steps.min()), "steps_max": int(steps.max()),
            "seconds_per_signal": seconds / len(steps)}
