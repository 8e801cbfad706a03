"""NIfTI volumes (``.nii``/``.nii.gz``, one file or a folder of them) and voxelmorph-style npz scans.

Each volume is read with nibabel, turned to the closest canonical (RAS+) orientation
(:func:`nibabel.as_closest_canonical`), and its intensities are clipped, per channel, to the 0.5 and
99.5 percentiles and scaled to [0, 1] (option ``percentiles=LO,HI`` changes them; ``0,100`` is plain
min-max; if the two percentiles coincide the channel's min and max are used, and a constant channel
becomes all zeros). Volumes holding NaN or Inf are refused. A 4-D (or 5-D) NIfTI becomes a
multi-channel signal (``(x, y, z, C)`` -> ``(C, x, y, z)``); every volume of a folder must have the
same channel count.

Grid: ``resolution=(D, H, W)`` (or ``R`` for a cube) resamples every volume (area averaging when
shrinking, trilinear when enlarging). Without it the native grid is kept when all volumes share it and
no axis exceeds 64 voxels; otherwise volumes are resampled to 64 x 64 x 64 (each axis independently,
no padding or cropping, so anisotropic grids are stretched; pass a resolution to keep aspect ratios).

Segmentation labels: option ``labels=PATH`` names a label volume on the same grid as the (single)
image volume, e.g. ``aal.nii.gz`` for ``ch2bet.nii.gz``, or a folder holding a label volume of the
same file name for every volume of a folder. Label values are remapped to class indices 0..K-1 in
increasing order (``info["mask_values"][k]`` is the stored value of class k) and resampled with
nearest neighbours, giving ``masks`` ``(N, D, H, W)`` int64.

A voxelmorph npz (keys ``vol`` and optionally ``seg``, no affine, used as stored) loads as a
one-volume set with ``seg`` as its mask. Folders are read lazily (one volume decoded per access);
single files are read at load time. Splits: random (``split_seed``, fractions) for several volumes; a
single volume is in train. Only the folder's own files are read (no recursion, no symlinks).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from funcml.data.base import ArraySignalSet, LazySignalSet, SignalSet, split_codes_random
from funcml.data.registry import LoadOptions, SourceKind, expand_resolution, register_source
from funcml.data.sources._common import (
    array_digest, check_inside, file_digest, list_entries, make_fingerprint, parse_list,
)
from funcml.data.transforms import resize_masks, resize_signals
from funcml.errors import ConfigError, DataError

DEFAULT_MAX_NATIVE = 64
DEFAULT_GRID = (64, 64, 64)
DEFAULT_PERCENTILES = (0.5, 99.5)
_EXTRA = {"labels", "percentiles"}


def is_nifti_name(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".npz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# -- reading --------------------------------------------------------------------------------------

def _open(path: Path, spec: str):
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises ImageFileError, HeaderDataError, EOFError, zlib.error ...
        raise DataError(f"{spec}: cannot read NIfTI file {path}: {type(exc).__name__}: {exc}") from None
    if len(img.shape) < 3:
        raise DataError(f"{spec}: {path} is a {len(img.shape)}-D image; expected a 3-D or 4-D volume")
    if any(int(s) < 1 for s in img.shape):
        raise DataError(f"{spec}: {path} has an empty axis (shape {img.shape})")
    return img


def _canonical_shape(img, path: Path, spec: str) -> tuple[tuple[int, int, int], int]:
    """(spatial shape after reorientation to RAS+, channel count), from the header alone."""
    import nibabel as nib

    try:
        ornt = nib.orientations.io_orientation(img.affine)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{spec}: {path} has an unusable affine: {exc}") from None
    shape = [0, 0, 0]
    for axis in range(3):
        shape[int(ornt[axis, 0])] = int(img.shape[axis])
    return tuple(shape), int(np.prod(img.shape[3:], dtype=np.int64))


def _canonical_array(path: Path, spec: str, *, labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file in RAS+ orientation as ``(C, x, y, z)`` float32 (or ``(x, y, z)`` for labels), plus its affine."""
    import nibabel as nib

    img = _open(path, spec)
    try:
        img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj) if labels else img.get_fdata(dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - truncated gzip, short data block, bad scaling ...
        raise DataError(f"{spec}: NIfTI file {path} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    data = np.asarray(data)
    if labels:
        if data.ndim > 3 and int(np.prod(data.shape[3:])) == 1:
            data = data.reshape(data.shape[:3])
        if data.ndim != 3:
            raise DataError(f"{spec}: label volume {path} has shape {data.shape}; expected one 3-D label map")
        return data, img.affine
    data = data.reshape(*data.shape[:3], -1)
    return np.moveaxis(data, -1, 0).astype(np.float32, copy=False), img.affine


def normalise_intensity(vol: np.ndarray, percentiles: tuple[float, float], name: str) -> np.ndarray:
    """Clip each channel of ``(C, *spatial)`` to its ``percentiles`` and scale to [0, 1] (float32)."""
    vol = np.asarray(vol, dtype=np.float32)
    bad = ~np.isfinite(vol)
    if bad.any():
        raise DataError(f"{name}: the volume holds {int(bad.sum())} NaN/Inf voxel(s)")
    out = np.empty_like(vol)
    for c in range(len(vol)):
        ch = vol[c]
        lo, hi = (float(v) for v in np.percentile(ch, percentiles))
        if not hi > lo:
            lo, hi = float(ch.min()), float(ch.max())
        if hi > lo:
            out[c] = np.clip((ch - lo) / (hi - lo), 0.0, 1.0)
        else:
            out[c] = 0.0
    return out


def _label_map(raw: np.ndarray, values: np.ndarray, name: str) -> np.ndarray:
    """Stored label values -> class indices (position in the sorted ``values``)."""
    raw = np.asarray(raw)
    if raw.dtype.kind == "f":
        if not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw)):
            raise DataError(f"{name}: label volume must hold integer class values (found non-integers or NaN)")
    idx = np.searchsorted(values, raw)
    idx = np.clip(idx, 0, len(values) - 1)
    if not np.array_equal(values[idx], raw):
        raise DataError(f"{name}: label volume holds values not seen when the data was loaded")
    return idx.astype(np.int64)


