"""Downloads of the datasets that have an official one (``funcml datasets fetch NAME``).

MedMNIST files come from the URLs and MD5 sums of the ``medmnist`` package's INFO (Zenodo), streamed
to a temporary file, checked and renamed into place. MIT-BIH records come from PhysioNet through
``wfdb.dl_database`` into a ``FOLDER.partial`` that is renamed when complete. Offline, or when a
server refuses, the error says what to download and where to put it.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from funcml.data.catalog import (MITDB_DS1, Dataset, data_root, local_copies, medmnist_file, medmnist_info,
                                 missing_message, parse_name)
from funcml.errors import DataError
from funcml.io.atomic import atomic_dir, atomic_file
from funcml.progress import progress_bar

CHUNK = 1 << 20


def _download(url: str, target: Path, md5: str | None, progress: bool) -> None:
    """Stream ``url`` into ``target`` atomically; raise :class:`DataError` on a network error or a bad MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(url, timeout=60) as response, atomic_file(target) as f:
        total = int(response.headers.get("Content-Length") or 0) or None
        bar = progress_bar(total=total, desc=f"download {target.name}", unit="B", disable=not progress, leave=False)
        while chunk := response.read(CHUNK):
            f.write(chunk)
            digest.update(chunk)
            bar.update(len(chunk))
        bar.close()
        if md5 and digest.hexdigest() != md5:
            raise DataError(f"{url}: the download's MD5 {digest.hexdigest()} is not the published {md5}")


def fetch_medmnist(dataset: Dataset, size: int, root: Path, progress: bool = True) -> Path:
    """Download ``dataset`` at ``size`` into ``root/medmnist/`` (nothing to do when it is there)."""
    info = medmnist_info().get(dataset.name)
    if info is None:
        raise DataError("MedMNIST downloads need the medmnist package (pip install --no-deps medmnist)")
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = info.get(f"url{suffix}"), info.get(f"MD5{suffix}")
    target = root / "medmnist" / medmnist_file(dataset.name, size)
    if target.is_file():
        return target
    if not url:
        raise DataError(f"medmnist names no download of {dataset.name} at size {size}")
    try:
        _download(url, target, md5, progress)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(f"could not download {url} ({_reason(exc)}). "
                        f"{missing_message(dataset, root, size, offline=True)}") from None
    return target


def fetch_physionet(dataset: Dataset, root: Path) -> Path:
    """Download the MIT-BIH records of ``dataset`` (all, or DS1) from PhysioNet into ``root/FOLDER``."""
    import wfdb

    target = root / dataset.folder
    if local_copies(dataset, root):
        return target
    records = list(MITDB_DS1) if dataset.name == "mitdb-ds1" else "all"
    try:
        with atomic_dir(target, overwrite=True) as partial:
            wfdb.dl_database("mitdb", str(partial), records=records)
            if not any(partial.glob("*.hea")):
                raise OSError("no records arrived")
    except Exception as exc:  # noqa: BLE001 - wfdb raises requests', urllib's and its own errors
        if isinstance(exc, (KeyboardInterrupt, DataError)):
            raise
        raise DataError(f"could not download MIT-BIH from PhysioNet ({_reason(exc)}). "
                        f"{missing_message(dataset, root, offline=True)}") from None
    return target


def fetch(name: str, root: str | Path | None = None, progress: bool = True) -> Path:
    """Download ``NAME[@SIZE]`` into the data root; return where it is. Present data is not downloaded again."""
    dataset, size = parse_name(name)
    base = data_root(root)
    if dataset.fetch == "medmnist":
        return fetch_medmnist(dataset, size or 28, base, progress)
    if dataset.fetch == "physionet":
        return fetch_physionet(dataset, base)
    if dataset.name == "demo":
        raise DataError("demo is embedded in funcml: nothing to download")
    if local_copies(dataset, base):
        return base / dataset.folder
    raise DataError(f"funcml cannot download {dataset.name} itself; {missing_message(dataset, base)}")


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return " ".join(str(reason).split())[:200] or type(exc).__name__

