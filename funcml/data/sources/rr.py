"""RR-interval features of annotated heartbeats (the timing that tells an early beat from a normal one).

Per beat i of a record, from the R peaks of **all** annotated beats of that record (every WFDB QRS
symbol in :data:`QRS_SYMBOLS`, whether or not the beat's class is kept). Two groups: ``rr_s``, in
seconds,

``rr_s.pre``      R(i) - R(i-1), the interval before the beat;
``rr_s.post``     R(i+1) - R(i), the interval after it;
``rr_s.local``    the mean of the intervals between the beats i-10 .. i+10 (up to 20 intervals,
                  fewer near the record's ends);
``rr_s.record``   the mean interval of the whole record;

and ``rr``, relative to the patient's own rhythm (de Chazal et al. 2004, Mondéjar-Guerra et al. 2019):

``rr.pre_norm``, ``rr.post_norm``, ``rr.local_norm``: the first three divided by ``rr_s.record``;
``rr.edge``       1 for the first and the last beat of a record, else 0.

``rr`` is what a classifier meant for unseen patients takes: intervals in seconds, and above all the
record's mean, also tell one patient from another, and a model trained on a few patients learns
who they are instead of what an early beat is (benchmarks/ecg_rr.py measures both).

Edge rule: the first beat has no interval before it, so its ``rr_s.pre`` is its ``rr_s.post``; the
last beat's ``rr_s.post`` is its ``rr_s.pre`` (the nearest interval available); ``rr.edge`` marks
both. A record with a single annotated beat has no interval at all: its features are NaN
(classifiers that use RR features refuse such rows with a message).
"""

from __future__ import annotations

import numpy as np

# WFDB annotation codes that mark a QRS complex (a beat); the others are rhythm, noise, comments ...
QRS_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ?")
RR_NAMES: tuple[str, ...] = ("rr_s.pre", "rr_s.post", "rr_s.local", "rr_s.record", "rr.pre_norm", "rr.post_norm",
                             "rr.local_norm", "rr.edge")
LOCAL_BEATS = 10


def qrs_samples(samples: np.ndarray, symbols: list[str]) -> np.ndarray:
    """Sorted R-peak samples ``(M,)`` of every annotated beat (all QRS symbols, kept classes or not)."""
    keep = np.array([s in QRS_SYMBOLS for s in symbols], dtype=bool)
    return np.sort(np.asarray(samples, dtype=np.int64)[keep], kind="stable")


def rr_features(all_peaks: np.ndarray, fs: float, peaks: np.ndarray) -> np.ndarray:
    """RR features ``(B, 8)`` float32 (columns :data:`RR_NAMES`) of the beats at ``peaks (B,)``.

    ``all_peaks (M,)``: sorted R-peak samples of every beat of the record at ``fs`` Hz; each of
    ``peaks`` must be one of them. See the module docstring for the definitions.
    """
    out = np.full((len(peaks), len(RR_NAMES)), np.nan, dtype=np.float32)
    m = len(all_peaks)
    if m < 2 or len(peaks) == 0:
        if len(peaks):
            out[:, -1] = 1.0
        return out
    rr = np.diff(all_peaks).astype(np.float64) / fs  # (M-1,) interval j lies between beats j and j+1
    pre = np.concatenate([rr[:1], rr])                # first beat: its post interval
    post = np.concatenate([rr, rr[-1:]])              # last beat: its pre interval
    csum = np.concatenate([[0.0], np.cumsum(rr)])
    i = np.arange(m)
    lo, hi = np.maximum(i - LOCAL_BEATS, 0), np.minimum(i + LOCAL_BEATS, m - 1)
    local = (csum[hi] - csum[lo]) / (hi - lo)
    record = float(rr.mean())
    edge = ((i == 0) | (i == m - 1)).astype(np.float64)
    where = np.clip(np.searchsorted(all_peaks, peaks), 0, m - 1)
    full = np.stack([pre, post, local, np.full(m, record), pre / record, post / record, local / record, edge], 1)
    if record <= 0:  # every beat annotated at one sample: no rhythm to normalise by
        full[:, 4:7] = np.nan
    out[:] = full[where]
    return out
