"""MedMNIST npz files (2D and 3D, every size, every task type) and the embedded demo data.

Specs: a path to a MedMNIST-layout ``.npz`` (keys ``{train,val,test}_{images,labels}``),
``medmnist:NAME[@SIZE]`` (read through the ``medmnist`` package with ``download=False`` from the data
root's ``medmnist/`` folder, ``$FUNCML_MEDMNIST_ROOT``, ``~/.medmnist`` or the embedded files; see
:mod:`funcml.data.catalog`) or ``demo`` (the embedded
BreastMNIST 28x28 file, CC BY 4.0, Yang et al. 2023).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import numpy as np

from funcml.data.base import SPLITS, ArraySignalSet, SignalSet
from funcml.data.catalog import data_root, demo_path, medmnist_caches
from funcml.data.registry import LoadOptions, SourceKind, expand_resolution, register_source
from funcml.data.transforms import resize_signals
from funcml.errors import DataError
from funcml.io.hashing import canonical_json, sha256_bytes, sha256_file

_KEYS = tuple(f"{s}_{k}" for s in SPLITS for k in ("images", "labels"))
DEMO_FLAG = "breastmnist"


def _medmnist_info(flag: str) -> dict | None:
    try:
        import medmnist
    except ImportError:
        return None
    return medmnist.INFO.get(flag)


def _flag_and_size(path: Path) -> tuple[str, int | None]:
    m = re.match(r"^([a-z0-9]+?mnist(?:3d)?)(?:_(\d+))?", path.stem.lower())
    if not m:
        return path.stem.lower(), None
    return m.group(1), int(m.group(2)) if m.group(2) else None


def _infer_task(labels: np.ndarray) -> str:
    if labels.shape[1] > 1:
        return "multi-label, binary-class"
    return "binary-class" if len(np.unique(labels)) <= 2 else "multi-class"


def _to_channels_first(images: np.ndarray, is_3d: bool, n_channels: int | None, spec: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, 3) -> (N, 3, H, W); (N, D, H, W) -> (N, 1, D, H, W)."""
    if images.ndim == 3:
        return images[:, None]
    if images.ndim == 4 and (is_3d or (n_channels is None and images.shape[-1] not in (3,))):
        if n_channels not in (None, 1) and not is_3d:
            raise DataError(f"{spec}: cannot interpret images of shape {images.shape}")
        return images[:, None]
    if images.ndim == 4 and images.shape[-1] in (1, 3):
        return np.moveaxis(images, -1, 1)
    if images.ndim == 5 and images.shape[-1] in (1, 3):
        return np.moveaxis(images, -1, 1)
    raise DataError(f"{spec}: cannot interpret images of shape {images.shape} as grey/RGB 2D or 3D signals")


def _read_npz(path: Path, spec: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _KEYS if k not in z.files]
            if missing:
                raise DataError(f"{spec}: not a MedMNIST npz (missing {missing})")
            return {k: z[k] for k in _KEYS}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{spec}: unreadable or corrupt npz file ({exc})") from None


