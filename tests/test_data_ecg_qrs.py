"""QRS width and area features of WFDB beats, with known answers on triangular QRS complexes."""

from __future__ import annotations

import numpy as np
import pytest

from funcml.data import load_signals
from funcml.data.sources.qrs import QRS_NAMES, qrs_features, qrs_measures
from funcml.data.sources.rr import RR_NAMES
from test_data_ecg import FS, write_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wfdb")


def triangles(n: int, peaks, halves, height: float = 1.0, offset: float = 0.3) -> np.ndarray:
    """A lead ``(n,)`` at a constant ``offset`` with a triangle of base ``2 * half`` samples at each peak."""
    t = np.arange(n)
    lead = np.full(n, offset)
    for p, half in zip(peaks, halves):
        lead += height * np.clip(1 - np.abs(t - p) / half, 0, None)
    return lead


@pytest.mark.parametrize("fs", [360.0, 250.0])
def test_width_and_area_of_triangles(fs):
    halves = [int(round(0.025 * fs)), int(round(0.050 * fs))]  # QRS 50 ms and 100 ms wide
    peaks = [int(fs), int(2 * fs)]
    lead = triangles(3 * int(fs), peaks, halves, height=1.5)
    width, area = qrs_measures(lead, fs, np.array(peaks))
    # 2 * half slope steps, spread by the moving average over k = round(8 ms * fs) samples: the first and
    # the last smoothed step above 20 % of the largest are 2 * half + k - 2 steps apart.
    k = round(0.008 * fs)
    np.testing.assert_allclose(width * fs, [2 * h + k - 2 for h in halves], atol=1e-9)
    # Area between the lead and its baseline (the constant offset): the triangle's, height x half-base.
    np.testing.assert_allclose(area, [1.5 * h / fs for h in halves], rtol=1e-9)


def test_baseline_is_the_median_of_the_pr_segment_and_nothing_outside_the_search_window_counts():
    fs, r = 360.0, 400
    lead = np.full(1000, 0.3)
    lead[r - 54:r - 36] += 0.2  # R - 150 ms ... R - 100 ms: the baseline window, raised by 0.2
    width, area = qrs_measures(lead, fs, np.array([r]))
    n_search = 36 + 47 + 1  # R - 100 ms ... R + 130 ms, both ends included
    assert width[0] == 0.0 and area[0] == pytest.approx(0.2 * n_search / fs)
    # Raising fewer than half of the baseline samples leaves the median, and so the area, unchanged.
    lead = np.full(1000, 0.3)
    lead[r - 54:r - 46] += 5.0
    assert qrs_measures(lead, fs, np.array([r]))[1][0] == pytest.approx(0.0)
    # A deflection entirely after R + 130 ms (a T wave) counts in neither width nor area; one inside does.
    beat = triangles(1000, [r], [9])
    late = beat + triangles(1000, [r + 72], [9], offset=0.0)    # spans R + 175 ... R + 225 ms
    inside = beat + triangles(1000, [r + 36], [9], offset=0.0)  # spans R + 75 ... R + 125 ms
    base = qrs_measures(beat, fs, np.array([r]))
    np.testing.assert_allclose(qrs_measures(late, fs, np.array([r])), base)
    assert qrs_measures(inside, fs, np.array([r]))[0][0] > base[0][0]
    assert qrs_measures(inside, fs, np.array([r]))[1][0] == pytest.approx(2 * base[1][0])


def test_annotations_outside_the_signal_are_left_out_of_the_medians():
    fs, peaks = 360.0, np.arange(1, 11) * 300
    lead = triangles(3600, peaks, [9] * 9 + [18])
    with_outside = np.concatenate([[-5], peaks, [3700]])  # e.g. non-beat QRS symbols past the end
    np.testing.assert_array_equal(qrs_features(lead, fs, with_outside, peaks), qrs_features(lead, fs, peaks, peaks))
    with pytest.raises(ValueError, match="must lie in the signal"):
        qrs_measures(lead, fs, np.array([3600]))


def test_features_are_relative_to_the_records_median_beat():
    fs = 360.0
    peaks = np.arange(1, 11) * 300
    halves = [9] * 9 + [18]  # the last beat twice as wide (and so twice the area) as the others
    lead = triangles(3600, peaks, halves)
    feats = qrs_features(lead, fs, peaks, peaks)
    assert feats.shape == (10, len(QRS_NAMES)) and feats.dtype == np.float32
    col = {n: feats[:, j] for j, n in enumerate(QRS_NAMES)}
    np.testing.assert_allclose(col["qrs.width_lognorm"][:9], 0.0, atol=1e-6)
    np.testing.assert_allclose(col["qrs.area_lognorm"][:9], 0.0, atol=1e-6)
    assert col["qrs.area_lognorm"][9] == pytest.approx(np.log(2), rel=1e-5)
    assert col["qrs.width_lognorm"][9] == pytest.approx(np.log(2), abs=0.12)
    # The normalising medians come from all_peaks: measured against wide beats only, the narrow ones are narrower.
    against_wide = qrs_features(lead, fs, peaks[9:], peaks[:1])
    assert against_wide[0, QRS_NAMES.index("qrs.area_lognorm")] == pytest.approx(-np.log(2), rel=1e-5)


def test_flat_leads_and_beats_at_the_ends_give_finite_features():
    flat = qrs_features(np.zeros(1000), 360.0, np.array([0, 500, 999]), np.array([0, 500, 999]))
    np.testing.assert_array_equal(flat, 0.0)  # no slope: width 0, area 0, both at the floors -> log 1 = 0
    lead = triangles(1000, [0, 500, 999], [9, 9, 9])
    edge = qrs_features(lead, 360.0, np.array([0, 500, 999]), np.array([0, 500, 999]))
    assert np.isfinite(edge).all()
    assert qrs_features(lead, 360.0, np.array([500]), np.array([], dtype=np.int64)).shape == (0, len(QRS_NAMES))


def test_wfdb_source_stores_qrs_features_of_the_lead_at_its_native_rate(tmp_path):
    positions, _ = write_record(tmp_path, "100", seconds=30, positions=np.arange(144, 29 * FS, 288),
                                symbols=None)
    ds = load_signals(tmp_path)
    assert ds.aux_names == RR_NAMES + QRS_NAMES
    import wfdb

    lead = wfdb.rdrecord(str(tmp_path / "100"), channels=[0]).p_signal[:, 0]
    np.testing.assert_allclose(ds.aux[:, len(RR_NAMES):], qrs_features(lead, FS, positions, positions),
                               rtol=1e-5, atol=1e-6)
    # Identical Gaussian R waves: every beat is as wide as the record's median beat; the slow baseline
    # wander of the synthetic lead moves the areas by a few per cent.
    relative = ds.aux[:, len(RR_NAMES) + 2:]
    np.testing.assert_allclose(relative[:, 0], 0.0, atol=1e-6)
    assert np.abs(relative[:, 1]).max() < 0.1
