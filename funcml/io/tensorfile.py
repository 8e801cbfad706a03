"""safetensors files: whole-file load/save, memory-mapped reading, preallocated streaming writes.

The safetensors layout is: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON header
(``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``), then the raw
little-endian data. Small artifacts (model weights, checkpoints) go through the ``safetensors``
library; large arrays (latent sets) are memory-mapped straight from the validated header so that
500k x 2048 latents never need to fit in RAM, and can be filled chunk by chunk while encoding.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as _st_load_file
from safetensors.torch import save as _st_save

from funcml.errors import ArtifactError
from funcml.io.atomic import atomic_write_bytes

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_CODES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


def save_tensors(path: str | Path, tensors: Mapping[str, torch.Tensor | np.ndarray],
                 metadata: Mapping[str, str] | None = None) -> None:
    """Save tensors to a safetensors file atomically. Arrays are stored contiguous, on CPU."""
    prepared = {}
    for name, t in tensors.items():
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(np.require(t, requirements="C"))  # keeps 0-d arrays 0-d
        prepared[name] = t.detach().to("cpu").contiguous()
    data = _st_save(prepared, metadata=dict(metadata) if metadata else None)
    atomic_write_bytes(path, data)


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load every tensor of a safetensors file; a missing or corrupt file raises ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"tensor file not found: {path}")
    try:
        return _st_load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a valid safetensors file ({exc})") from None


def read_safetensors_header(path: str | Path) -> tuple[dict, int]:
    """Parse and validate a safetensors header. Returns ``(header, data_start_offset)``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"tensor file not found: {path}")
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise ArtifactError(f"{path} is truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise ArtifactError(f"{path} is truncated or corrupt (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ArtifactError(f"{path} has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} has a corrupt safetensors header")
    start = 8 + n
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[spec["dtype"]]
            shape = [int(s) for s in spec["shape"]]
            begin, end = (int(o) for o in spec["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: tensor {name!r} has an invalid header entry") from None
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if any(s < 0 for s in shape) or end - begin != expected or begin < 0 or start + end > size:
            raise ArtifactError(f"{path} is truncated or corrupt (tensor {name!r} does not fit the file)")
    return header, start


def open_tensors_mmap(path: str | Path, mode: str = "r") -> dict[str, np.ndarray]:
    """Memory-map every tensor of a safetensors file as a numpy array (read-only by default)."""
    header, start = read_safetensors_header(path)
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES[spec["dtype"]]
        shape = tuple(int(s) for s in spec["shape"])
        begin, _ = spec["data_offsets"]
        if int(np.prod(shape, dtype=np.int64)) == 0:
            out[name] = np.zeros(shape, dtype=dtype)
        elif shape == ():  # np.memmap cannot map 0-d arrays: map one element and view it as a scalar
            out[name] = np.memmap(path, dtype=dtype, mode=mode, offset=start + int(begin), shape=(1,)).reshape(())
        else:
            out[name] = np.memmap(path, dtype=dtype, mode=mode, offset=start + int(begin), shape=shape)
    return out


def create_tensor_file(path: str | Path, specs: Mapping[str, tuple[np.dtype | str, tuple[int, ...]]],
                       metadata: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Create a zero-filled safetensors file of known layout and map it writable.

    Used to stream results (e.g. latents) into place chunk by chunk with bounded memory; the file
    is sparse until written. Returns writable ``np.memmap`` views, one per tensor.
    """
    header: dict = {}
    offset = 0
    for name, (dtype, shape) in specs.items():
        dtype = np.dtype(dtype).newbyteorder("<") if np.dtype(dtype).itemsize > 1 else np.dtype(dtype)
        code = _CODES.get(dtype)
        if code is None:
            raise ValueError(f"unsupported dtype for safetensors: {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": code, "shape": [int(s) for s in shape], "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        f.truncate(8 + len(blob) + offset)
        f.flush()
        os.fsync(f.fileno())
    return open_tensors_mmap(path, mode="r+")


def release_pages(array: np.ndarray) -> None:
    """Drop the resident pages of a memory-mapped array from this process (``MADV_DONTNEED``).

    For a shared file mapping nothing is lost: the data stays in the file (and the page cache) and is
    read back on the next access. Streaming writers and whole-file passes call this so that the
    process's resident memory stays flat however large the file. A no-op for ordinary arrays.
    """
    mm = getattr(array, "_mmap", None)
    if getattr(array, "mode", None) not in ("r", "r+", "w+"):  # never a private (copy-on-write) mapping
        return
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):  # closed, or not supported here: memory is only a concern, not correctness
            pass
