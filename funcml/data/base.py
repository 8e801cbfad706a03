"""The data interface every source returns: a :class:`SignalSet`.

A signal set holds N signals of one shape ``(C, *spatial)`` (1D: ``(C, T)``, 2D: ``(C, H, W)``,
3D: ``(C, D, H, W)``) with values in [0, 1], plus per-signal labels and split codes. Signals are
read on demand with :meth:`SignalSet.get`, so a source may keep them compact (uint8) or on disk.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Iterator, Sequence

import numpy as np

from funcml.errors import DataError

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLIT_CODES: dict[str, int] = {name: code for code, name in enumerate(SPLITS)}
# MedMNIST's vocabulary for task types, plus "none" for unlabelled data.
TASKS: tuple[str, ...] = ("binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression", "none")


class SignalSet(ABC):
    """N signals of shape ``signal_shape = (C, *spatial)`` in [0, 1], with labels and splits.

    Attributes:
        name: short human-readable name (``breastmnist``, ``mitdb-ds1`` ...).
        spec: the DATA argument it was loaded from (kept for provenance).
        signal_shape: ``(C, *spatial)``; ``len(signal_shape) - 1`` is the coordinate dimension.
        labels: ``(N, L)`` int64 (L = 1 except multi-label), or None when unlabelled.
        splits: ``(N,)`` uint8 codes into :data:`SPLITS`.
        task: one of :data:`TASKS`.
        label_names: ``{"0": "malignant", ...}`` (class index or label column -> name).
        fingerprint: sha256 identifying the source content and loading options.
        info: free-form JSON-serialisable provenance (records, sampling rate, scaling ...).
        aux: ``(N, F)`` float32 named auxiliary features of each signal that the signal itself does not
            hold (a beat's RR intervals), or None; ``aux_names`` names the F columns as ``GROUP.NAME``
            (``rr.pre_norm`` ...). ``funcml encode`` stores them beside the latents.
    """

    def __init__(self, *, name: str, spec: str, signal_shape: Sequence[int], splits: np.ndarray,
                 labels: np.ndarray | None, task: str, label_names: dict[str, str] | None,
                 fingerprint: str, info: dict | None = None, aux: np.ndarray | None = None,
                 aux_names: Sequence[str] = ()) -> None:
        self.name = name
        self.spec = spec
        self.signal_shape = tuple(int(s) for s in signal_shape)
        self.splits = np.asarray(splits, dtype=np.uint8)
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64).reshape(len(self.splits), -1)
        self.task = task
        self.label_names = dict(label_names or {})
        self.fingerprint = fingerprint
        self.info = dict(info or {})
        if len(self.signal_shape) not in (2, 3, 4):
            raise DataError(f"{spec}: signals must be (C, T), (C, H, W) or (C, D, H, W); got {self.signal_shape}")
        if task not in TASKS:
            raise DataError(f"{spec}: unknown task type {task!r}; expected one of {TASKS}")
        if self.splits.ndim != 1 or (len(self.splits) and int(self.splits.max()) >= len(SPLITS)):
            raise DataError(f"{spec}: split codes must be a 1-D array of 0 (train), 1 (val), 2 (test)")
        self.aux, self.aux_names = check_aux(aux, aux_names, len(self.splits), spec)

    # -- size and shape -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.splits)

    @property
    def channels(self) -> int:
        return self.signal_shape[0]

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return self.signal_shape[1:]

    @property
    def dim(self) -> int:
        """Coordinate dimension: 1, 2 or 3."""
        return len(self.signal_shape) - 1

    @property
    def has_masks(self) -> bool:
        return False

    # -- access ---------------------------------------------------------------------------------
    @abstractmethod
    def _read(self, indices: np.ndarray) -> np.ndarray:
        """Return signals ``(b, C, *spatial)`` as float32 for the given indices (unvalidated)."""

    def get(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Signals at ``indices`` as float32 ``(b, C, *spatial)``, checked finite and in [0, 1]."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} signals")
        x = np.asarray(self._read(idx), dtype=np.float32)
        if x.shape != (len(idx), *self.signal_shape):
            raise DataError(f"{self.spec}: read signals of shape {x.shape[1:]}, expected {self.signal_shape}")
        check_signal_values(x, self.spec, idx)
        return x

    def get_masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Segmentation masks ``(b, *spatial)`` int64 class indices, for sources that have them."""
        raise DataError(f"{self.spec}: this data has no masks")

    def indices(self, split: str | None = None) -> np.ndarray:
        """Indices of one split (``train``/``val``/``test``) or of all signals."""
        if split is None or split == "all":
            return np.arange(len(self))
        if split not in SPLIT_CODES:
            raise DataError(f"unknown split {split!r}; expected one of {SPLITS}")
        return np.flatnonzero(self.splits == SPLIT_CODES[split])

    def iter_batches(self, batch_size: int, indices: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(indices, signals)`` in order, ``batch_size`` at a time (bounded memory)."""
        idx = np.arange(len(self)) if indices is None else np.asarray(indices)
        for start in range(0, len(idx), batch_size):
            part = idx[start:start + batch_size]
            yield part, self.get(part)

    def describe(self) -> dict:
        """JSON-serialisable summary used in manifests and ``funcml info``."""
        counts = {s: int((self.splits == c).sum()) for s, c in SPLIT_CODES.items()}
        return {
            "name": self.name,
            "spec": self.spec,
            "signal_shape": list(self.signal_shape),
            "count": len(self),
            "splits": counts,
            "task": self.task,
            "label_names": self.label_names,
            "fingerprint": self.fingerprint,
            "info": self.info,
        } | ({"aux_features": list(self.aux_names)} if self.aux_names else {})

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n={len(self)}, shape={self.signal_shape}, task={self.task!r})"


def check_signal_values(x: np.ndarray, spec: str, indices: np.ndarray | None = None) -> None:
    """Raise :class:`DataError` naming the first bad signal if values are non-finite or outside [0, 1]."""
    bad = ~np.isfinite(x)
    if bad.any():
        i = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0, 0])
        which = int(indices[i]) if indices is not None else i
        raise DataError(f"{spec}: signal {which} contains NaN or Inf values")
    lo, hi = float(x.min(initial=0.0)), float(x.max(initial=0.0))
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise DataError(f"{spec}: signal values must lie in [0, 1] after scaling; found range [{lo:.4g}, {hi:.4g}]")


def check_aux(aux: np.ndarray | None, names: Sequence[str], n: int, spec: str) -> tuple[np.ndarray | None, tuple[str, ...]]:
    """``(aux (n, F) float32 or None, F names)`` after checking shape and names (``GROUP.NAME``, unique)."""
    names = tuple(str(s) for s in names)
    if aux is None:
        if names:
            raise DataError(f"{spec}: auxiliary feature names {list(names)} given without their values")
        return None, ()
    aux = np.asarray(aux, dtype=np.float32)
    if aux.ndim != 2 or aux.shape != (n, len(names)):
        raise DataError(f"{spec}: auxiliary features of shape {aux.shape} do not match {n} signals x {len(names)} names")
    bad = [s for s in names if s.count(".") != 1 or not all(s.split("."))]
    if bad or len(set(names)) != len(names):
        raise DataError(f"{spec}: auxiliary feature names must be unique GROUP.NAME; got {list(names)}")
    return aux, names


class ArraySignalSet(SignalSet):
    """Signals held in one array ``(N, C, *spatial)`` (uint8 or float, in memory or memory-mapped).

    ``scale`` maps stored values to [0, 1] on read (1/255 for uint8 images), so a uint8 dataset
    stays uint8 in memory. Optional ``masks`` ``(N, *spatial)`` carry segmentation labels.
    """

    def __init__(self, data: np.ndarray, *, scale: float = 1.0, masks: np.ndarray | None = None, **kwargs) -> None:
        super().__init__(signal_shape=data.shape[1:], **kwargs)
        if len(data) != len(self.splits):
            raise DataError(f"{self.spec}: {len(data)} signals but {len(self.splits)} split codes")
        if self.labels is not None and len(self.labels) != len(data):
            raise DataError(f"{self.spec}: {len(data)} signals but {len(self.labels)} labels")
        if masks is not None and masks.shape != (len(data), *data.shape[2:]):
            raise DataError(f"{self.spec}: masks of shape {masks.shape} do not match signals {data.shape}")
        self.data = data
        self.scale = float(scale)
        self.masks = masks

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    def _read(self, indices: np.ndarray) -> np.ndarray:
        x = np.asarray(self.data[indices], dtype=np.float32)
        if self.scale != 1.0:
            x *= np.float32(self.scale)
        return x

    def get_masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        if self.masks is None:
            return super().get_masks(indices)
        return np.asarray(self.masks[np.asarray(indices, dtype=np.int64)], dtype=np.int64)


class LazySignalSet(SignalSet):
    """Signals produced one at a time by ``load(i) -> (C, *spatial)`` (files decoded on demand).

    Optional ``load_mask(i) -> (*spatial)`` gives segmentation masks.
    """

    def __init__(self, load: Callable[[int], np.ndarray], *, load_mask: Callable[[int], np.ndarray] | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self._load = load
        self._load_mask = load_mask

    @property
    def has_masks(self) -> bool:
        return self._load_mask is not None

    def _read(self, indices: np.ndarray) -> np.ndarray:
        if len(indices) == 0:
            return np.zeros((0, *self.signal_shape), dtype=np.float32)
        return np.stack([np.asarray(self._load(int(i)), dtype=np.float32) for i in indices])

    def get_masks(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        if self._load_mask is None:
            return super().get_masks(indices)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            return np.zeros((0, *self.spatial_shape), dtype=np.int64)
        return np.stack([np.asarray(self._load_mask(int(i)), dtype=np.int64) for i in idx])


def split_codes_random(n: int, val_fraction: float, test_fraction: float, seed: int) -> np.ndarray:
    """Deterministic random split codes for sources without official splits."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(f"split fractions must be in [0, 1) and sum below 1; got val={val_fraction}, test={test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = int(round(n * val_fraction)), int(round(n * test_fraction))
    codes = np.zeros(n, dtype=np.uint8)
    codes[order[:n_val]] = SPLIT_CODES["val"]
    codes[order[n_val:n_val + n_test]] = SPLIT_CODES["test"]
    return codes
