"""Encode a dataset to a latent set: batched, bounded memory, resumable, deterministic.

Signals are encoded in fixed chunks of ``batch_size``; chunk k's context subsets come from a
generator seeded by (seed, k), so a chunk gives the same latents whether or not the job was
interrupted before it. Rows are streamed into the preallocated data file of ``OUT.partial``;
``progress.json`` records how many rows are complete, and is written only after those rows are
flushed to disk. Rerunning the same command continues after the last complete chunk.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from funcml.allocator import tune_glibc_malloc
from funcml.data.base import SignalSet
from funcml.encoders import fused
from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents, reconstruction_psnr
from funcml.encoders.model import FieldModel
from funcml.errors import ArtifactError, DataError, OutputExistsError
from funcml.io import atomic_write_json, canonical_json, read_json, sha256_bytes
from funcml.io.lock import OutputLock
from funcml.io.schema import SHA256, Int, Obj, validate
from funcml.latents.latentset import DATA_FILE, LatentSet, LatentSetWriter
from funcml.seeding import generator

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
PROGRESS_SCHEMA = Obj({"rows_done": Int(min=0)})
JOB_SCHEMA = Obj({"hash": SHA256}, extra=True)

ObservedFn = Callable[[np.ndarray], np.ndarray]


def encode_signal_set(model: FieldModel, signals: SignalSet, out: str | Path, config: EncodeConfig | None = None, *,
                      model_dir: str | Path | None = None, embed_model: bool = True, indices: np.ndarray | None = None,
                      observed: ObservedFn | None = None, observed_tag: str | None = None, overwrite: bool = False,
                      progress: bool = True, max_chunks: int | None = None,
                      compile: bool = False) -> tuple[LatentSet | None, dict]:
    """Encode ``signals`` (all, or ``indices``) with ``model`` into the latent set ``out``.

    Args:
        model: a saved :class:`FieldModel` (its id goes into the manifest).
        config: test-time settings (default: the model's own).
        model_dir: the model's directory, embedded in (or referenced by) the latent set.
        observed: optional ``indices -> (b, N)`` 0/1 masks of observed coordinates; only those are
            fitted. ``observed_tag`` identifies the masks in the job hash and the manifest.
        max_chunks: stop after this many chunks this run (testing interruption); returns ``None``.
        compile: ``torch.compile`` the fitting kernels (same latents up to float rounding; costs a
            minute or more of compile time on a CPU, pays for large datasets).

    Returns:
        ``(latent_set, stats)`` with stats ``{"signals", "seconds", "signals_per_second",
        "psnr_mean", "resumed_rows"}``.
    """
    out = Path(out)
    tune_glibc_malloc()
    cfg = (config or model.encode_defaults).validate()
    if model.id is None:
        raise ArtifactError("save the model before encoding with it (the latent set records its id)")
    model.check_signals(signals.signal_shape, allow_other_resolution=True)
    idx = np.arange(len(signals)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        raise DataError(f"{signals.spec}: nothing to encode (no signals selected)")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    with OutputLock(out):
        return _encode_locked(model, signals, out, cfg, idx, model_dir=model_dir, embed_model=embed_model,
                              observed=observed, observed_tag=observed_tag, overwrite=overwrite, progress=progress,
                              max_chunks=max_chunks, compile_kernels=compile)


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


def _encode_locked(model: FieldModel, signals: SignalSet, out: Path, cfg: EncodeConfig, idx: np.ndarray, *,
                   model_dir, embed_model, observed, observed_tag, overwrite, progress, max_chunks,
                   compile_kernels: bool = False):
    job = {
        "model_id": model.id,
        "data_fingerprint": signals.fingerprint,
        "encode": asdict(cfg),
        "count": int(len(idx)),
        "indices_sha256": sha256_bytes(idx.astype("<i8").tobytes()),
        "observed": observed_tag,
    }
    if signals.aux_names:  # only then, so that the jobs of sets without them keep their hash
        job["aux_features"] = list(signals.aux_names)
    job_hash = sha256_bytes(canonical_json(job))
    partial = out.with_name(out.name + ".partial")
    labels = signals.labels[idx] if signals.labels is not None else None
    writer, resumed = _open_writer(out, job_hash, len(idx), cfg, model.config.latent_dim,
                                   0 if labels is None else labels.shape[1], model.id, overwrite, signals.aux_names)
    resume, rows_done = resumed is not None, resumed or 0
    if not resume:
        writer.write_rows(0, split=signals.splits[idx], index=idx)
        if labels is not None:
            writer.write_rows(0, labels=labels)
        if signals.aux is not None:
            writer.write_rows(0, aux=signals.aux[idx])
        writer.flush()
        atomic_write_json(partial / JOB_FILE, {"hash": job_hash, **job})
        atomic_write_json(partial / PROGRESS_FILE, {"rows_done": 0})

    device = model.device
    bs = cfg.batch_size
    n_chunks = (len(idx) + bs - 1) // bs
    start_chunk = rows_done // bs
    t0 = time.perf_counter()
    encoded = 0
    bar = tqdm(total=len(idx), initial=rows_done, desc="encode", unit="sig", disable=not progress, leave=False)
    execution = fused.execution(compile=compile_kernels, device=device)
    execution.__enter__()
    try:
        for chunk in range(start_chunk, n_chunks):
            if max_chunks is not None and chunk - start_chunk >= max_chunks:
                bar.close()
                return None, {"signals": encoded, "rows_done": chunk * bs}
            part = idx[chunk * bs:(chunk + 1) * bs]
            x = torch.from_numpy(signals.get(part)).to(device)
            weights = None
            if observed is not None:
                weights = torch.as_tensor(observed(part), dtype=x.dtype, device=device)
            phi = fit_latents(model.net, x, cfg, generator=generator(cfg.seed, "encode", chunk), weights=weights)
            psnr = reconstruction_psnr(model.net, phi, x)
            writer.write_rows(chunk * bs, latents=phi.cpu().numpy(), psnr=psnr.cpu().numpy())
            writer.flush()
            atomic_write_json(partial / PROGRESS_FILE, {"rows_done": min((chunk + 1) * bs, len(idx))})
            encoded += len(part)
            bar.update(len(part))
            bar.set_postfix(psnr=f"{float(psnr.mean()):.2f}")
    finally:
        execution.__exit__(None, None, None)
        bar.close()
    seconds = time.perf_counter() - t0
    psnr_all = np.asarray(writer.arrays["psnr"], dtype=np.float64)
    split_all = np.asarray(writer.arrays["split"])
    metrics = {"psnr_mean": float(np.nanmean(psnr_all)),
               "psnr_by_split": {name: float(np.nanmean(psnr_all[split_all == code]))
                                 for code, name in enumerate(("train", "val", "test")) if (split_all == code).any()}}
    encoding = {**asdict(cfg), "device": str(device), "observed": observed_tag}
    source = {"name": signals.name, "spec": signals.spec, "fingerprint": signals.fingerprint}
    if model_dir is None:
        model_dir = partial / "_model_tmp"
        model.save(model_dir)
    latent_set = writer.finalize(task=signals.task, label_names=signals.label_names, signal_shape=signals.signal_shape,
                                 source=source, encoding=encoding, model_id=model.id, model_dir=model_dir,
                                 embed_model=embed_model, metrics=metrics, overwrite=overwrite,
                                 extra={"source_info": signals.info} if signals.info else None)
    for leftover in (JOB_FILE, PROGRESS_FILE, "_model_tmp"):
        p = latent_set.path / leftover
        if p.is_dir():
            import shutil

            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    stats = {"signals": encoded, "seconds": seconds,
             "signals_per_second": encoded / seconds if seconds > 0 else float("nan"),
             "psnr_mean": metrics["psnr_mean"], "resumed_rows": rows_done}
    return latent_set, stats
