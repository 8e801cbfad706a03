"""WFDB (MIT-BIH style) beats and UCR text files, on small synthetic files with known content."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import wfdb

from funcml.data import LoadOptions, detect_source, load_signals
from funcml.data.sources.mitbih import AAMI_SYMBOLS, BeatSignalSet
from funcml.errors import ConfigError, DataError

# wfdb 4.3 calls pandas with arguments pandas 3 deprecates (writing records in these tests).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wfdb")

FS = 360
# Beat symbols cycled through the synthetic record, with their AAMI class index (N S V F Q = 0..4).
SYMBOLS = ["N", "L", "A", "V", "F", "/", "Q", "R", "e", "j", "a", "J", "S", "E", "f"]
AAMI_INDEX = {"N": 0, "S": 1, "V": 2, "F": 3, "Q": 4}


def beat_positions() -> np.ndarray:
    """R peaks (360 Hz samples, all multiples of 72 so they land exactly on 125 Hz samples).

    Windows 0-2 (0-30 s): R-R 288 samples = 100 at 125 Hz; windows 3-4 (30-50 s): 360 = 125 at 125 Hz.
    """
    first = np.arange(144, 3 * 3600, 288)
    second = np.arange(3 * 3600 + 144, 5 * 3600 - 100, 360)
    return np.concatenate([first, second])


def write_record(folder, name="100", *, leads=("MLII", "V1"), seconds=50, positions=None, symbols=None,
                 extra_annotations=True):
    """Write a WFDB record (format 212, 360 Hz) with Gaussian R waves at known positions and its .atr."""
    positions = beat_positions() if positions is None else np.asarray(positions)
    if symbols is None:
        symbols = [SYMBOLS[i % len(SYMBOLS)] for i in range(len(positions))]
    n = FS * seconds
    t = np.arange(n)
    sig = 0.2 + 0.1 * np.sin(2 * np.pi * t / (FS * 7.3))
    for p in positions:
        sig = sig + 1.0 * np.exp(-0.5 * ((t - p) / 4.0) ** 2)
    p_signal = np.stack([sig] + [0.5 * sig] * (len(leads) - 1), axis=1)
    wfdb.wrsamp(name, fs=FS, units=["mV"] * len(leads), sig_name=list(leads), p_signal=p_signal,
                fmt=["212"] * len(leads), adc_gain=[200.0] * len(leads), baseline=[1024] * len(leads),
                write_dir=str(folder))
    samples, syms = list(positions), list(symbols)
    if extra_annotations:  # rhythm change, noise and flutter-wave annotations: not beats
        samples += [0, 5000, 7000]
        syms += ["+", "~", "!"]
    order = np.argsort(samples, kind="stable")
    wfdb.wrann(name, "atr", np.asarray(samples)[order], symbol=[syms[i] for i in order], write_dir=str(folder))
    return positions, symbols


@pytest.fixture()
def record_dir(tmp_path):
    folder = tmp_path / "ecg"
    folder.mkdir()
    positions, symbols = write_record(folder)
    return folder, positions, symbols


def test_beats_count_labels_shape_and_r_peak(record_dir):
    folder, positions, symbols = record_dir
    ds = load_signals(folder)
    assert detect_source(str(folder)).name == "wfdb"
    assert isinstance(ds, BeatSignalSet)
    assert len(ds) == len(positions)  # the 3 non-beat annotations are skipped
    assert ds.signal_shape == (1, 187)
    assert ds.task == "multi-class"
    assert ds.label_names == {"0": "N", "1": "S", "2": "V", "3": "F", "4": "Q"}
    expected = [AAMI_INDEX[AAMI_SYMBOLS[s]] for s in symbols]
    assert ds.labels[:, 0].tolist() == expected
    assert set(ds.labels[:, 0].tolist()) == {0, 1, 2, 3, 4}
    assert ds.records.tolist() == ["100"] * len(positions)
    assert ds.r_peaks.tolist() == positions.tolist()
    x = ds.get(np.arange(len(ds)))[:, 0]
    assert x.min() >= 0.0 and x.max() <= 1.0
    # Sample 0 of each beat is its R peak: the local maximum, near the top of the normalised window.
    assert (x[:, 0] > 0.8).all()
    assert (x[:, 0] > x[:, 1]).all()
    assert ds.info["sampling_rate_hz"] == 125 and ds.info["records"]["train"] == ["100"]


def test_beat_length_follows_window_median_rr(record_dir):
    folder, positions, _ = record_dir
    ds = load_signals(folder)
    x = ds.get(np.arange(len(ds)))[:, 0]
    r125 = positions * 125 // 360
    for beat, r in zip(x, r125):
        window_end = (r // 1250 + 1) * 1250
        rr = 100 if r < 3 * 1250 else 125  # median R-R of the window, at 125 Hz
        length = min(int(round(1.2 * rr)), window_end - r)  # 1.2 x median R-R, cut at the window's end
        assert (beat[length:] == 0).all(), (r, length)
        assert (beat[:length] > 0).sum() >= length - 1  # only the window minimum itself can be exactly 0


def test_single_record_path_and_resolution(record_dir):
    folder, positions, _ = record_dir
    ds = load_signals(folder / "100.hea", resolution=100)
    assert ds.signal_shape == (1, 100) and len(ds) == len(positions)
    assert ds.get([0]).max() <= 1.0
    assert load_signals(folder / "100.dat").signal_shape == (1, 187)
    assert ds.fingerprint != load_signals(folder).fingerprint


def test_record_level_splits(tmp_path):
    names = ["101", "102", "103", "104", "105", "106"]
    for name in names:
        write_record(tmp_path, name, seconds=20, positions=np.arange(144, 20 * FS - 100, 288))
    ds = load_signals(tmp_path, extra={"val_records": "102", "test_records": "104,106"})
    for rec, code in {"101": 0, "102": 1, "103": 0, "104": 2, "105": 0, "106": 2}.items():
        assert set(ds.splits[ds.records == rec].tolist()) == {code}
    assert ds.info["records"] == {"train": ["101", "103", "105"], "val": ["102"], "test": ["104", "106"]}

    # Default: seeded choice of whole records, deterministic, no record in two splits.
    opts = dict(val_fraction=0.2, test_fraction=0.3)
    a, b = load_signals(tmp_path, split_seed=1, **opts), load_signals(tmp_path, split_seed=1, **opts)
    assert np.array_equal(a.splits, b.splits) and a.fingerprint == b.fingerprint
    assert [len(a.info["records"][s]) for s in ("train", "val", "test")] == [3, 1, 2]
    for rec in names:
        assert len(set(a.splits[a.records == rec].tolist())) == 1
    seeds = {tuple(load_signals(tmp_path, split_seed=s, **opts).info["records"]["test"]) for s in range(6)}
    assert len(seeds) > 1
    c = load_signals(tmp_path, split_seed=2, **opts)
    if c.info["records"] != a.info["records"]:
        assert c.fingerprint != a.fingerprint

    # Only test records named: val drawn from the others.
    d = load_signals(tmp_path, val_fraction=0.2, extra={"test_records": "101"})
    assert d.info["records"]["test"] == ["101"] and len(d.info["records"]["val"]) == 1
    assert "101" not in d.info["records"]["val"]
    sub = load_signals(tmp_path, extra={"records": "101,103"})
    assert sorted(set(sub.records.tolist())) == ["101", "103"]

    with pytest.raises(ConfigError, match="999"):
        load_signals(tmp_path, extra={"test_records": "999"})
    with pytest.raises(ConfigError, match="both"):
        load_signals(tmp_path, extra={"val_records": "101", "test_records": "101"})
    with pytest.raises(ConfigError, match="does not understand"):
        load_signals(tmp_path, extra={"colour": "red"})


def test_missing_lead_is_a_clear_error(tmp_path):
    write_record(tmp_path, "200", leads=("V1", "V5"), seconds=12, positions=[720, 1008])
    with pytest.raises(DataError, match=r"no lead 'MLII' \(its leads: V1, V5\)"):
        load_signals(tmp_path)
    ds = load_signals(tmp_path, extra={"lead": "V5"})
    assert len(ds) == 2


def test_truncated_dat(record_dir):
    folder, _, _ = record_dir
    dat = folder / "100.dat"
    dat.write_bytes(dat.read_bytes()[: dat.stat().st_size // 2])
    with pytest.raises(DataError, match="100"):
        load_signals(folder)


def test_truncated_dat_even_bytes(record_dir):
    folder, _, _ = record_dir
    dat = folder / "100.dat"
    dat.write_bytes(dat.read_bytes()[:3000])  # a whole number of 212 frames
    with pytest.raises(DataError, match="truncated"):
        load_signals(folder)


def test_header_pointing_at_missing_file(record_dir):
    folder, _, _ = record_dir
    hea = folder / "100.hea"
    hea.write_text(hea.read_text().replace("100.dat", "gone.dat"))
    with pytest.raises(DataError, match="gone.dat"):
        load_signals(folder)


def test_files_outside_the_folder_are_refused(record_dir, tmp_path):
    folder, _, _ = record_dir
    outside = tmp_path / "outside.dat"
    outside.write_bytes((folder / "100.dat").read_bytes())
    (folder / "100.dat").unlink()
    (folder / "100.dat").symlink_to(outside)
    with pytest.raises(DataError, match="symbolic link"):
        load_signals(folder)
    (folder / "100.dat").unlink()
    hea = folder / "100.hea"
    hea.write_text(hea.read_text().replace("100.dat", "../outside.dat"))
    with pytest.raises(DataError, match="100.hea"):  # wfdb's header syntax already refuses paths
        load_signals(folder)


def test_missing_annotations_and_corrupt_header(record_dir):
    folder, _, _ = record_dir
    (folder / "100.atr").unlink()
    with pytest.raises(DataError, match="annotation"):
        load_signals(folder)
    (folder / "100.atr").write_bytes(b"\x01")
    with pytest.raises(DataError):
        load_signals(folder)
    (folder / "100.hea").write_text("this is not a header\n")
    with pytest.raises(DataError, match="100"):
        load_signals(folder)


def test_no_beats(tmp_path):
    write_record(tmp_path, "300", seconds=12, positions=[], symbols=[])
    with pytest.raises(DataError, match="no beat annotations"):
        load_signals(tmp_path)


# -- UCR ------------------------------------------------------------------------------------------

def test_ucr_values_labels_and_scaling(tmp_path):
    f = tmp_path / "toy_TRAIN.tsv"
    f.write_text("2\t1\t2\t3\t5\n1\t-1\t-1\t1\t3\n2.0\t4\t4\t4\t4\n5\t0\t10\t5\t0\n")
    assert detect_source(str(f)).name == "ucr"
    ds = load_signals(f, val_fraction=0.0, test_fraction=0.0)
    assert ds.signal_shape == (1, 4) and len(ds) == 4
    assert ds.labels[:, 0].tolist() == [1, 0, 1, 2]
    assert ds.label_names == {"0": "1", "1": "2", "2": "5"}
    assert ds.task == "multi-class"
    x = ds.get(np.arange(4))[:, 0]
    np.testing.assert_allclose(x[0], [0, 0.25, 0.5, 1.0])
    np.testing.assert_allclose(x[1], [0, 0, 0.5, 1.0])
    np.testing.assert_allclose(x[2], [0, 0, 0, 0])  # constant series
    np.testing.assert_allclose(x[3], [0, 1, 0.5, 0])
    g = load_signals(f, val_fraction=0.0, test_fraction=0.0, extra={"scaling": "global"})
    np.testing.assert_allclose(g.get([1])[0, 0], [0, 0, 2 / 11, 4 / 11], rtol=1e-6)
    assert g.fingerprint != ds.fingerprint
    assert load_signals(f, resolution=8).signal_shape == (1, 8)


def test_ucr_separators_binary_and_split(tmp_path):
    f = tmp_path / "toy.csv"
    rows = [f"{(-1) ** i},{i},{i + 1},{i * 2 % 5}" for i in range(50)]
    f.write_text("\n".join(rows) + "\n")
    ds = load_signals(f, split_seed=3)
    assert ds.task == "binary-class" and ds.label_names == {"0": "-1", "1": "1"}
    assert ds.describe()["splits"] == {"train": 35, "val": 5, "test": 10}
    assert not np.array_equal(ds.splits, load_signals(f, split_seed=4).splits)
    space = tmp_path / "toy.txt"
    space.write_text("\n".join(r.replace(",", "   ") for r in rows))
    assert np.array_equal(load_signals(space, split_seed=3).get(range(50)), ds.get(range(50)))


def test_ucr_nan(tmp_path):
    f = tmp_path / "nan.txt"
    f.write_text("1 0.5 NaN 2\n2 1 2 3\n")
    with pytest.raises(DataError, match="line 1, value 2"):
        load_signals(f)
    f.write_text("1 1 2 3\n2 1 2 NaN\n")
    with pytest.raises(DataError, match="line 2.*variable-length"):
        load_signals(f)
    # The same NaN padding on every row is dropped.
    f.write_text("1 1 2 3 NaN NaN\n2 3 2 1 NaN NaN\n")
    ds = load_signals(f)
    assert ds.signal_shape == (1, 3) and ds.info["trimmed_columns"] == 2


def test_ucr_malformed(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_text("1 1 2 3\n2 1 2\n")
    with pytest.raises(DataError, match="line 2 has 2 values"):
        load_signals(f)
    f.write_text("1 1 2 3\n2 1 two 3\n")
    with pytest.raises(DataError, match="'two' is not a number"):
        load_signals(f)
    f.write_text("1 1 2 inf\n")
    with pytest.raises(DataError, match="NaN/Inf"):
        load_signals(f)
    with pytest.raises(ConfigError):
        load_signals(f, channels=3)
    header = tmp_path / "header.csv"
    header.write_text("label,a,b\n1,2,3\n")
    with pytest.raises(DataError, match="cannot tell"):
        load_signals(header)
    with pytest.raises(ConfigError):
        load_signals(tmp_path / "bad.txt", options=LoadOptions(extra={"scaling": "zscore"}))
