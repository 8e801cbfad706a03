"""Folders of images (png, jpg/jpeg, bmp, tif/tiff) of any size, resized to one grid.

Layouts (detected in this order; option ``layout=pairs|flat|classes`` forces one):

* **pairs** (segmentation): ``ROOT/images`` + ``ROOT/masks`` (Kvasir-SEG), ``ROOT/image`` +
  ``ROOT/label`` (ISBI 2012), or ``images``/``labels``, ``image``/``mask``. Images and masks are
  matched by file name without extension and must match one to one, with the same pixel size.
  Unlabelled (task "none"), with ``masks`` ``(N, H, W)`` int64. Files at the top level are ignored.
* **flat**: images directly in ROOT; unlabelled.
* **classes**: ``ROOT/CLASS/*.png``; labels 0..K-1 from the class folder names in sorted order
  (``label_names`` ``{"0": NAME, ...}``), task binary-class (2 classes) or multi-class. Files at the
  top level are ignored.

Inside an image folder every non-hidden entry must be an image: another file or a subfolder is a
:class:`DataError` (so that a stray file is noticed, not silently dropped), as are symbolic links and
paths resolving outside ROOT. Files are decoded one at a time on access (lazy).

Signals: resized to ``resolution`` (default 64 x 64) with antialiased bilinear interpolation, each
axis independently (the aspect ratio is not kept). Channels: option ``channels`` 1 (grey, PIL's
ITU-R 601-2 luma) or 3 (RGB; grey images are replicated); by default 1 if every sampled image (up to
32, spread over the folder) has a grey mode (``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``, or a
palette of greys), else 3. Values: 8-bit / 255, 16-bit / 65535, 32-bit integer and float images
min-max per image. Alpha is dropped; multi-frame files use their first frame.

Masks: with ``masks=binary`` (default) a mask pixel is class 1 when its grey value is at least half
the range (>= 128 for 8-bit), else 0; this suits lossy JPEG masks (Kvasir-SEG: 1 = polyp) and ISBI
2012, whose labels are 0 = membrane, 255 = cell, so **class 0 = membrane, class 1 = cell**. With
``masks=index`` the stored values (grey level or palette index) are the class indices (lossless
formats only). Masks are resized with nearest neighbours onto the image grid.

Splits: random (``split_seed``, ``val_fraction``, ``test_fraction``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from funcml.data.base import LazySignalSet, SignalSet, split_codes_random
from funcml.data.registry import LoadOptions, SourceKind, expand_resolution, register_source
from funcml.data.sources._common import (
    array_digest, check_inside, file_digest, is_hidden, list_entries, make_fingerprint, parse_choice, task_for,
)
from funcml.data.transforms import resize_masks, resize_signals
from funcml.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LOSSY_SUFFIXES = (".jpg", ".jpeg")
PAIR_DIRS: tuple[tuple[str, str], ...] = (("images", "masks"), ("image", "label"), ("images", "labels"), ("image", "mask"))
DEFAULT_GRID = (64, 64)
CHANNEL_SAMPLE = 32
PRESHRINK = 4  # decode large images to >= 4x the grid before the antialiased resize (speed; same field of view)
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "I", "F"}  # Image.reduce refuses I;16, P, 1
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
_EXTRA = {"layout", "masks"}


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def natural_key(name: str) -> list:
    """``"10.png"`` after ``"9.png"``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


# -- layout ---------------------------------------------------------------------------------------

def _pair_dirs(root: Path) -> tuple[Path, Path] | None:
    for img, msk in PAIR_DIRS:
        if (root / img).is_dir() and (root / msk).is_dir():
            return root / img, root / msk
    return None


def _image_files(folder: Path, root: Path, spec: str) -> list[Path]:
    """All entries of an image folder, which must all be image files (checked inside ``root``)."""
    files = []
    for p in list_entries(folder, spec, check=False):
        check_inside(root, p, spec)
        if p.is_dir():
            raise DataError(f"{spec}: unexpected folder {p} among the images (nested folders are not read)")
        if not is_image_name(p):
            raise DataError(f"{spec}: {p} is not an image file (expected {', '.join(IMAGE_SUFFIXES)}); "
                            f"move it out of the image folder")
        files.append(p)
    return sorted(files, key=lambda p: natural_key(p.name))


def _detect_layout(root: Path) -> str | None:
    if _pair_dirs(root):
        return "pairs"
    entries = [p for p in root.iterdir() if not is_hidden(p)]
    if any(p.is_file() and is_image_name(p) for p in entries):
        return "flat"
    for d in entries:
        if d.is_dir() and any(p.is_file() and is_image_name(p) for p in d.iterdir() if not is_hidden(p)):
            return "classes"
    return None


