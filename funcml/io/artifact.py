"""Reading the JSON descriptor of an artifact directory (classifier, generator, segmentation head)."""

from __future__ import annotations

from pathlib import Path

from funcml.errors import ArtifactError
from funcml.io.atomic import read_json
from funcml.io.hashing import sha256_file


def read_artifact_config(directory: str | Path, config_file: str, fmt: str, version: int, what: str) -> dict:
    """The dict in ``directory/config_file`` after checking that it names ``fmt`` at ``version``.

    Raises :class:`ArtifactError` (one message naming the path) when the directory or the file is
    missing, or the file is not a ``what`` of this format version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{what} directory not found: {directory}")
    meta = read_json(directory / config_file, what=f"{what} config")
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ArtifactError(f"{directory} is not a funcml {what} ({config_file} format is not {fmt!r})")
    if meta.get("version") != version:
        raise ArtifactError(f"{directory}: {what} version {meta.get('version')} is not supported (reads {version})")
    return meta


def verify_listed_file(directory: str | Path, meta: dict, name: str) -> Path:
    """``directory/name`` after checking it against the sha256 listed in ``meta['files'][name]``."""
    path = Path(directory) / name
    files = meta.get("files")
    expected = files.get(name) if isinstance(files, dict) else None
    if not path.is_file() or sha256_file(path) != expected:
        raise ArtifactError(f"{path} is missing or does not match its checksum (corrupt or replaced)")
    return path
