"""The latent set: encoded datasets on disk (format ``funcml.latentset``, version 2; reads 1 and 2).

A latent set is a directory::

    manifest.json        what the set is (validated on open; see docs/latent-set-format.md)
    latents.safetensors  latents (N, P) float32, split (N,) uint8, psnr (N,) float32,
                         index (N,) int64 [, labels (N, L) int64] [, aux (N, F) float32]
    model/               optional embedded model directory (config.json + model.safetensors)

Arrays are memory-mapped on open, so sets larger than RAM work. The manifest records the sha256
of the data file (verified on open) and of the latent values alone (``latent_checksum``).
Writers build the directory under ``PATH.partial`` and rename it when complete, so a half-written
set is never mistaken for a complete one. Version 2 adds the auxiliary features ``aux`` (named in the
manifest's ``aux_features``: a beat's RR intervals ...); a version-1 set opens as one without them.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import shutil
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from funcml import __version__
from funcml.data.base import SPLIT_CODES, SPLITS, TASKS, check_aux
from funcml.errors import ArtifactError, ConfigError, DataError, OutputExistsError
from funcml.io import (atomic_write_json, create_tensor_file, open_tensors_mmap, read_json, release_pages,
                       sha256_file)
from funcml.io.schema import SHA256, Anything, Bool, Int, List, Map, Null, Obj, Str, validate

FORMAT = "funcml.latentset"
VERSION = 2
READS = (1, 2)
DATA_FILE = "latents.safetensors"
MANIFEST = "manifest.json"
MODEL_DIR = "model"

# manifest key -> (type(s), required)
_SCHEMA: dict[str, tuple[type | tuple[type, ...], bool]] = {
    "format": (str, True),
    "version": (int, True),
    "count": (int, True),
    "latent_dim": (int, True),
    "dtype": (str, True),
    "task": (str, True),
    "label_names": (dict, True),
    "label_columns": (int, True),
    "splits": (dict, True),
    "signal_shape": (list, True),
    "source": (dict, True),
    "model": (dict, True),
    "encoding": (dict, True),
    "files": (dict, True),
    "latent_checksum": (str, True),
    "metrics": (dict, False),
    "created": (str, False),
    "funcml_version": (str, False),
    "extra": (dict, False),
    "aux_features": (list, False),
}


# The schema, field by field (docs/latent-set-format.md); ``aux_features`` is version 2's.
MANIFEST_SCHEMA = Obj({
    "format": Str(), "version": Int(),
    "count": Int(min=0), "latent_dim": Int(min=1), "dtype": Str(choices=("float32",)),
    "task": Str(choices=TASKS), "label_names": Map(Str()), "label_columns": Int(min=0),
    "splits": Obj({s: Int(min=0) for s in SPLITS}),
    "signal_shape": List(Int(min=1), max_len=4),
    "source": Obj({"name": Str(), "spec": Str(), "fingerprint": Str() | Null()},
                  optional={"name", "spec", "fingerprint"}, extra=True),
    "model": Obj({"id": SHA256 | Null(), "embedded": Bool(), "path": Str()}, optional={"path"}),
    "encoding": Map(Anything()),
    "files": Obj({DATA_FILE: Obj({"sha256": SHA256, "bytes": Int(min=0)})}),
    "latent_checksum": SHA256,
    "metrics": Map(Anything()), "created": Str(), "funcml_version": Str(), "extra": Map(Anything()),
    "aux_features": List(Str()),
}, optional={"metrics", "created", "funcml_version", "extra", "aux_features"})


CHUNK_BYTES = 16 << 20  # whole-set passes (checksums, finiteness) read this much at a time


def _chunk_rows(array: np.ndarray) -> int:
    row = int(np.prod(array.shape[1:], dtype=np.int64)) * array.dtype.itemsize
    return max(1, CHUNK_BYTES // max(row, 1))


def all_finite(array: np.ndarray) -> bool:
    """Whether every value of a (possibly memory-mapped) array is finite, read ~16 MiB at a time."""
    step = _chunk_rows(array)
    for i in range(0, len(array), step):
        ok = bool(np.isfinite(np.asarray(array[i:i + step])).all())
        release_pages(array)
        if not ok:
            return False
    return True


def _entry(root: Path, name: str, where: str) -> Path:
    """``root/name``, refusing a symbolic link (a received set must not pull in files from elsewhere)."""
    path = root / name
    if path.is_symlink():
        raise ArtifactError(f"{where}: {name} is a symbolic link; a latent set must hold its own files")
    return path


def validate_manifest(m: Any, where: str) -> dict:
    """Check a manifest against its version's schema; raise :class:`ArtifactError` naming the problem."""
    if not isinstance(m, dict):
        raise ArtifactError(f"{where}: manifest is not a JSON object")
    if m.get("format") != FORMAT:
        raise ArtifactError(f"{where} is not a funcml latent set (manifest format {m.get('format')!r})")
    if m.get("version") not in READS or isinstance(m.get("version"), bool):
        raise ArtifactError(f"{where}: latent-set version {m.get('version')} is not supported "
                            f"(reads {', '.join(map(str, READS))})")
    if ("aux_features" in m) != (m["version"] >= 2):
        raise ArtifactError(f"{where}: a version-{m['version']} manifest "
                            f"{'lacks' if m['version'] >= 2 else 'cannot have'} 'aux_features'")
    for key, (types, required) in _SCHEMA.items():
        if key not in m:
            if required:
                raise ArtifactError(f"{where}: manifest lacks {key!r}")
            continue
        if not isinstance(m[key], types) or (types is int and isinstance(m[key], bool)):
            raise ArtifactError(f"{where}: manifest field {key!r} has the wrong type")
    unknown = set(m) - set(_SCHEMA)
    if unknown:
        raise ArtifactError(f"{where}: manifest has unknown field(s) {sorted(unknown)}")
    validate(m, MANIFEST_SCHEMA, f"{where}/{MANIFEST}")
    if sum(m["splits"].values()) != m["count"]:
        raise ArtifactError(f"{where}: split counts in manifest do not add up to {m['count']}")
    if m["model"]["embedded"] and m["model"]["id"] is None:
        raise ArtifactError(f"{where}: the manifest embeds a model but gives no model id")
    if len(m["signal_shape"]) == 1:
        raise ArtifactError(f"{where}: signal_shape {m['signal_shape']} must be [C, *spatial] (or empty)")
    aux = m.get("aux_features", [])
    try:
        check_aux(None if not aux else np.zeros((0, len(aux))), aux, 0, where)
    except DataError as exc:
        raise ArtifactError(str(exc)) from None
    return m


