"""Atomic writes: a file or directory appears complete or not at all.

Files are written to a temporary sibling, flushed, fsynced and renamed over the target
(``os.replace`` is atomic on POSIX). Directories are built under ``NAME.partial`` and renamed at the end.
What these functions write has the permissions of any other new file or folder of the process
(``0o666`` or ``0o777`` less the umask), not the private ``0o600`` of a temporary file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from funcml.errors import ArtifactError, OutputExistsError


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it where ``/proc`` tells it (Linux), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a plain ``open``/``mkdir`` would give a new file (``0o666``) or folder (``0o777``) under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` complete (with the umask's mode) when the block ends.

    Written to a temporary sibling, flushed, fsynced and renamed; an exception in the block removes
    it and leaves ``path`` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_mode())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder + rename), with the umask's mode."""
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically. NaN/Inf are refused (not valid JSON)."""
    text = json.dumps(obj, indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read a JSON file, turning IO and syntax problems into one clear :class:`ArtifactError`.

    Strict JSON only: ``NaN``/``Infinity`` (which Python's json module would otherwise accept) and
    absurdly deep nesting are refused like any other syntax error.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constants)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ArtifactError(f"{what} {path} is unreadable or not valid JSON ({reason})") from None


def prepare_output(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output path unless ``overwrite``; with it, remove the old one."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise OutputExistsError(f"output path exists: {path} (pass --overwrite to replace it)")
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path, overwrite: bool = False, keep_partial: bool = False) -> Iterator[Path]:
    """Build a directory under ``PATH.partial`` and rename it to ``PATH`` on success.

    On an exception the partial directory is removed unless ``keep_partial`` (used by resumable
    jobs, which pick it up on the next run).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {path} (pass --overwrite to replace it)")
    partial = path.with_name(path.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    os.chmod(partial, default_mode(directory=True))
    try:
        yield partial
    except BaseException:
        if not keep_partial:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if path.exists():
        # overwrite: move the old one aside first so that PATH is never half old, half new.
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(partial, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(partial, path)
    _fsync_dir(path.parent)
