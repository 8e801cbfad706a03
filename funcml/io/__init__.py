"""Safe, atomic file IO: safetensors + JSON, checksums, memory-mapped reading."""

from funcml.io.atomic import atomic_write_bytes, atomic_write_json, atomic_dir, prepare_output, read_json
from funcml.io.hashing import sha256_file, sha256_bytes, canonical_json
from funcml.io.tensorfile import (
    save_tensors,
    load_tensors,
    open_tensors_mmap,
    create_tensor_file,
    read_safetensors_header,
    release_pages,
)

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_dir",
    "prepare_output",
    "read_json",
    "sha256_file",
    "sha256_bytes",
    "canonical_json",
    "save_tensors",
    "load_tensors",
    "open_tensors_mmap",
    "create_tensor_file",
    "read_safetensors_header",
    "release_pages",
]