def latent_checksum(latents: np.ndarray, chunk_rows: int | None = None) -> str:
    """sha256 of the latent values (float32 little-endian, row-major), read ~16 MiB at a time (no copy
    of a memory-mapped float32 set)."""
    h = hashlib.sha256()
    step = chunk_rows or _chunk_rows(np.asarray(latents[:1], dtype="<f4").reshape(1, -1))
    for start in range(0, len(latents), step):
        h.update(memoryview(np.ascontiguousarray(latents[start:start + step], dtype="<f4")).cast("B"))
        release_pages(latents)
    return h.hexdigest()


class LatentSet:
    """An opened latent set. Arrays are read-only memory maps.

    Attributes:
        path: the directory; manifest: the validated manifest dict.
        latents: ``(N, P)`` float32; splits: ``(N,)`` uint8; psnr: ``(N,)`` float32 (NaN when unknown);
        index: ``(N,)`` int64 position of each signal in its source data; labels: ``(N, L)`` int64 or None;
        aux: ``(N, F)`` float32 auxiliary features named :attr:`aux_names` (NaN where undefined), or None.
    """

    def __init__(self, path: Path, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        self.path = path
        self.manifest = manifest
        self.latents = arrays["latents"]
        self.splits = arrays["split"]
        self.psnr = arrays["psnr"]
        self.index = arrays["index"]
        self.labels = arrays.get("labels")
        self.aux = arrays.get("aux")

    # -- opening --------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, verify: bool = True) -> "LatentSet":
        """Open and validate a latent set. ``verify`` re-hashes the data file against the manifest."""
        path = Path(path)
        if not path.exists():
            partial = path.with_name(path.name + ".partial")
            hint = f" (an unfinished encode is in {partial}; rerun the encode command to finish it)" if partial.exists() else ""
            raise ArtifactError(f"latent set not found: {path}{hint}")
        if not path.is_dir():
            raise ArtifactError(f"{path} is not a latent set directory")
        manifest = validate_manifest(read_json(_entry(path, MANIFEST, str(path)), what="latent-set manifest"),
                                     str(path))
        data = _entry(path, DATA_FILE, str(path))
        if not data.is_file():
            raise ArtifactError(f"{path} lacks {DATA_FILE}")
        expected = manifest["files"][DATA_FILE]
        if data.stat().st_size != expected.get("bytes"):
            raise ArtifactError(f"{data} has {data.stat().st_size} bytes, the manifest says {expected.get('bytes')} (truncated or replaced)")
        if verify and sha256_file(data) != expected.get("sha256"):
            raise ArtifactError(f"{data} does not match its checksum in the manifest (corrupt or replaced)")
        arrays = open_tensors_mmap(data)
        n, p = manifest["count"], manifest["latent_dim"]
        shapes = {"latents": (n, p), "split": (n,), "psnr": (n,), "index": (n,)}
        for name, shape in shapes.items():
            if name not in arrays or arrays[name].shape != shape:
                raise ArtifactError(f"{data}: tensor {name!r} is missing or not of shape {shape}")
        if "labels" in arrays and arrays["labels"].shape != (n, manifest["label_columns"]):
            raise ArtifactError(f"{data}: labels do not have {manifest['label_columns']} column(s)")
        if manifest["label_columns"] and "labels" not in arrays:
            raise ArtifactError(f"{data}: the manifest announces labels but the file has none")
        n_aux = len(manifest.get("aux_features", []))
        if ("aux" in arrays or n_aux) and arrays.get("aux", np.zeros(0)).shape != (n, n_aux):
            raise ArtifactError(f"{data}: the auxiliary features do not match the {n_aux} named in the manifest")
        if verify and not all_finite(arrays["latents"]):
            raise ArtifactError(f"{data} holds NaN or infinite latents")
        return cls(path, manifest, arrays)

    # -- content --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def latent_dim(self) -> int:
        return int(self.manifest["latent_dim"])

    @property
    def task(self) -> str:
        return self.manifest["task"]

    @property
    def label_names(self) -> dict[str, str]:
        return dict(self.manifest["label_names"])

    @property
    def signal_shape(self) -> tuple[int, ...]:
        return tuple(self.manifest["signal_shape"])

    @property
    def model_id(self) -> str | None:
        return self.manifest["model"].get("id")

    @property
    def has_labels(self) -> bool:
        return self.labels is not None

    @property
    def aux_names(self) -> list[str]:
        """Names ``GROUP.NAME`` of the auxiliary feature columns (empty for version-1 sets)."""
        return list(self.manifest.get("aux_features", []))

    def features(self, rows: np.ndarray | slice | None = None, features: str | tuple[str, ...] = "latent"
                 ) -> np.ndarray:
        """Feature matrix ``(n, F)`` float32 of ``rows`` (all when None): the groups of ``features``
        (``latent``, ``rr``, ``latent,rr`` ...) side by side; see :mod:`funcml.latents.features`."""
        from funcml.latents.features import feature_matrix

        return feature_matrix(self, np.arange(len(self)) if rows is None else rows, features)

    def split_indices(self, split: str) -> np.ndarray:
        if split not in SPLIT_CODES:
            raise ConfigError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(np.asarray(self.splits) == SPLIT_CODES[split])

    def rows(self, indices: np.ndarray | slice) -> np.ndarray:
        """Latents of the given rows as a writable float32 copy ``(n, P)`` (safe for ``torch.from_numpy``)."""
        return np.array(self.latents[indices], dtype=np.float32)

    def split(self, split: str, features: str | tuple[str, ...] = "latent") -> tuple[np.ndarray, np.ndarray | None]:
        """``(latents (n, P), labels (n, L) or None)`` of one split, read into memory; ``features``
        (``rr``, ``latent,rr`` ...) picks other columns instead (see :meth:`features`)."""
        idx = self.split_indices(split)
        x = np.asarray(self.latents[idx], dtype=np.float32) if features == "latent" else self.features(idx, features)
        y = None if self.labels is None else np.asarray(self.labels[idx])
        return x, y

    def iter_chunks(self, rows: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, latents[start:start+rows])`` with bounded memory."""
        for start in range(0, len(self), rows):
            yield start, np.asarray(self.latents[start:start + rows])

    def checksum(self) -> str:
        """Recompute the sha256 of the latent values (compare with ``manifest['latent_checksum']``)."""
        return latent_checksum(self.latents)

    def to_dataframe(self, split: str | None = None):
        """A pandas DataFrame: columns ``phi_0..phi_{P-1}``, the auxiliary features (``rr.pre_norm`` ...),
        ``split``, ``psnr``, ``index`` and labels."""
        import pandas as pd

        idx = np.arange(len(self)) if split is None else self.split_indices(split)
        df = pd.DataFrame(np.asarray(self.latents[idx]), columns=[f"phi_{i}" for i in range(self.latent_dim)])
        for j, name in enumerate(self.aux_names):
            df[name] = np.asarray(self.aux[idx, j])
        df["split"] = pd.Categorical([SPLITS[c] for c in np.asarray(self.splits[idx])], categories=list(SPLITS))
        df["psnr"] = np.asarray(self.psnr[idx])
        df["index"] = np.asarray(self.index[idx])
        if self.labels is not None:
            labels = np.asarray(self.labels[idx])
            if labels.shape[1] == 1:
                df["label"] = labels[:, 0]
            else:
                for j in range(labels.shape[1]):
                    df[f"label_{j}"] = labels[:, j]
        return df

    def torch_dataset(self, split: str | None = None):
        """A ``torch.utils.data.Dataset`` of ``(latent (P,), label (L,))`` pairs (labels -1 when absent)."""
        from funcml.latents.torch_dataset import LatentDataset

        return LatentDataset(self, None if split is None else self.split_indices(split))

    # -- the decoder ----------------------------------------------------------------------------
    @property
    def model_dir(self) -> Path | None:
        entry = self.manifest["model"]
        if entry.get("embedded"):
            directory = _entry(self.path, MODEL_DIR, str(self.path))
            for name in ("config.json", "model.safetensors"):
                _entry(directory, name, str(self.path))
            return directory
        hint = entry.get("path")
        return Path(hint) if hint else None

    def load_model(self, model_dir: str | Path | None = None, device: str = "cpu"):
        """Load the model that decodes this set (embedded, or ``model_dir``); checks the id matches."""
        from funcml.encoders.model import FieldModel

        directory = Path(model_dir) if model_dir is not None else self.model_dir
        if directory is None:
            raise ArtifactError(f"{self.path} has no embedded model; pass --model DIR")
        model = FieldModel.load(directory, device=device)
        self.check_model(model)
        return model

    def check_model(self, model) -> None:
        """Raise :class:`ArtifactError` unless ``model`` is the one these latents were encoded with."""
        if model.config.latent_dim != self.latent_dim:
            raise ArtifactError(f"latent set {self.path} has latent dimension {self.latent_dim} but the model "
                                f"expects {model.config.latent_dim}: they do not belong together")
        if self.model_id is not None and model.id is not None and model.id != self.model_id:
            raise ArtifactError(f"latent set {self.path} was encoded with model {self.model_id[:12]}, "
                                f"not with {model.id[:12]}: decode it with its own model")
        shape = self.signal_shape
        if shape and (len(shape) != model.config.dim_in + 1 or shape[0] != model.config.channels):
            raise ArtifactError(f"latent set {self.path} holds {shape[0]}-channel {len(shape) - 1}-D signals but "
                                f"the model decodes {model.config.channels}-channel {model.config.dim_in}-D ones")

    def describe(self) -> dict:
        m = self.manifest
        return {k: m[k] for k in ("count", "latent_dim", "task", "splits", "signal_shape", "label_names",
                                  "latent_checksum") if k in m} | {
            "path": str(self.path), "model_id": self.model_id, "source": m["source"],
            "encoding": m["encoding"], "metrics": m.get("metrics", {}), "version": m["version"],
            "aux_features": self.aux_names}


class LatentSetWriter:
    """Build a latent set under ``PATH.partial``: write rows in any order, then :meth:`finalize`.

    The data file is preallocated (sparse) and memory-mapped writable, so rows are streamed to
    disk with bounded memory; ``finalize`` hashes it, writes the manifest, optionally embeds the
    model, and renames ``PATH.partial`` to ``PATH``.
    """

    def __init__(self, path: str | Path, *, count: int, latent_dim: int, label_columns: int = 0,
                 aux_names: tuple[str, ...] | list[str] = (), metadata: dict | None = None, resume: bool = False) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.count, self.latent_dim, self.label_columns = int(count), int(latent_dim), int(label_columns)
        self.aux_names = [str(a) for a in aux_names]
        data = self.partial / DATA_FILE
        if resume and data.is_file():
            self.arrays = open_tensors_mmap(data, mode="r+")
            expected = {"latents": (self.count, self.latent_dim), "split": (self.count,)}
            if self.aux_names:
                expected["aux"] = (self.count, len(self.aux_names))
            if any(self.arrays.get(k) is None or self.arrays[k].shape != s for k, s in expected.items()):
                raise ArtifactError(f"{data} does not match this job; remove {self.partial} to start over")
        else:
            if self.partial.exists():
                shutil.rmtree(self.partial)
            self.partial.mkdir(parents=True)
            specs: dict[str, tuple[str, tuple[int, ...]]] = {
                "latents": ("float32", (self.count, self.latent_dim)),
                "split": ("uint8", (self.count,)),
                "psnr": ("float32", (self.count,)),
                "index": ("int64", (self.count,)),
            }
            if self.label_columns:
                specs["labels"] = ("int64", (self.count, self.label_columns))
            if self.aux_names:
                specs["aux"] = ("float32", (self.count, len(self.aux_names)))
            self.arrays = create_tensor_file(data, specs, metadata={"format": FORMAT, **(metadata or {})})
            self.arrays["psnr"][:] = np.nan

    def write_rows(self, start: int, **columns: np.ndarray) -> None:
        """Write ``columns`` (``latents``, ``psnr``, ``labels``, ``split``, ``index``, ``aux``) at rows ``start:``."""
        for name, values in columns.items():
            arr = self.arrays[name]
            arr[start:start + len(values)] = values

    def release(self) -> None:
        """Drop written rows from this process's memory without waiting for the disk: the page cache
        keeps them until the kernel writes them back, :meth:`flush` makes them durable."""
        for arr in self.arrays.values():
            release_pages(arr)

    def flush(self) -> None:
        """Write the rows to disk, then drop them from this process's memory (resident memory stays flat)."""
        for arr in self.arrays.values():
            if isinstance(arr, np.memmap):
                arr.flush()
                release_pages(arr)

    def finalize(self, *, task: str, label_names: dict[str, str], signal_shape: tuple[int, ...],
                 source: dict, encoding: dict, model_id: str | None, model_dir: str | Path | None = None,
                 embed_model: bool = True, metrics: dict | None = None, extra: dict | None = None,
                 overwrite: bool = False) -> "LatentSet":
        """Hash, write the manifest, embed the model and publish the set at ``path``."""
        from funcml.encoders.model import copy_model_dir

        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"output path exists: {self.path} (pass --overwrite to replace it)")
        self.flush()
        latents = self.arrays["latents"]
        if not all_finite(latents):
            raise ArtifactError("refusing to write a latent set with non-finite latents")
        splits = np.asarray(self.arrays["split"])
        data = self.partial / DATA_FILE
        model_entry: dict[str, Any] = {"id": model_id, "embedded": False}
        if model_dir is not None:
            if embed_model:
                copy_model_dir(model_dir, self.partial / MODEL_DIR)
                model_entry["embedded"] = True
            else:
                model_entry["path"] = str(Path(model_dir).resolve())
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "count": self.count,
            "latent_dim": self.latent_dim,
            "dtype": "float32",
            "task": task,
            "label_names": {str(k): str(v) for k, v in label_names.items()},
            "label_columns": self.label_columns,
            "splits": {s: int((splits == c).sum()) for s, c in SPLIT_CODES.items()},
            "signal_shape": [int(s) for s in signal_shape],
            "source": source,
            "model": model_entry,
            "encoding": encoding,
            "files": {DATA_FILE: {"sha256": sha256_file(data), "bytes": data.stat().st_size}},
            "latent_checksum": latent_checksum(latents),
            "aux_features": self.aux_names,
            "metrics": metrics or {},
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "funcml_version": __version__,
        }
        if extra:
            manifest["extra"] = extra
        validate_manifest(manifest, str(self.path))
        self.arrays = {}
        for stale in self.partial.glob(".*.tmp"):  # temporary files of writes a killed run did not finish
            stale.unlink(missing_ok=True)
        atomic_write_json(self.partial / MANIFEST, manifest)
        old = self.path.with_name(self.path.name + ".old")
        if self.path.exists():
            shutil.rmtree(old, ignore_errors=True)
            self.path.rename(old)
        self.partial.rename(self.path)
        shutil.rmtree(old, ignore_errors=True)  # also the leftover of a run killed between the two renames
        return LatentSet.open(self.path, verify=False)