def _collect(root: Path, layout: str, spec: str):
    """Return (image files, labels or None, class names or None, mask files or None)."""
    if layout == "pairs":
        dirs = _pair_dirs(root)
        if dirs is None:
            raise DataError(f"{spec}: layout=pairs needs subfolders {' or '.join('/'.join(p) for p in PAIR_DIRS)}")
        for d in dirs:
            check_inside(root, d, spec)
        images, masks = (_image_files(d, root, spec) for d in dirs)
        by_stem = {}
        for kind, files in (("image", images), ("mask", masks)):
            stems: dict[str, Path] = {}
            for p in files:
                if p.stem in stems:
                    raise DataError(f"{spec}: two {kind}s named {p.stem}: {stems[p.stem].name} and {p.name}")
                stems[p.stem] = p
            by_stem[kind] = stems
        no_mask = [s for s in by_stem["image"] if s not in by_stem["mask"]]
        no_image = [s for s in by_stem["mask"] if s not in by_stem["image"]]
        if no_mask or no_image:
            what = (f"{len(no_mask)} image(s) without a mask (e.g. {no_mask[:3]})" if no_mask else
                    f"{len(no_image)} mask(s) without an image (e.g. {no_image[:3]})")
            raise DataError(f"{spec}: images and masks must match one to one by file name; {what}")
        if not images:
            raise DataError(f"{spec}: the image folder {dirs[0]} is empty")
        return images, None, None, [by_stem["mask"][p.stem] for p in images]
    if layout == "flat":
        files = _image_files(root, root, spec)
        if not files:
            raise DataError(f"{spec}: no images in this folder")
        return files, None, None, None
    classes = sorted(p.name for p in list_entries(root, spec, check=False) if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{spec}: found {len(classes)} class folder(s) {classes}; a labelled image folder needs at "
                        f"least 2 (ROOT/CLASS/*.png); put unlabelled images directly in the folder")
    files, labels = [], []
    for k, name in enumerate(classes):
        d = check_inside(root, root / name, spec)
        members = _image_files(d, root, spec)
        if not members:
            raise DataError(f"{spec}: class folder {name!r} holds no images")
        files += members
        labels += [k] * len(members)
    return files, np.array(labels, dtype=np.int64), classes, None


# -- decoding -------------------------------------------------------------------------------------

def _open_image(path: Path, spec: str, shrink_to: tuple[int, int] | None = None):
    """Decode an image; with ``shrink_to=(H, W)`` large images are first reduced (JPEG DCT scaling, then an
    integer box filter) to no less than ``PRESHRINK`` times that size, which keeps the whole field of view."""
    from PIL import Image

    try:
        im = Image.open(path)
        if shrink_to is not None:
            want = (shrink_to[1] * PRESHRINK, shrink_to[0] * PRESHRINK)
            if im.format == "JPEG":
                im.draft(im.mode, want)
            im.load()
            factor = min(im.width // want[0], im.height // want[1])
            if factor >= 2 and im.mode in REDUCIBLE_MODES:
                im = im.reduce(factor)
        im.load()
        return im
    except Exception as exc:  # noqa: BLE001 - UnidentifiedImageError, OSError (truncated), DecompressionBombError ...
        raise DataError(f"{spec}: cannot decode image {path}: {type(exc).__name__}: {exc}") from None


def _is_grey(im) -> bool:
    if im.mode in GREY_MODES:
        return True
    if im.mode in ("P", "PA"):
        pal = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
        return bool(len(pal)) and bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 1] == pal[:, 2]).all())
    return False


def _header_mode(path: Path, spec: str):
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.mode, im.size, _is_grey(im)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{spec}: cannot read image {path}: {type(exc).__name__}: {exc}") from None


