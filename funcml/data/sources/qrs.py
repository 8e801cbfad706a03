"""QRS-complex features of annotated heartbeats: how wide and how large a beat's QRS is, against the patient's own.

A ventricular ectopic beat (AAMI class V) starts in the ventricles and spreads slowly, so its QRS is
wide and large; a beat window that begins at the R peak sees only half of it. These features are
measured on the record's lead at its native rate, around each annotated R peak, and normalised by
the record's own median beat, the way :mod:`funcml.data.sources.rr` normalises the intervals
(de Chazal et al. 2004 use QRS duration beside the RR intervals). Per beat, two groups:
``qrs_s`` in physical units,

``qrs_s.width``   the QRS duration in seconds: (last - first) / fs, where first and last are the
                  first and the last slope step in the search window (R - 100 ms ... R + 130 ms,
                  both ends included) whose absolute slope exceeds 20 % of the largest one there;
                  the slope is that of the lead smoothed by a moving average over round(8 ms * fs)
                  samples (so a triangle 2h samples wide measures 2h - 1 samples unsmoothed);
``qrs_s.area``    the absolute area between the lead and the beat's baseline over the search
                  window, sum(|x - baseline|) / fs, in the signal's units times seconds (mV s for
                  MIT-BIH); the baseline is the median of the lead over R - 150 ms ... R - 100 ms
                  (the PR segment, end excluded);

and ``qrs``, relative to the patient's own beats (what a classifier for unseen patients takes):

``qrs.width_lognorm``  log(width / the median width of every annotated beat of the record);
``qrs.area_lognorm``   log(area / the median area of every annotated beat of the record).

Logarithms, so that a beat twice as wide as the patient's typical one lies as far from 0 as one half
as wide. In the logarithms, widths below one sample and areas below 1e-6 count as those floors, so a
flat stretch of signal gives finite features (``qrs_s`` keeps the measured 0). Near a record's ends
the lead is extended with its first and last sample; annotations outside the signal are left out
of the record's medians.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

QRS_NAMES: tuple[str, ...] = ("qrs_s.width", "qrs_s.area", "qrs.width_lognorm", "qrs.area_lognorm")
BASELINE_S = (-0.150, -0.100)  # the PR segment before the QRS, in seconds from the R peak
SEARCH_S = (-0.100, 0.130)     # where the QRS complex lies, in seconds from the R peak
SMOOTH_S = 0.008
SLOPE_FRACTION = 0.2
AREA_FLOOR = 1e-6


def _windows(signal: np.ndarray, fs: float, peaks: np.ndarray) -> tuple[np.ndarray, int]:
    """The lead from R - 150 ms to R + 130 ms at every peak, ``(B, W)``, and the search window's first column."""
    start = int(round(BASELINE_S[0] * fs))
    split = int(round(BASELINE_S[1] * fs)) - start
    stop = int(round(SEARCH_S[1] * fs))
    pad = max(-start, stop) + 1
    padded = np.pad(np.asarray(signal, dtype=np.float64), pad, mode="edge")
    cols = np.arange(start, stop + 1)
    return padded[np.asarray(peaks, dtype=np.int64)[:, None] + pad + cols[None, :]], split


def qrs_measures(signal: np.ndarray, fs: float, peaks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(width (B,) seconds, area (B,) units x s)`` of the QRS complexes at ``peaks (B,)`` (samples at ``fs`` Hz,
    each inside the signal)."""
    if len(peaks) == 0:
        return np.zeros(0), np.zeros(0)
    if np.min(peaks) < 0 or np.max(peaks) >= len(signal):
        raise ValueError(f"R peaks must lie in the signal (0 ... {len(signal) - 1}); got {np.min(peaks)} ... "
                         f"{np.max(peaks)}")
    win, split = _windows(signal, fs, peaks)
    baseline = np.median(win[:, :split], axis=1, keepdims=True)
    search = win[:, split:] - baseline
    smooth = uniform_filter1d(search, max(1, int(round(SMOOTH_S * fs))), axis=1, mode="nearest")
    slope = np.abs(np.diff(smooth, axis=1))
    above = slope > SLOPE_FRACTION * slope.max(axis=1, keepdims=True)
    first = above.argmax(axis=1)
    last = slope.shape[1] - 1 - above[:, ::-1].argmax(axis=1)
    width = np.where(above.any(axis=1), last - first, 0) / fs
    area = np.abs(search).sum(axis=1) / fs
    return width, area


def qrs_features(signal: np.ndarray, fs: float, all_peaks: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """QRS features ``(B, 4)`` float32 (columns :data:`QRS_NAMES`) of the beats at ``peaks (B,)``.

    ``signal (T,)`` is the lead at ``fs`` Hz; ``all_peaks (M,)`` the R peaks of every annotated beat of
    the record (the medians that normalise come from them). See the module docstring.
    """
    if len(peaks) == 0:
        return np.zeros((0, len(QRS_NAMES)), dtype=np.float32)
    all_peaks = np.asarray(all_peaks)
    inside = all_peaks[(all_peaks >= 0) & (all_peaks < len(signal))]
    points = np.union1d(inside, peaks)  # each QRS measured once: the beats are (mostly) among all_peaks
    width, area = qrs_measures(signal, fs, points)
    ref = np.searchsorted(points, inside if len(inside) else peaks)
    mine = np.searchsorted(points, peaks)
    floor_w = 1.0 / fs
    ref_w = max(float(np.median(width[ref])), floor_w)
    ref_a = max(float(np.median(area[ref])), AREA_FLOOR)
    w, a = width[mine], area[mine]
    return np.stack([w, a, np.log(np.maximum(w, floor_w) / ref_w), np.log(np.maximum(a, AREA_FLOOR) / ref_a)],
                    axis=1).astype(np.float32)