def write_latent_set(path: str | Path, latents: np.ndarray, *, splits: np.ndarray, labels: np.ndarray | None = None,
                     psnr: np.ndarray | None = None, index: np.ndarray | None = None, task: str = "none",
                     label_names: dict[str, str] | None = None, signal_shape: tuple[int, ...] = (),
                     source: dict | None = None, encoding: dict | None = None, model_id: str | None = None,
                     model_dir: str | Path | None = None, embed_model: bool = True, metrics: dict | None = None,
                     extra: dict | None = None, aux: np.ndarray | None = None, aux_names: tuple[str, ...] = (),
                     overwrite: bool = False) -> LatentSet:
    """Write an in-memory latent set in one go (imports, generated samples, tests); ``aux (N, F)``
    are auxiliary features named ``aux_names``."""
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 2:
        raise ConfigError(f"latents must be (N, P); got shape {latents.shape}")
    n = len(latents)
    if Path(path).exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {path} (pass --overwrite to replace it)")
    labels2 = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(n, -1)
    aux, aux_names = check_aux(aux, aux_names, n, str(path))
    writer = LatentSetWriter(path, count=n, latent_dim=latents.shape[1],
                             label_columns=0 if labels2 is None else labels2.shape[1], aux_names=aux_names)
    cols: dict[str, np.ndarray] = {
        "latents": latents,
        "split": np.asarray(splits, dtype=np.uint8),
        "psnr": np.full(n, np.nan, np.float32) if psnr is None else np.asarray(psnr, np.float32),
        "index": np.arange(n, dtype=np.int64) if index is None else np.asarray(index, np.int64),
    }
    if labels2 is not None:
        cols["labels"] = labels2
    if aux is not None:
        cols["aux"] = aux
    writer.write_rows(0, **cols)
    return writer.finalize(task=task, label_names=label_names or {}, signal_shape=signal_shape,
                           source=source or {}, encoding=encoding or {}, model_id=model_id, model_dir=model_dir,
                           embed_model=embed_model, metrics=metrics, extra=extra, overwrite=overwrite)