def _unique_labels(raw: np.ndarray, name: str) -> np.ndarray:
    raw = np.asarray(raw)
    if raw.dtype.kind == "f" and (not np.isfinite(raw).all() or not np.array_equal(raw, np.round(raw))):
        raise DataError(f"{name}: label volume must hold integer class values (found non-integers or NaN)")
    if raw.dtype.kind not in "biuf":
        raise DataError(f"{name}: label volume has non-numeric type {raw.dtype}")
    return np.unique(raw)


# -- options ----------------------------------------------------------------------------------------

def _percentiles(extra: dict[str, str], spec: str) -> tuple[float, float]:
    if "percentiles" not in extra:
        return DEFAULT_PERCENTILES
    parts = parse_list(extra["percentiles"])
    try:
        lo, hi = (float(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{spec}: percentiles={extra['percentiles']!r}; expected LO,HI such as 0.5,99.5") from None
    if not 0 <= lo < hi <= 100:
        raise ConfigError(f"{spec}: percentiles={extra['percentiles']!r}; need 0 <= LO < HI <= 100")
    return lo, hi


def _grid(native: list[tuple[int, ...]], options: LoadOptions, spec: str) -> tuple[int, int, int]:
    target = expand_resolution(options.resolution, 3, spec)
    if target is not None:
        return target
    if len(set(native)) == 1 and max(native[0]) <= DEFAULT_MAX_NATIVE:
        return tuple(native[0])
    return DEFAULT_GRID


def _check_channels(channels: int, options: LoadOptions, spec: str) -> None:
    if options.channels not in (None, channels):
        raise ConfigError(f"{spec}: the volumes have {channels} channel(s); channels={options.channels} is not supported")


# -- loaders --------------------------------------------------------------------------------------

def _volume_files(path: Path, spec: str) -> tuple[Path, list[Path]]:
    if path.is_dir():
        files = [p for p in list_entries(path, spec, check=False) if p.is_file() and is_nifti_name(p)]
        if not files:
            raise DataError(f"{spec}: no NIfTI files (*.nii, *.nii.gz) in this folder")
        for p in files:
            check_inside(path, p, spec)
        return path, files
    return path.parent, [path]


def _label_files(volumes: list[Path], labels_opt: str | None, spec: str) -> list[Path] | None:
    if labels_opt is None:
        return None
    lpath = Path(labels_opt)
    if not lpath.exists():
        raise DataError(f"{spec}: label volume {labels_opt} not found")
    if lpath.is_dir():
        out = []
        for v in volumes:
            cand = lpath / v.name
            if not cand.is_file():
                raise DataError(f"{spec}: no label volume {cand} for {v.name}")
            out.append(check_inside(lpath, cand, spec))
        return out
    if len(volumes) != 1:
        raise ConfigError(f"{spec}: labels={labels_opt} is one label volume; for a folder of volumes pass a folder "
                          f"of label volumes with the same file names")
    return [lpath]


def _native_shapes(files: list[Path], spec: str) -> tuple[list[tuple[int, ...]], int]:
    """Each volume's spatial shape after RAS+ reorientation, and their common channel count."""
    native, channels = [], set()
    for f in files:
        shape, c = _canonical_shape(_open(f, spec), f, spec)
        native.append(shape)
        channels.add(c)
    if len(channels) != 1:
        raise DataError(f"{spec}: the volumes have different channel counts {sorted(channels)}")
    return native, channels.pop()


def _mask_values(files: list[Path], label_files: list[Path], native: list[tuple[int, ...]], spec: str) -> np.ndarray:
    """The label values of all label volumes, after checking each lies on its image's grid."""
    uniques = []
    for f, lf, shape in zip(files, label_files, native):
        lab, laff = _canonical_array(lf, spec, labels=True)
        if lab.shape != shape:
            raise DataError(f"{spec}: label volume {lf} has shape {lab.shape} but {f.name} has {shape} "
                            f"(after RAS+ reorientation); they must share one grid")
        if not np.allclose(laff, _canonical_affine(f, spec), atol=1e-3):
            raise DataError(f"{spec}: label volume {lf} is not on the grid of {f.name} (different affines)")
        uniques.append(_unique_labels(lab, str(lf)))
    return np.unique(np.concatenate(uniques))


def load_nifti(spec: str, options: LoadOptions) -> SignalSet:
    """Load a NIfTI file, a folder of NIfTI files or a voxelmorph npz; see the module docstring."""
    extra = options.take_extra(_EXTRA, "NIfTI volumes")
    percentiles = _percentiles(extra, spec)
    path = Path(spec)
    if path.is_file() and path.suffix.lower() == ".npz":
        if "labels" in extra:
            raise ConfigError(f"{spec}: a voxelmorph npz carries its labels in its 'seg' array; labels= is not used")
        return _load_voxelmorph(path, spec, options, percentiles)
    root, files = _volume_files(path, spec)
    label_files = _label_files(files, extra.get("labels"), spec)

    native, n_channels = _native_shapes(files, spec)
    _check_channels(n_channels, options, spec)
    grid = _grid(native, options, spec)
    mask_values = None if label_files is None else _mask_values(files, label_files, native, spec)

    def read(i: int) -> np.ndarray:
        vol, _ = _canonical_array(files[i], spec)
        if vol.shape != (n_channels, *native[i]):
            raise DataError(f"{spec}: {files[i]} changed since it was loaded (shape {vol.shape})")
        vol = normalise_intensity(vol, percentiles, f"{spec}: {files[i]}")
        return resize_signals(vol[None], grid)[0]

    def read_mask(i: int) -> np.ndarray:
        lab, _ = _canonical_array(label_files[i], spec, labels=True)
        return resize_masks(_label_map(lab, mask_values, f"{spec}: {label_files[i]}")[None], grid)[0]

    digests = {f.name: file_digest(f, spec) for f in files}
    label_digests = {f.name: file_digest(f, spec) for f in label_files} if label_files else None
    splits = (split_codes_random(len(files), options.val_fraction, options.test_fraction, options.split_seed)
              if len(files) > 1 else np.zeros(1, dtype=np.uint8))
    fingerprint = make_fingerprint("nifti/1", files=digests, labels=label_digests, grid=list(grid),
                                   percentiles=list(percentiles), splits=array_digest(splits))
    info = {"source": "nifti", "path": str(path), "files": [f.name for f in files],
            "native_shapes": [list(s) for s in native], "grid": list(grid), "orientation": "RAS+ (closest canonical)",
            "percentiles": list(percentiles)}
    if mask_values is not None:
        info["mask_values"] = [v.item() for v in mask_values]
        info["label_files"] = [str(f) for f in label_files]
    common = dict(name=_stem(path) if path.is_file() else path.name, spec=spec, splits=splits, labels=None,
                  task="none", label_names=None, fingerprint=fingerprint, info=info)
    if path.is_dir():
        return LazySignalSet(read, load_mask=read_mask if label_files else None,
                             signal_shape=(n_channels, *grid), **common)
    data = read(0)[None]
    masks = read_mask(0)[None] if label_files else None
    return ArraySignalSet(data, masks=masks, **common)


def _canonical_affine(path: Path, spec: str) -> np.ndarray:
    import nibabel as nib

    img = _open(path, spec)
    ornt = nib.orientations.io_orientation(img.affine)
    return img.affine @ nib.orientations.inv_ornt_aff(ornt, img.shape[:3])


def _load_voxelmorph(path: Path, spec: str, options: LoadOptions, percentiles: tuple[float, float]) -> SignalSet:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "vol" not in z.files:
                raise DataError(f"{spec}: npz has no 'vol' array (voxelmorph layout: vol and optional seg)")
            vol = np.asarray(z["vol"])
            seg = np.asarray(z["seg"]) if "seg" in z.files else None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - BadZipFile, EOFError, ValueError (pickled arrays) ...
        raise DataError(f"{spec}: unreadable or corrupt npz file: {type(exc).__name__}: {exc}") from None
    if vol.ndim == 3:
        vol = vol[None]
    elif vol.ndim == 4:
        vol = np.moveaxis(vol, -1, 0)
    else:
        raise DataError(f"{spec}: 'vol' has shape {vol.shape}; expected (x, y, z) or (x, y, z, C)")
    if vol.dtype.kind not in "biuf":
        raise DataError(f"{spec}: 'vol' has non-numeric type {vol.dtype}")
    native = tuple(int(s) for s in vol.shape[1:])
    if seg is not None:
        if seg.ndim == 4 and seg.shape[-1] == 1:
            seg = seg[..., 0]
        if seg.shape != native:
            raise DataError(f"{spec}: 'seg' has shape {seg.shape} but 'vol' is {native}")
    _check_channels(len(vol), options, spec)
    grid = _grid([native], options, spec)
    data = resize_signals(normalise_intensity(vol, percentiles, spec)[None], grid)
    masks, mask_values = None, None
    if seg is not None:
        mask_values = _unique_labels(seg, f"{spec} 'seg'")
        masks = resize_masks(_label_map(seg, mask_values, f"{spec} 'seg'")[None], grid)
    splits = np.zeros(1, dtype=np.uint8)
    fingerprint = make_fingerprint("voxelmorph-npz/1", file=file_digest(path, spec), grid=list(grid),
                                   percentiles=list(percentiles), splits=array_digest(splits))
    info = {"source": "voxelmorph-npz", "file": str(path), "native_shapes": [list(native)], "grid": list(grid),
            "orientation": "as stored", "percentiles": list(percentiles)}
    if mask_values is not None:
        info["mask_values"] = [v.item() for v in mask_values]
    return ArraySignalSet(data, masks=masks, name=_stem(path), spec=spec, splits=splits, labels=None, task="none",
                          label_names=None, fingerprint=fingerprint, info=info)


def _is_volume(path: Path) -> bool:
    if path.is_dir():
        return any(is_nifti_name(p) and p.is_file() for p in path.iterdir() if not p.name.startswith("."))
    if is_nifti_name(path):
        return True
    if path.suffix.lower() == ".npz":
        try:
            with zipfile.ZipFile(path) as z:
                return "vol.npy" in z.namelist()
        except zipfile.BadZipFile:
            return True  # a damaged npz that MedMNIST did not claim: the loader reports it as corrupt
    return False


register_source(SourceKind(
    name="nifti",
    description="NIfTI volumes (.nii/.nii.gz file or folder; labels=PATH for masks) and voxelmorph npz (vol/seg)",
    detect=_is_volume,
    load=load_nifti,
))
