"""Write generated signals to disk: npy (any dimension), PNG (2-D) and NIfTI (2-D/3-D)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from funcml.errors import ConfigError
from funcml.io import atomic_write_bytes

FORMATS = ("npy", "png", "nifti")


def check_formats(formats: tuple[str, ...], signal_shape: tuple[int, ...]) -> tuple[str, ...]:
    """Validate output formats for signals ``(C, *spatial)``; raise :class:`ConfigError` otherwise."""
    dim, channels = len(signal_shape) - 1, signal_shape[0]
    for f in formats:
        if f not in FORMATS:
            raise ConfigError(f"unknown --format {f!r}; choose from {', '.join(FORMATS)}")
        if f == "png" and (dim != 2 or channels not in (1, 3)):
            raise ConfigError(f"--format png writes 2-D grey or RGB images; these signals are {signal_shape} "
                              "(use npy, or nifti for volumes)")
        if f == "nifti" and dim == 1:
            raise ConfigError("--format nifti needs 2-D or 3-D signals; use npy for 1-D signals")
    return tuple(dict.fromkeys(formats))


def _name(i: int, label: int | None, label_names: dict[str, str]) -> str:
    if label is None:
        return f"sample_{i:05d}"
    tag = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in label_names.get(str(int(label)), str(int(label))))
    return f"sample_{i:05d}_{tag}"


def write_signals(directory: str | Path, signals: np.ndarray, labels: np.ndarray | None, formats: tuple[str, ...],
                  label_names: dict[str, str] | None = None) -> list[str]:
    """Write ``signals`` ``(n, C, *spatial)`` in [0, 1]; return the relative paths written.

    npy: one ``samples.npy`` ``(n, C, *spatial)`` float32 (+ ``labels.npy``); png: ``png/NAME.png``
    8-bit; nifti: ``nifti/NAME.nii.gz`` float32 with spatial axes first (channels last when C > 1).
    """
    directory = Path(directory)
    names = label_names or {}
    written: list[str] = []
    if "npy" in formats:
        for fname, arr in (("samples.npy", signals.astype(np.float32)),
                           *((("labels.npy", labels.astype(np.int64)),) if labels is not None else ())):
            buf = io.BytesIO()
            np.save(buf, arr)
            atomic_write_bytes(directory / fname, buf.getvalue())
            written.append(fname)
    if "png" in formats:
        from PIL import Image

        (directory / "png").mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(signals):
            img = np.clip(np.round(s * 255), 0, 255).astype(np.uint8)
            img = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            rel = f"png/{_name(i, None if labels is None else labels[i], names)}.png"
            atomic_write_bytes(directory / rel, buf.getvalue())
            written.append(rel)
    if "nifti" in formats:
        import nibabel as nib

        (directory / "nifti").mkdir(parents=True, exist_ok=True)
        for i, s in enumerate(signals):
            arr = s[0] if s.shape[0] == 1 else np.moveaxis(s, 0, -1)
            img = nib.Nifti1Image(np.ascontiguousarray(arr, dtype=np.float32), np.eye(4))
            rel = f"nifti/{_name(i, None if labels is None else labels[i], names)}.nii.gz"
            atomic_write_bytes(directory / rel, _gzip(img.to_bytes()))
            written.append(rel)
    return written


def _gzip(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data, mtime=0)
