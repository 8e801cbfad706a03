"""MIT-BIH style WFDB records cut into the standard 187-sample heartbeats (Kachuee et al. 2018).

DATA is a folder of WFDB records (``NAME.hea`` + the signal files it names + ``NAME.atr``) or one
record's ``.hea`` file (``.dat``/``.atr`` paths with a sibling ``.hea`` work too). Records are read
with the ``wfdb`` package.

Beat extraction, per record:

1. take one lead (``MLII`` by signal name; option ``lead=NAME``) in physical units;
2. resample to 125 Hz with :func:`scipy.signal.resample_poly` (360 -> 125 Hz is up 25, down 72);
   annotation positions are mapped with the same ratio and rounded;
3. split into consecutive 10 s windows (1250 samples; the last, shorter window is kept) and min-max
   normalise each window to [0, 1] (a flat window becomes all zeros);
4. for every beat annotation whose R peak lies in the window, take the window's samples from the R
   peak on, over ``round(1.2 * T)`` samples where T is the median R-R interval of the annotated beats
   in that window (the record's median R-R when the window holds a single beat); the segment stops at
   the window's end and is zero-padded or truncated to 187 samples. Sample 0 of every beat is its
   R peak.

Annotation symbols map to the AAMI classes N (N L R e j), S (A a J S), V (V E), F (F) and Q (/ f Q),
labels 0..4 in that order; other annotations (rhythm changes, noise, ``!`` flutter waves, ...) are
not beats and are skipped.

Splits are by record so that no patient is in two splits: options ``val_records`` and
``test_records`` (comma-separated names) fix them; a split not named is a seeded random choice
(``split_seed``) of ``round(n_records * val_fraction)`` / ``round(n_records * test_fraction)`` of the
remaining records. Option ``split=inter-patient`` follows the published protocol instead: train and
val from the DS1 records, test from the DS2 records, paced records left out
(:mod:`funcml.data.sources.ecg_protocol`). Option ``records`` restricts a folder to some records.
``resolution=(T,)`` resamples the 187 samples linearly. Nothing is cached on disk.

The returned :class:`BeatSignalSet` also carries ``records`` (N,) (each beat's record name),
``r_peaks`` (N,) (the beat's R peak as a sample index at the record's native rate) and auxiliary
features ``aux`` (N, 12) named ``aux_names``: the RR intervals (:mod:`funcml.data.sources.rr`, from
every annotated beat of the record) and the QRS width and area (:mod:`funcml.data.sources.qrs`,
measured on the lead at its native rate, relative to the record's median beat).
"""

from __future__ import annotations

import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from funcml.data.base import SPLITS, ArraySignalSet, split_codes_random
from funcml.data.registry import LoadOptions, SourceKind, expand_resolution, register_source
from funcml.data.sources._common import (
    array_digest, check_inside, file_digest, list_entries, make_fingerprint, parse_list, require_one_channel,
)
from funcml.data.sources.ecg_protocol import inter_patient_splits, split_mode
from funcml.data.sources.qrs import QRS_NAMES, qrs_features
from funcml.data.sources.rr import RR_NAMES, qrs_samples, rr_features
from funcml.data.transforms import resize_signals
from funcml.errors import ConfigError, DataError

AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")
AAMI_SYMBOLS: dict[str, str] = {
    **dict.fromkeys("NLRej", "N"), **dict.fromkeys("AaJS", "S"), **dict.fromkeys("VE", "V"),
    "F": "F", **dict.fromkeys("/fQ", "Q"),
}
SYMBOL_TO_LABEL: dict[str, int] = {s: AAMI_CLASSES.index(c) for s, c in AAMI_SYMBOLS.items()}
TARGET_FS = 125
WINDOW_SECONDS = 10
BEAT_SAMPLES = 187
RR_FACTOR = 1.2
DEFAULT_LEAD = "MLII"
ANNOTATOR = "atr"
_EXTRA = {"lead", "records", "val_records", "test_records", "split"}


class BeatSignalSet(ArraySignalSet):
    """Heartbeats ``(N, 1, T)`` with each beat's record name (``records``) and native R-peak sample (``r_peaks``)."""

    def __init__(self, data: np.ndarray, *, records: np.ndarray, r_peaks: np.ndarray, **kwargs) -> None:
        super().__init__(data, **kwargs)
        if len(records) != len(data) or len(r_peaks) != len(data):
            raise DataError(f"{self.spec}: per-beat record names / R peaks do not match {len(data)} beats")
        self.records = np.asarray(records)
        self.r_peaks = np.asarray(r_peaks, dtype=np.int64)


# -- discovery ------------------------------------------------------------------------------------

