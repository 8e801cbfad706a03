"""UCR time-series archive text files (e.g. ECG5000): one series per row, the class label first.

Fields are separated by commas, tabs or spaces (``.txt``, ``.tsv`` or ``.csv``). Every row must
have the same number of values. Series are scaled to [0, 1] per series (min-max; a constant series
becomes all zeros) or, with option ``scaling=global``, by the whole file's min and max. Labels are
remapped to 0..K-1 in increasing order of the original values, which are kept in ``label_names``
(``{"0": "1", "1": "2", ...}`` for ECG5000's labels 1..5).

Missing values: the UCR archive pads shorter series with trailing ``NaN``. When every row ends with
the same number of NaN columns, those columns are dropped (the data is fixed-length after all, and
``info["trimmed_columns"]`` says how many); any other NaN or Inf (variable-length series, a gap inside
a series) is refused with a message naming the line, as resampling variable lengths is a modelling
choice left to the user. ``resolution=(T,)`` resamples the series linearly. Splits are random
(``split_seed``, ``val_fraction``, ``test_fraction``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from funcml.data.base import ArraySignalSet, SignalSet, split_codes_random
from funcml.data.registry import LoadOptions, SourceKind, expand_resolution, register_source
from funcml.data.sources._common import (
    array_digest, file_digest, make_fingerprint, parse_choice, require_one_channel, task_for,
)
from funcml.data.transforms import resize_signals
from funcml.errors import DataError

SUFFIXES = (".txt", ".tsv", ".csv")
_SPLIT = re.compile(r"[,\t ]+")
_EXTRA = {"scaling"}


def _fields(line: str) -> list[str]:
    return [f for f in _SPLIT.split(line.strip()) if f]


def _label_text(token: str) -> str:
    """``"1.0000000e+00"`` -> ``"1"``; non-integral numbers keep their float text."""
    value = float(token)
    return str(int(value)) if value.is_integer() else repr(value)


def _parse(path: Path, spec: str) -> tuple[list[str], np.ndarray, int]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{spec}: not a text file (UCR files hold one labelled series per line)") from None
    except OSError as exc:
        raise DataError(f"{spec}: cannot read: {exc.strerror or exc}") from None
    labels: list[str] = []
    rows: list[np.ndarray] = []
    width = None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = _fields(line)
        if not fields:
            continue
        if len(fields) < 2:
            raise DataError(f"{spec}: line {lineno} has a label but no series values")
        if width is not None and len(fields) != width:
            raise DataError(f"{spec}: line {lineno} has {len(fields) - 1} values, earlier lines {width - 1} "
                            f"(all series must have the same length)")
        width = len(fields)
        try:
            values = np.array(fields[1:], dtype=np.float64)
            label_value = float(fields[0])
        except ValueError:
            bad = next(f for f in fields if not _is_number(f))
            raise DataError(f"{spec}: line {lineno}: {bad[:40]!r} is not a number") from None
        if not np.isfinite(label_value):
            raise DataError(f"{spec}: line {lineno}: the class label is {fields[0]!r}")
        labels.append(_label_text(fields[0]))
        rows.append(values)
    if not rows:
        raise DataError(f"{spec}: the file holds no series")
    x = np.stack(rows)
    trimmed = 0
    nan = np.isnan(x)
    if nan.any():
        # Columns that are NaN in every row, at the end: the same padding everywhere -> drop them.
        all_nan = nan.all(axis=0)
        while trimmed < x.shape[1] and all_nan[x.shape[1] - 1 - trimmed]:
            trimmed += 1
        x = x[:, :x.shape[1] - trimmed]
    bad = ~np.isfinite(x)
    if bad.any() or x.shape[1] == 0:
        if x.shape[1] == 0:
            raise DataError(f"{spec}: every value is NaN")
        row, col = (int(v) for v in np.argwhere(bad)[0])
        lineno = _line_of_row(text, row)
        raise DataError(f"{spec}: line {lineno}, value {col + 1} is {x[row, col]} (NaN/Inf); variable-length or "
                        f"incomplete series are not supported: resample or fill them to one length first")
    return labels, x, trimmed


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _line_of_row(text: str, row: int) -> int:
    seen = -1
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            seen += 1
            if seen == row:
                return lineno
    return row + 1


def _sort_key(name: str) -> tuple[int, float, str]:
    return (0, float(name), name) if _is_number(name) else (1, 0.0, name)


def scale_series(x: np.ndarray, scaling: str) -> np.ndarray:
    """Min-max scale ``(N, T)`` to [0, 1] per series (``"series"``) or over the whole array (``"global"``)."""
    if scaling == "global":
        lo, hi = x.min(), x.max()
        out = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        span = hi - lo
        out = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def load_ucr(spec: str, options: LoadOptions) -> SignalSet:
    """Load a UCR-format text file as ``(N, 1, T)`` series in [0, 1] with labels 0..K-1."""
    extra = options.take_extra(_EXTRA, "UCR files")
    require_one_channel(options.channels, spec)
    scaling = parse_choice(extra.get("scaling"), "scaling", ("series", "global"), "series", "UCR files")
    path = Path(spec)
    labels_text, x, trimmed = _parse(path, spec)
    classes = sorted(set(labels_text), key=_sort_key)
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[c] for c in labels_text], dtype=np.int64)
    data = scale_series(x, scaling)[:, None, :]
    target = expand_resolution(options.resolution, 1, spec)
    if target is not None:
        data = resize_signals(data, target)
    splits = split_codes_random(len(data), options.val_fraction, options.test_fraction, options.split_seed)
    fingerprint = make_fingerprint("ucr/1", file=file_digest(path, spec), scaling=scaling, length=int(data.shape[-1]),
                                   splits=array_digest(splits))
    return ArraySignalSet(
        data, name=path.stem, spec=spec, splits=splits, labels=labels[:, None], task=task_for(len(classes)),
        label_names={str(i): c for i, c in enumerate(classes)}, fingerprint=fingerprint,
        info={"source": "ucr", "file": str(path), "scaling": scaling, "native_length": int(x.shape[1]),
              "length": int(data.shape[-1]), "trimmed_columns": trimmed,
              "class_counts": {c: int((labels == i).sum()) for i, c in enumerate(classes)}},
    )


def _is_ucr(path: Path) -> bool:
    if not (path.is_file() and path.suffix.lower() in SUFFIXES):
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    text = head.decode("utf-8", errors="replace")
    for line in text.splitlines():
        fields = _fields(line)
        if fields:
            # Numeric first field (the label) and at least one more numeric field; the line may be cut short.
            return len(fields) >= 2 and all(_is_number(f) for f in fields[:-1] or fields) and _is_number(fields[0])
    return not text.strip()  # an empty text file: the loader says it holds no series


register_source(SourceKind(
    name="ucr",
    description="UCR time-series text files (label then values per row; .txt/.tsv/.csv)",
    detect=_is_ucr,
    load=load_ucr,
))
