"""Masks of observed coordinates (imputation from partial observations): named patterns or files.

A MASK names, for every signal, which of its samples (pixels, voxels, ECG samples) are observed;
encoding then fits only those (``fit_latents(weights=...)``) and rendering fills in the rest.

Named patterns (fractions of the extent for ranges; ``AXIS`` is a 0-based spatial axis):

* ``random:F``: hide a random fraction F of the samples (dropped samples); each signal has its own
  pattern, fixed by the seed and the signal's index.
* ``drop-slices:F[@AXIS]``: hide a fraction F of the slices (rows, ECG samples) along AXIS
  (default 0), the kept ones evenly spread with the first and last kept (thick-slice acquisition).
* ``box:LO-HI[,LO-HI...]``: hide a box (one range per axis, or one for all); e.g. ``box:0.3-0.7``.
* ``crop:LO-HI[,LO-HI...]``: observe only inside the box (a cropped field of view).

Files: ``.npy`` (or ``.npz`` with one array, or an array named ``observed``) holding either one
mask ``(*spatial)`` shared by all signals or one per signal ``(N, *spatial)`` (row i for signal i of
the data), on the data's grid; non-zero (or True) means observed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from funcml.errors import ConfigError, DataError
from funcml.io import sha256_file
from funcml.grids import parse_ranges, check_roi

PATTERNS = ("random", "drop-slices", "box", "crop")


@dataclass
class ObservedMasks:
    """Observed-sample masks for the signals of one data set.

    Attributes:
        spatial: the signals' grid. tag: identifies the masks (encode job hash, manifest).
        make: ``indices (b,) -> (b, *spatial)`` bool masks.
    """

    spatial: tuple[int, ...]
    tag: str
    make: Callable[[np.ndarray], np.ndarray]

    def masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Boolean masks ``(b, *spatial)`` (True = observed), refusing signals with nothing observed."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        m = np.asarray(self.make(idx), dtype=bool)
        empty = ~m.reshape(len(idx), -1).any(axis=1)
        if empty.any():
            raise DataError(f"observed mask {self.tag!r} leaves signal {int(idx[np.argmax(empty)])} with no observed "
                            f"sample; nothing to fit")
        return m

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        """``(b, N)`` float32 0/1 weights in grid order, as ``encode_signal_set(observed=...)`` takes them."""
        m = self.masks(indices)
        return m.reshape(len(m), -1).astype(np.float32)


def _fraction(text: str, spec: str) -> float:
    try:
        f = float(text)
    except ValueError:
        raise ConfigError(f"--observed {spec!r}: {text!r} is not a fraction") from None
    if not 0.0 < f < 1.0:
        raise ConfigError(f"--observed {spec!r}: the hidden fraction must be in (0, 1); got {f}")
    return f


def _box(spatial: Sequence[int], ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Samples whose centres lie in the box (extent fractions per axis)."""
    inside = np.ones(tuple(spatial), dtype=bool)
    for axis, (n, (lo, hi)) in enumerate(zip(spatial, ranges)):
        centres = (np.arange(n) + 0.5) / n
        sel = (centres >= lo) & (centres < hi)
        shape = [1] * len(spatial)
        shape[axis] = n
        inside &= sel.reshape(shape)
    return inside


def kept_slices(n: int, hidden: float) -> np.ndarray:
    """Indices of the slices kept when a fraction ``hidden`` of ``n`` is dropped (evenly spread, ends kept)."""
    keep = max(1, int(round(n * (1.0 - hidden))))
    return np.unique(np.round(np.linspace(0, n - 1, keep)).astype(np.int64))


def parse_observed(spec: str, spatial: Sequence[int], count: int, seed: int = 0) -> ObservedMasks:
    """Parse a MASK argument (pattern or file) for ``count`` signals on the grid ``spatial``."""
    spatial = tuple(int(s) for s in spatial)
    dim = len(spatial)
    name, sep, arg = str(spec).partition(":")
    if sep and name in PATTERNS:
        if name == "random":
            f = _fraction(arg, spec)
            n = int(np.prod(spatial))

            def make(idx: np.ndarray) -> np.ndarray:
                out = np.empty((len(idx), *spatial), dtype=bool)
                for k, i in enumerate(idx):
                    rng = np.random.default_rng([int(seed), int(i), 0x0B5E])
                    out[k] = (rng.random(n) >= f).reshape(spatial)
                return out

            return ObservedMasks(spatial, f"random:{f}:seed={seed}", make)
        if name == "drop-slices":
            frac, _, axis_text = arg.partition("@")
            f = _fraction(frac, spec)
            try:
                axis = int(axis_text) if axis_text else 0
            except ValueError:
                raise ConfigError(f"--observed {spec!r}: the axis after @ must be an integer") from None
            if not 0 <= axis < dim:
                raise ConfigError(f"--observed {spec!r}: axis {axis} does not exist in {dim}-D signals")
            keep = np.zeros(spatial[axis], dtype=bool)
            keep[kept_slices(spatial[axis], f)] = True
            shape = [1] * dim
            shape[axis] = spatial[axis]
            mask = np.broadcast_to(keep.reshape(shape), spatial)
            return ObservedMasks(spatial, f"drop-slices:{f}@{axis}", lambda idx: np.broadcast_to(mask, (len(idx), *spatial)))
        ranges = check_roi(parse_ranges(arg, "--observed"), dim)
        inside = _box(spatial, ranges)
        mask = ~inside if name == "box" else inside
        if not mask.any():
            raise ConfigError(f"--observed {spec!r} leaves no sample observed on the {spatial} grid")
        return ObservedMasks(spatial, f"{name}:{','.join(f'{lo}-{hi}' for lo, hi in ranges)}",
                             lambda idx: np.broadcast_to(mask, (len(idx), *spatial)))
    path = Path(spec)
    if not path.exists():
        if sep:
            raise ConfigError(f"--observed: unknown pattern {name!r}; use {', '.join(p + ':...' for p in PATTERNS)} "
                              f"or a .npy/.npz mask file")
        raise DataError(f"--observed: mask file not found: {spec}")
    arr = _read_mask_file(path)
    if arr.shape == spatial:
        shared = arr
        return ObservedMasks(spatial, f"file:{sha256_file(path)}", lambda idx: np.broadcast_to(shared, (len(idx), *spatial)))
    if arr.shape == (count, *spatial):
        return ObservedMasks(spatial, f"file:{sha256_file(path)}", lambda idx: arr[np.asarray(idx)])
    raise DataError(f"--observed {spec}: a mask of shape {arr.shape} fits neither one shared mask {spatial} nor one per "
                    f"signal {(count, *spatial)} (the data's grid after --resolution)")


def _read_mask_file(path: Path) -> np.ndarray:
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - ValueError (pickled), OSError, BadZipFile ...
        raise DataError(f"--observed {path}: cannot read the mask file: {type(exc).__name__}: {exc}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = loaded.files
            key = "observed" if "observed" in names else (names[0] if len(names) == 1 else None)
            if key is None:
                raise DataError(f"--observed {path}: the npz holds {names}; name the mask array 'observed'")
            arr = np.asarray(loaded[key])
    else:
        arr = np.asarray(loaded)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf" or not np.isin(arr, (0, 1)).all():
        raise DataError(f"--observed {path}: mask values must be 0/1 or boolean (1 = observed)")
    return arr.astype(bool)