def _record_paths(path: Path, spec: str) -> tuple[Path, list[str]]:
    """(folder, record names) for a folder of records or one record file."""
    if path.is_dir():
        names = [p.stem for p in list_entries(path, spec, check=False) if p.is_file() and p.suffix == ".hea"]
        if not names:
            raise DataError(f"{spec}: no WFDB header files (*.hea) in this folder")
        return path, names
    return path.parent, [path.stem]


def _read_record(folder: Path, name: str, lead: str, spec: str) -> tuple[np.ndarray, float, np.ndarray, list[str], dict]:
    """Read one lead and the beat annotations of a record; every failure becomes a DataError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # wfdb's pandas calls (Pandas4Warning)
        import wfdb

    base = folder / name
    hea = check_inside(folder, folder / f"{name}.hea", spec)
    atr = folder / f"{name}.{ANNOTATOR}"
    if not atr.is_file():
        raise DataError(f"{spec}: record {name} has no annotation file {atr.name} (beats are cut at annotated R peaks)")
    check_inside(folder, atr, spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            header = wfdb.rdheader(str(base))
    except Exception as exc:  # noqa: BLE001 - wfdb raises bare ValueError/IndexError/... on bad headers
        raise DataError(f"{spec}: cannot read WFDB header {hea}: {type(exc).__name__}: {exc}") from None
    if not hasattr(header, "sig_name") or getattr(header, "seg_name", None):
        raise DataError(f"{spec}: {hea} is a multi-segment record, which is not supported")
    sig_names = [str(n) for n in (header.sig_name or [])]  # a damaged header can give None entries
    if lead not in sig_names:
        raise DataError(f"{spec}: record {name} has no lead {lead!r} (its leads: {', '.join(sig_names) or 'none'}); "
                        f"leave the record out (records=...) or choose another lead (lead=...)")
    channel = sig_names.index(lead)
    files = {}
    for fname in dict.fromkeys(header.file_name or []):
        target = folder / fname
        if Path(fname).name != fname:
            raise DataError(f"{spec}: {hea} names signal file {fname!r} outside the record folder")
        if not target.is_file():
            raise DataError(f"{spec}: record {name}: signal file {fname} named in {hea.name} is missing")
        check_inside(folder, target, spec)
        files[fname] = target
    fs = float(header.fs or 0)
    if not fs > 0:
        raise DataError(f"{spec}: {hea} has no valid sampling frequency")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            record = wfdb.rdrecord(str(base), channels=[channel])
            ann = wfdb.rdann(str(base), ANNOTATOR)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt files raise ValueError, IndexError, ...
        raise DataError(f"{spec}: record {name} is truncated or corrupt: {type(exc).__name__}: {exc}") from None
    signal = record.p_signal
    if signal is None or signal.ndim != 2 or signal.shape[1] != 1:
        raise DataError(f"{spec}: record {name}: could not read lead {lead} as a physical signal")
    signal = signal[:, 0].astype(np.float64)
    if header.sig_len and len(signal) != int(header.sig_len):
        raise DataError(f"{spec}: record {name} is truncated: {len(signal)} of {header.sig_len} samples read")
    if len(signal) == 0:
        raise DataError(f"{spec}: record {name} holds no samples")
    if not np.isfinite(signal).all():
        first = int(np.flatnonzero(~np.isfinite(signal))[0])
        raise DataError(f"{spec}: record {name}, lead {lead}: missing or invalid sample at index {first}")
    samples = np.asarray(ann.sample, dtype=np.int64)
    symbols = list(ann.symbol or [])
    if len(symbols) != len(samples):
        raise DataError(f"{spec}: annotation file {atr.name} is corrupt ({len(samples)} positions, {len(symbols)} symbols)")
    digests = {p.name: file_digest(p, spec) for p in (hea, atr, *files.values())}
    return signal, fs, samples, symbols, digests


# -- beat cutting ---------------------------------------------------------------------------------

def cut_beats(signal: np.ndarray, fs: float, samples: np.ndarray, symbols: list[str], *, name: str = "record",
              spec: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut one record into beats. Returns ``(beats (B, 187) float32, labels (B,), native R-peak samples (B,))``.

    ``signal`` is one lead at ``fs`` Hz, ``samples``/``symbols`` its annotations (non-beat symbols are
    skipped). See the module docstring for the method.
    """
    keep = np.array([s in SYMBOL_TO_LABEL for s in symbols], dtype=bool)
    samples, labels = samples[keep], np.array([SYMBOL_TO_LABEL[s] for s, k in zip(symbols, keep) if k], dtype=np.int64)
    if len(samples) and (samples.min() < 0 or samples.max() >= len(signal)):
        bad = int(samples[(samples < 0) | (samples >= len(signal))][0])
        raise DataError(f"{spec}: record {name}: beat annotation at sample {bad} lies outside the signal "
                        f"({len(signal)} samples); the signal file may be truncated")
    ratio = Fraction(TARGET_FS) / Fraction(fs).limit_denominator(100000)
    up, down = ratio.numerator, ratio.denominator
    x = resample_poly(signal, up, down) if (up, down) != (1, 1) else signal.copy()
    r = np.clip(np.rint(samples * (up / down)).astype(np.int64), 0, len(x) - 1)
    order = np.argsort(r, kind="stable")
    r, labels, samples = r[order], labels[order], samples[order]
    beats = np.zeros((len(r), BEAT_SAMPLES), dtype=np.float32)
    if len(r) == 0:
        return beats, labels, samples
    rr_all = np.diff(r)
    record_rr = float(np.median(rr_all)) if len(rr_all) else BEAT_SAMPLES / RR_FACTOR
    win = TARGET_FS * WINDOW_SECONDS
    starts = np.arange(0, len(x), win)
    first = np.searchsorted(r, starts, side="left")
    last = np.searchsorted(r, starts + win, side="left")
    for w0, i0, i1 in zip(starts, first, last):
        if i1 <= i0:
            continue
        seg = x[w0:w0 + win]
        lo, hi = float(seg.min()), float(seg.max())
        norm = (seg - lo) / (hi - lo) if hi > lo else np.zeros_like(seg)
        rr = np.diff(r[i0:i1])
        period = float(np.median(rr)) if len(rr) else record_rr
        length = max(1, int(round(RR_FACTOR * period)))
        for i in range(i0, i1):
            part = norm[r[i] - w0: r[i] - w0 + length][:BEAT_SAMPLES]
            beats[i, :len(part)] = part
    return beats, labels, samples