def load_medmnist_arrays(path: Path, spec: str, options: LoadOptions, info: dict | None = None) -> SignalSet:
    """Build a signal set from a MedMNIST-layout npz file at ``path``."""
    options.take_extra(set(), "MedMNIST")
    flag, size = _flag_and_size(path)
    info = info if info is not None else _medmnist_info(flag)
    arrays = _read_npz(path, spec)
    is_3d = flag.endswith("3d")
    n_channels = info.get("n_channels") if info else None
    images, labels, splits = [], [], []
    for code, split in enumerate(SPLITS):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim == 0 or labs.ndim == 0 or len(imgs) != len(labs):
            raise DataError(f"{spec}: {split} has images of shape {imgs.shape} but labels of shape {labs.shape} "
                            f"(one label row per image)")
        if imgs.dtype != np.uint8:
            raise DataError(f"{spec}: MedMNIST images must be uint8, found {imgs.dtype}")
        if labs.dtype.kind not in "biu" and not (labs.dtype.kind == "f" and np.isfinite(labs).all()
                                                 and np.array_equal(labs, np.round(labs))):
            raise DataError(f"{spec}: {split} labels must be integer class indices, found {labs.dtype} values")
        images.append(_to_channels_first(imgs, is_3d, n_channels, spec))
        labels.append(labs)
        splits.append(np.full(len(imgs), code, dtype=np.uint8))
    if sum(len(im) for im in images) == 0:
        raise DataError(f"{spec}: the file holds no images")
    shapes = {im.shape[1:] for im in images if len(im)}
    if len(shapes) != 1:
        raise DataError(f"{spec}: splits have different image shapes {sorted(shapes)}")
    columns = {int(np.prod(lab.shape[1:], dtype=np.int64)) for lab in labels if len(lab)}
    if len(columns) != 1:
        raise DataError(f"{spec}: splits have different numbers of label columns {sorted(columns)}")
    width = columns.pop()
    images = [im if len(im) else im.reshape(0, *shapes.copy().pop()) for im in images]
    data = np.concatenate(images)
    label_arr = np.concatenate([lab.reshape(len(lab), width) for lab in labels]).astype(np.int64)
    if label_arr.min() < 0:
        raise DataError(f"{spec}: labels must be non-negative class indices")
    task = info["task"] if info else _infer_task(label_arr)
    label_names = dict(info["label"]) if info else {str(c): str(c) for c in np.unique(label_arr)}
    scale = 1.0 / 255.0
    target = expand_resolution(options.resolution, data.ndim - 2, spec)
    if options.channels not in (None, data.shape[1]):
        raise DataError(f"{spec}: has {data.shape[1]} channel(s); --channels {options.channels} is not supported for MedMNIST")
    if target is not None and tuple(target) != data.shape[2:]:
        data = np.concatenate([resize_signals(data[i:i + 512] * np.float32(scale), target)
                               for i in range(0, len(data), 512)])
        scale = 1.0
    fingerprint = sha256_bytes(canonical_json({"file": sha256_file(path), "resolution": list(data.shape[2:])}))
    name = flag if size in (None, 28) else f"{flag}_{size}"
    return ArraySignalSet(
        data, scale=scale, name=name, spec=spec, splits=np.concatenate(splits), labels=label_arr, task=task,
        label_names=label_names, fingerprint=fingerprint,
        info={"source": "medmnist", "flag": flag, "file": str(path), "native_size": size or 28,
              "license": (info or {}).get("license", "see MedMNIST")},
    )


def _is_medmnist_npz(path: Path) -> bool:
    if not (path.is_file() and path.suffix == ".npz"):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:  # claim partial layouts too: the loader names what is missing
            return any(k in z.files for k in _KEYS)
    except Exception:  # noqa: BLE001 - any unreadable file is "not this kind"; loading reports why
        return path.stem.lower().split("_")[0].endswith(("mnist", "mnist3d"))


def _search_roots(flag: str) -> list[Path]:
    return [data_root() / "medmnist", *medmnist_caches(), demo_path().parent]


def _load_spec(spec: str, options: LoadOptions) -> SignalSet:
    if spec == "demo":
        return load_medmnist_arrays(demo_path(), spec, options)
    path = Path(spec)
    if path.exists():
        return load_medmnist_arrays(path, spec, options)
    body = spec.split(":", 1)[1]
    flag, _, size_text = body.partition("@")
    flag = flag.lower()
    size = int(size_text) if size_text else 28
    info = _medmnist_info(flag)
    if info is None and _medmnist_info("breastmnist") is not None:
        raise DataError(f"unknown MedMNIST dataset {flag!r}")
    fname = f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"
    for root in _search_roots(flag):
        candidate = root / fname
        if candidate.is_file():
            _check_with_medmnist_package(flag, size, root)
            return load_medmnist_arrays(candidate, spec, options, info)
    roots = ", ".join(str(r) for r in _search_roots(flag))
    raise DataError(f"{spec}: {fname} not found in {roots}; run `funcml datasets fetch {flag}@{size}` "
                    f"(or pass the file's path)")


def _check_with_medmnist_package(flag: str, size: int, root: Path) -> None:
    """Open the file through the medmnist package (download=False) so that its layout checks apply."""
    try:
        import medmnist
    except ImportError:
        return
    info = medmnist.INFO.get(flag)
    if info is None:
        return
    cls = getattr(medmnist, info["python_class"])
    try:
        cls(split="val", root=str(root), size=size, download=False)
    except Exception as exc:  # noqa: BLE001 - medmnist raises bare RuntimeError/KeyError
        raise DataError(f"medmnist could not read {flag} at size {size} from {root}: {exc}") from None


register_source(SourceKind(
    name="medmnist",
    description="MedMNIST npz files (path, 'medmnist:NAME[@SIZE]' or 'demo')",
    detect=_is_medmnist_npz,
    load=_load_spec,
    prefix="medmnist",
    aliases=("demo",),
))