def image_to_array(im, channels: int) -> np.ndarray:
    """A PIL image as ``(channels, H, W)`` float32 in [0, 1] (see the module docstring for the rules)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im).astype(np.float32)
        if mode.startswith("I;16"):
            a /= 65535.0
        else:
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        a = a[None]
        return np.repeat(a, 3, axis=0) if channels == 3 else a
    target = "L" if channels == 1 else "RGB"
    if mode == "PA":
        im = im.convert("RGBA")
    if im.mode != target:
        im = im.convert(target)
    a = np.asarray(im, dtype=np.float32) / 255.0
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


def mask_to_array(im, mode: str, path: Path, spec: str) -> np.ndarray:
    """A PIL mask as ``(H, W)`` int64 classes: ``binary`` (>= half range -> 1) or ``index`` (values as stored)."""
    if mode == "index":
        if im.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N"):
            raise DataError(f"{spec}: mask {path} has mode {im.mode}; masks=index needs single-channel or palette masks")
        return np.asarray(im).astype(np.int64)
    if im.mode == "1":
        return np.asarray(im).astype(np.int64)
    if im.mode.startswith("I;16"):
        return (np.asarray(im) >= 32768).astype(np.int64)
    if im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        return (a >= (lo + hi) / 2).astype(np.int64) if hi > lo else np.zeros(a.shape, dtype=np.int64)
    return (np.asarray(im.convert("L")) >= 128).astype(np.int64)


# -- source ---------------------------------------------------------------------------------------

def _sample(files: list[Path], k: int) -> list[Path]:
    if len(files) <= k:
        return files
    return [files[i] for i in np.linspace(0, len(files) - 1, k).round().astype(int)]


def _layout(root: Path, asked: str | None, spec: str) -> str:
    """The layout asked for (``layout=``), else the one detected in ``root``."""
    if asked is not None:
        return parse_choice(asked, "layout", ("pairs", "flat", "classes"), "", "image folders")
    layout = _detect_layout(root)
    if layout is None:
        raise DataError(f"{spec}: no images found (neither ROOT/*.png, ROOT/CLASS/*.png nor images/ + masks/)")
    return layout


def _channels(files: list[Path], asked: int | None, spec: str) -> int:
    """1 (grey) or 3 (RGB): as asked, else 1 when a sample of the images are all grey."""
    if asked is None:
        return 1 if all(_header_mode(p, spec)[2] for p in _sample(files, CHANNEL_SAMPLE)) else 3
    if asked in (1, 3):
        return int(asked)
    raise ConfigError(f"{spec}: channels={asked}; image folders are read as 1 (grey) or 3 (RGB) channels")


def load_image_folder(spec: str, options: LoadOptions) -> SignalSet:
    """Load an image folder (pairs, flat or class layout) lazily; see the module docstring."""
    extra = options.take_extra(_EXTRA, "image folders")
    root = Path(spec)
    if not root.is_dir():
        raise DataError(f"{spec}: not a folder")
    layout = _layout(root, extra.get("layout"), spec)
    mask_mode = parse_choice(extra.get("masks"), "masks", ("binary", "index"), "binary", "image folders")
    files, labels, classes, mask_files = _collect(root, layout, spec)
    if mask_mode == "index" and mask_files and any(p.suffix.lower() in LOSSY_SUFFIXES for p in mask_files):
        raise ConfigError(f"{spec}: masks=index needs lossless masks (png, bmp, tif); JPEG masks are binarised")

    channels = _channels(files, options.channels, spec)
    grid = expand_resolution(options.resolution, 2, spec) or DEFAULT_GRID

    def read(i: int) -> np.ndarray:
        im = _open_image(files[i], spec, shrink_to=grid)
        try:
            return resize_signals(image_to_array(im, channels)[None], grid)[0]
        except ValueError as exc:  # PIL cannot convert some modes (LAB, HSV ...) to L/RGB
            raise DataError(f"{spec}: cannot convert image {files[i]} (mode {im.mode}) to {channels} channel(s): {exc}") from None
        finally:
            im.close()

    def read_mask(i: int) -> np.ndarray:
        im = _open_image(mask_files[i], spec)
        try:
            image_size = _header_mode(files[i], spec)[1]
            if im.size != image_size:
                raise DataError(f"{spec}: mask {mask_files[i].name} is {im.size[0]}x{im.size[1]} but image "
                                f"{files[i].name} is {image_size[0]}x{image_size[1]}")
            return resize_masks(mask_to_array(im, mask_mode, mask_files[i], spec)[None], grid)[0]
        finally:
            im.close()

    all_files = files + (mask_files or [])
    digests = {str(p.relative_to(root)): file_digest(p, spec) for p in all_files}
    splits = split_codes_random(len(files), options.val_fraction, options.test_fraction, options.split_seed)
    fingerprint = make_fingerprint("image-folder/1", files=digests, layout=layout, channels=channels, grid=list(grid),
                                   masks=mask_mode if mask_files else None, labels=classes,
                                   splits=array_digest(splits))
    info = {"source": "image-folder", "folder": str(root), "layout": layout, "grid": list(grid), "channels": channels}
    if mask_files:
        info["masks"] = mask_mode
        info["mask_folder"] = mask_files[0].parent.name
    if labels is not None:
        info["class_counts"] = {c: int((labels == k).sum()) for k, c in enumerate(classes)}
    return LazySignalSet(
        read, load_mask=read_mask if mask_files else None, name=root.name, spec=spec,
        signal_shape=(channels, *grid), splits=splits, labels=None if labels is None else labels[:, None],
        task="none" if labels is None else task_for(len(classes)),
        label_names=None if classes is None else {str(k): c for k, c in enumerate(classes)},
        fingerprint=fingerprint, info=info)


def _is_image_folder(path: Path) -> bool:
    return path.is_dir() and _detect_layout(path) is not None


register_source(SourceKind(
    name="image-folder",
    description="image folders (png/jpg/bmp/tif: ROOT/CLASS/*, flat ROOT/*, or images/ + masks/ segmentation pairs)",
    detect=_is_image_folder,
    load=load_image_folder,
))