# -- splits ---------------------------------------------------------------------------------------

def _record_splits(names: list[str], options: LoadOptions, extra: dict[str, str], spec: str) -> dict[str, int]:
    """Split code per record: named ``val_records``/``test_records``, the rest seeded-random by fraction."""
    fixed: dict[str, int] = {}
    for key, code in (("val_records", 1), ("test_records", 2)):
        if key not in extra:
            continue
        for rec in parse_list(extra[key]):
            if rec not in names:
                raise ConfigError(f"{spec}: {key} names record {rec!r}, which is not among the loaded records "
                                  f"({', '.join(names)})")
            if rec in fixed and fixed[rec] != code:
                raise ConfigError(f"{spec}: record {rec} is named in both val_records and test_records")
            fixed[rec] = code
    if "val_records" in extra and "test_records" in extra:
        return {n: fixed.get(n, 0) for n in names}
    if not ("val_records" in extra or "test_records" in extra):
        codes = split_codes_random(len(names), options.val_fraction, options.test_fraction, options.split_seed)
        return dict(zip(names, (int(c) for c in codes)))
    # One split named: draw the other from the remaining records.
    missing_code, fraction = (1, options.val_fraction) if "val_records" not in extra else (2, options.test_fraction)
    if not 0 <= fraction < 1:
        raise ConfigError(f"{spec}: split fraction {fraction} must be in [0, 1)")
    rest = [n for n in names if n not in fixed]
    k = min(len(rest), int(round(len(names) * fraction)))
    chosen = set(np.random.default_rng(options.split_seed).permutation(len(rest))[:k].tolist())
    out = {n: fixed.get(n, 0) for n in names}
    for j, n in enumerate(rest):
        if j in chosen:
            out[n] = missing_code
    return out


# -- source ---------------------------------------------------------------------------------------

def _choose_records(path: Path, options: LoadOptions, extra: dict[str, str], spec: str
                    ) -> tuple[Path, list[str], dict[str, int], list[str]]:
    """``(folder, records to read, split code per record, records left out by the protocol)``."""
    folder, names = _record_paths(path, spec)
    if "records" in extra:
        wanted = parse_list(extra["records"])
        unknown = [r for r in wanted if r not in names]
        if unknown or not wanted:
            raise ConfigError(f"{spec}: records={extra['records']!r}: unknown record(s) {unknown}; "
                              f"available: {', '.join(names)}")
        names = [n for n in names if n in wanted]
    if split_mode(extra, spec) == "records":
        return folder, names, _record_splits(names, options, extra, spec), []
    split_of = inter_patient_splits(names, options, extra, spec)
    return folder, [n for n in names if n in split_of], split_of, [n for n in names if n not in split_of]


