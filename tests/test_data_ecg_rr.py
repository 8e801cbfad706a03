"""RR-interval features of WFDB beats and the inter-patient (DS1/DS2) protocol, on small synthetic records."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from funcml.data import load_signals
from funcml.data.sources.ecg_protocol import DS1, DS2
from funcml.data.sources.rr import RR_NAMES, rr_features
from funcml.errors import ConfigError, DataError, DataWarning
from test_data_ecg import FS, beat_positions, write_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wfdb")


def col(ds_or_aux, name):
    aux = ds_or_aux.aux if hasattr(ds_or_aux, "aux") else ds_or_aux
    return aux[:, RR_NAMES.index(name)]


def test_rr_features_known_intervals(tmp_path):
    # Beats every 0.8 s for 30 s, then every 1.0 s (beat_positions); the first and last beat are edges.
    positions = beat_positions()
    write_record(tmp_path, "100", positions=positions)
    ds = load_signals(tmp_path)
    assert ds.aux_names[:8] == RR_NAMES and ds.aux.shape == (len(ds), 12) and ds.aux.dtype == np.float32
    rr = np.diff(positions) / FS
    np.testing.assert_allclose(col(ds, "rr_s.pre")[1:], rr, rtol=1e-6)
    np.testing.assert_allclose(col(ds, "rr_s.post")[:-1], rr, rtol=1e-6)
    # Edges: the nearest interval available, flagged.
    assert col(ds, "rr_s.pre")[0] == pytest.approx(rr[0]) and col(ds, "rr_s.post")[-1] == pytest.approx(rr[-1])
    assert col(ds, "rr.edge").tolist() == [1.0] + [0.0] * (len(ds) - 2) + [1.0]
    record = rr.mean()
    np.testing.assert_allclose(col(ds, "rr_s.record"), record, rtol=1e-6)
    np.testing.assert_allclose(col(ds, "rr.pre_norm"), col(ds, "rr_s.pre") / record, rtol=1e-6)
    # Local mean over the intervals of beats i-10..i+10: 0.8 s deep in the first part, 1.0 s deep in the second.
    local = col(ds, "rr_s.local")
    assert local[15] == pytest.approx(0.8) and local[-5] == pytest.approx(1.0)
    i = 3  # near the start: the intervals of beats 0..13
    assert local[i] == pytest.approx(rr[0:13].mean())
    np.testing.assert_allclose(col(ds, "rr.local_norm"), local / record, rtol=1e-6)


def test_rr_counts_beats_of_every_class_and_skips_non_beats(tmp_path):
    # Every other beat is 'B' or '?' (QRS complexes outside the kept AAMI classes): they are not cut as
    # beats, but the kept beats' intervals are still the true 0.8 s, not 1.6 s.
    positions = np.arange(144, 40 * FS, 288)
    symbols = ["N" if k % 2 == 0 else ("B" if k % 4 == 1 else "?") for k in range(len(positions))]
    write_record(tmp_path, "100", seconds=41, positions=positions, symbols=symbols)
    ds = load_signals(tmp_path)
    assert len(ds) == (len(positions) + 1) // 2
    np.testing.assert_allclose(col(ds, "rr_s.pre")[1:], 0.8, rtol=1e-6)
    np.testing.assert_allclose(col(ds, "rr_s.post"), 0.8, rtol=1e-6)
    assert col(ds, "rr.edge")[-1] == 0.0  # the last kept beat is not the record's last beat
    # Rhythm / noise annotations ('+', '~', '!') written by write_record are not intervals either.
    np.testing.assert_allclose(col(ds, "rr_s.record"), 0.8, rtol=1e-6)


def test_rr_features_of_degenerate_records():
    one = rr_features(np.array([500]), 360.0, np.array([500]))
    assert np.isnan(one[0, :7]).all() and one[0, 7] == 1.0  # no interval: undefined, flagged
    two = rr_features(np.array([0, 360]), 360.0, np.array([0, 360]))
    np.testing.assert_allclose(two[:, :4], 1.0)
    np.testing.assert_allclose(two[:, 4:7], 1.0)
    assert two[:, 7].tolist() == [1.0, 1.0]
    assert rr_features(np.array([0, 360]), 360.0, np.array([], dtype=np.int64)).shape == (0, 8)


# -- the inter-patient protocol -------------------------------------------------------------------

def _folder(tmp_path, names, paced=()):
    for name in names:
        write_record(tmp_path, name, seconds=12, positions=np.arange(144, 12 * FS - 100, 288))
    for name in paced:  # paced records of MIT-BIH have no MLII lead: reading one would fail
        write_record(tmp_path, name, leads=("V5", "V2"), seconds=12, positions=[720, 1008])
    return tmp_path


def _load(folder, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        ds = load_signals(folder, **kwargs)
    return ds, [str(w.message) for w in caught if issubclass(w.category, DataWarning)]


def test_inter_patient_split_uses_ds1_for_training_and_ds2_for_test(tmp_path):
    folder = _folder(tmp_path, ["101", "106", "108", "109", "100", "103", "999"], paced=["102", "217"])
    ds, notes = _load(folder, val_fraction=0.25, split_seed=3, extra={"split": "inter-patient"})
    records = ds.info["records"]
    assert records["test"] == ["100", "103"]
    assert sorted(records["train"] + records["val"]) == ["101", "106", "108", "109"] and len(records["val"]) == 1
    assert ds.info["excluded_records"] == ["102", "217", "999"] and ds.info["split"] == "inter-patient"
    assert set(ds.records.tolist()) == {"100", "101", "103", "106", "108", "109"}
    for rec in set(ds.records.tolist()):
        assert len(set(ds.splits[ds.records == rec].tolist())) == 1
    assert set(ds.splits[np.isin(ds.records, ["100", "103"])].tolist()) == {2}
    # The missing DS1 and DS2 records are named.
    missing2 = [r for r in DS2 if r not in ("100", "103")]
    assert len(notes) == 2 and ", ".join(missing2) in notes[0] and "2 of 22 DS2" in notes[0]
    assert ", ".join(r for r in DS1 if r not in ("101", "106", "108", "109")) in notes[1]
    # Named val records; a different protocol is a different data fingerprint.
    named, _ = _load(folder, extra={"split": "inter-patient", "val_records": "108"})
    assert named.info["records"]["val"] == ["108"]
    plain = load_signals(folder, extra={"records": "100,101,103,106,108,109"})
    assert plain.fingerprint != ds.fingerprint and "excluded_records" in plain.info


def test_inter_patient_with_ds1_only_warns_that_the_test_split_is_empty(tmp_path):
    folder = _folder(tmp_path, ["101", "106"])
    ds, notes = _load(folder, extra={"split": "inter-patient"})
    assert ds.describe()["splits"]["test"] == 0 and len(ds) > 0
    assert "the test split is empty" in notes[0] and ", ".join(DS2) in notes[0]
    with pytest.raises(ConfigError, match="test_records"):
        load_signals(folder, extra={"split": "inter-patient", "test_records": "101"})
    with pytest.raises(ConfigError, match="val_records"):
        load_signals(folder, extra={"split": "inter-patient", "val_records": "100"})
    with pytest.raises(ConfigError, match="split"):
        load_signals(folder, extra={"split": "by-beat"})


def test_inter_patient_without_any_protocol_record_is_an_error(tmp_path):
    folder = _folder(tmp_path, ["999"], paced=["104"])
    with pytest.raises(DataError, match="none of the MIT-BIH DS1/DS2 records"):
        load_signals(folder, extra={"split": "inter-patient"})


def test_shared_ds1_inter_patient_names_the_missing_ds2_records(shared_data):
    ds, notes = _load(shared_data / "ecg" / "mitdb-ds1", extra={"split": "inter-patient"})
    assert sorted(ds.info["records"]["train"] + ds.info["records"]["val"]) == sorted(DS1)
    assert ds.info["records"]["test"] == [] and len(notes) == 1 and ", ".join(DS2) in notes[0]
    # S beats come early against the patient's rhythm, V beats early with a long pause after them.
    y, pre, post = ds.labels[:, 0], col(ds, "rr.pre_norm"), col(ds, "rr.post_norm")
    assert np.median(pre[y == 1]) < 0.8 < np.median(pre[y == 0])
    assert np.median(post[y == 2]) > 1.1 > np.median(post[y == 0])
