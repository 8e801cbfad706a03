"""Helpers shared by the file-based sources: safe paths, content hashes, small option parsers."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from funcml.errors import ConfigError, DataError
from funcml.io.hashing import canonical_json, sha256_bytes, sha256_file


def is_hidden(path: Path) -> bool:
    """Dot-files (``.DS_Store``, ``.ipynb_checkpoints`` ...) are never data."""
    return path.name.startswith(".")


def check_inside(root: Path, path: Path, spec: str) -> Path:
    """Return ``path`` if it is a real entry under ``root``; refuse symlinks and anything resolving outside.

    ``root`` itself may be a symlink (the user named it); entries below it may not, so a data folder
    cannot pull in files from elsewhere on the machine (path traversal).
    """
    if path.is_symlink():
        raise DataError(f"{spec}: refusing symbolic link {path} (data files must be real files inside the data folder)")
    real_root = root.resolve()
    try:
        path.resolve().relative_to(real_root)
    except ValueError:
        raise DataError(f"{spec}: {path} resolves outside the data folder {root}") from None
    return path


def list_entries(root: Path, spec: str, *, check: bool = True) -> list[Path]:
    """Non-hidden entries of a folder, sorted by name, each checked with :func:`check_inside` if ``check``."""
    try:
        entries = sorted((p for p in root.iterdir() if not is_hidden(p)), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(f"{spec}: cannot list folder {root}: {exc.strerror or exc}") from None
    return [check_inside(root, p, spec) for p in entries] if check else entries


def file_digest(path: Path, spec: str) -> str:
    """sha256 of a file's content; unreadable files are a :class:`DataError`."""
    try:
        return sha256_file(path)
    except OSError as exc:
        raise DataError(f"{spec}: cannot read {path}: {exc.strerror or exc}") from None


def make_fingerprint(source: str, **parts) -> str:
    """sha256 over a source tag and JSON-serialisable parts (file digests, options, split digest)."""
    return sha256_bytes(canonical_json({"source": source, **parts}))


def array_digest(a: np.ndarray) -> str:
    a = np.ascontiguousarray(a)
    return sha256_bytes(str((a.dtype.str, a.shape)).encode() + a.tobytes())


def parse_list(text: str | None) -> list[str]:
    """``"101, 106,"`` -> ``["101", "106"]``."""
    if text is None:
        return []
    return [t.strip() for t in str(text).split(",") if t.strip()]


def parse_choice(text: str | None, key: str, choices: tuple[str, ...], default: str, source: str) -> str:
    value = default if text is None else str(text).strip().lower()
    if value not in choices:
        raise ConfigError(f"{source}: option {key}={text!r}; expected one of {list(choices)}")
    return value


def require_one_channel(channels: int | None, spec: str) -> None:
    if channels not in (None, 1):
        raise ConfigError(f"{spec}: 1-D series have one channel; channels={channels} is not supported")


def task_for(n_classes: int) -> str:
    return "multi-class" if n_classes > 2 else "binary-class"