def _read_beats(folder: Path, names: list[str], lead: str, split_of: dict[str, int], spec: str) -> dict:
    """Beats, labels, records, R peaks, auxiliary features (RR, QRS) and split codes of the records, concatenated."""
    parts: dict[str, list] = {k: [] for k in ("beats", "labels", "records", "peaks", "aux", "splits")}
    digests, native_fs = {}, set()
    for name in names:
        signal, fs, samples, symbols, files = _read_record(folder, name, lead, spec)
        native_fs.add(fs)
        beats, labels, peaks = cut_beats(signal, fs, samples, symbols, name=name, spec=spec)
        digests[name] = files
        all_peaks = qrs_samples(samples, symbols)
        aux = np.concatenate([rr_features(all_peaks, fs, peaks), qrs_features(signal, fs, all_peaks, peaks)], axis=1)
        for key, value in (("beats", beats), ("labels", labels), ("peaks", peaks), ("aux", aux),
                           ("records", np.full(len(beats), name, dtype=object)),
                           ("splits", np.full(len(beats), split_of[name], dtype=np.uint8))):
            parts[key].append(value)
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    return out | {"digests": digests, "native_fs": sorted(native_fs)}


def load_wfdb_beats(spec: str, options: LoadOptions) -> BeatSignalSet:
    """Load WFDB records (folder or one record) as 187-sample AAMI-labelled beats; see the module docstring."""
    extra = options.take_extra(_EXTRA, "WFDB records")
    require_one_channel(options.channels, spec)
    lead = extra.get("lead", DEFAULT_LEAD).strip() or DEFAULT_LEAD
    path = Path(spec)
    if path.is_file() and path.suffix != ".hea":
        path = path.with_suffix(".hea")
    target = expand_resolution(options.resolution, 1, spec)
    folder, names, split_of, excluded = _choose_records(path, options, extra, spec)
    read = _read_beats(folder, names, lead, split_of, spec)
    if len(read["beats"]) == 0:
        raise DataError(f"{spec}: no beat annotations ({' '.join(sorted(SYMBOL_TO_LABEL))}) in the records read")
    data = read["beats"][:, None, :]
    if target is not None and target != (BEAT_SAMPLES,):
        data = resize_signals(data, target)
    labels, splits = read["labels"].astype(np.int64), read["splits"].astype(np.uint8)
    split_records = {s: [n for n in names if split_of[n] == c] for c, s in enumerate(SPLITS)}
    mode = split_mode(extra, spec)
    protocol = {"split": mode} if mode != "records" else {}  # record-level fingerprints stay as they were
    fingerprint = make_fingerprint(
        "wfdb-beats/1", files=read["digests"], lead=lead, length=int(data.shape[-1]), records=split_records,
        splits=array_digest(splits), **protocol)
    counts = np.bincount(labels, minlength=len(AAMI_CLASSES))
    fs = read["native_fs"]
    name = folder.name if path.is_dir() else f"{folder.name}-{names[0]}"
    return BeatSignalSet(
        data, records=read["records"].astype(str), r_peaks=read["peaks"], name=name or "wfdb", spec=spec,
        splits=splits, labels=labels[:, None], task="multi-class",
        label_names={str(i): c for i, c in enumerate(AAMI_CLASSES)}, fingerprint=fingerprint,
        aux=read["aux"], aux_names=RR_NAMES + QRS_NAMES,
        info={"source": "wfdb", "folder": str(folder), "lead": lead, "annotator": ANNOTATOR,
              "native_sampling_rate_hz": fs[0] if len(fs) == 1 else fs,
              "sampling_rate_hz": TARGET_FS, "window_s": WINDOW_SECONDS, "beat_samples": BEAT_SAMPLES,
              "length": int(data.shape[-1]), "split": mode, "records": split_records,
              "excluded_records": excluded,
              "class_counts": {c: int(n) for c, n in zip(AAMI_CLASSES, counts)},
              "method": "Kachuee et al. 2018 (annotated R peaks, 1.2 x median R-R, zero-padded)",
              "rr_features": "from all annotated beats of each record, in seconds (funcml.data.sources.rr)",
              "qrs_features": "QRS width and area on the lead at its native rate (funcml.data.sources.qrs)"},
    )


def _is_wfdb(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix == ".hea" and p.is_file() for p in path.iterdir() if not p.name.startswith("."))
    if path.suffix == ".hea":
        return True
    return path.suffix in (".dat", ".atr") and path.with_suffix(".hea").is_file()


register_source(SourceKind(
    name="wfdb",
    description="WFDB records with beat annotations, e.g. MIT-BIH (folder of NAME.hea/.dat/.atr, or one .hea)",
    detect=_is_wfdb,
    load=load_wfdb_beats,
))
