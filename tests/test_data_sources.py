"""Source detection order, fingerprints, and the real datasets in ../shared/data (skipped when absent)."""

from __future__ import annotations

import time

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from funcml.data import detect_source, load_signals, source_kinds
from test_data_ecg import write_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wfdb")


def test_source_order():
    assert [k.name for k in source_kinds()] == ["medmnist", "wfdb", "ucr", "nifti", "image-folder"]


@pytest.fixture()
def samples(tmp_path):
    """One small file or folder of every kind."""
    out = {}
    (tmp_path / "ecg").mkdir()
    write_record(tmp_path / "ecg", "100", seconds=20, positions=np.arange(144, 20 * 360 - 100, 288))
    out["wfdb"] = tmp_path / "ecg"
    out["ucr"] = tmp_path / "toy_TRAIN.txt"
    out["ucr"].write_text("\n".join(f"{i % 3} {i} {i + 2} {i * 3 % 7} 1" for i in range(20)))
    out["nifti"] = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((6, 6, 6)).astype(np.float32), np.eye(4)), str(out["nifti"]))
    out["npz"] = tmp_path / "scan.npz"
    np.savez(out["npz"], vol=np.random.default_rng(1).random((5, 5, 5)))
    out["images"] = tmp_path / "imgs"
    out["images"].mkdir()
    for i in range(6):
        Image.fromarray(np.full((9, 9), 20 * i, dtype=np.uint8)).save(out["images"] / f"{i}.png")
    out["niftis"] = tmp_path / "vols"
    out["niftis"].mkdir()
    for i in range(3):
        nib.save(nib.Nifti1Image(np.full((4, 4, 4), float(i)), np.eye(4)), str(out["niftis"] / f"{i}.nii"))
    return out


def test_detection(samples):
    expected = {"wfdb": "wfdb", "ucr": "ucr", "nifti": "nifti", "npz": "nifti", "images": "image-folder",
                "niftis": "nifti"}
    for key, kind in expected.items():
        assert detect_source(str(samples[key])).name == kind, key
    assert detect_source(str(samples["wfdb"] / "100.hea")).name == "wfdb"
    assert detect_source("demo").name == "medmnist"


def test_fingerprints_differ_between_loads(samples):
    loads = {
        "wfdb": [{}, {"resolution": 100}, {"extra": {"test_records": "100"}}],
        "ucr": [{}, {"resolution": 8}, {"extra": {"scaling": "global"}}, {"split_seed": 1}],
        "nifti": [{}, {"resolution": 4}, {"extra": {"percentiles": "1,99"}}],
        "npz": [{}, {"resolution": 3}],
        "images": [{}, {"resolution": 16}, {"channels": 3}, {"split_seed": 2}],
    }
    seen = {}
    for key, variants in loads.items():
        for opts in variants:
            ds = load_signals(samples[key], **opts)
            assert load_signals(samples[key], **opts).fingerprint == ds.fingerprint  # deterministic
            assert ds.fingerprint not in seen, (key, opts, seen.get(ds.fingerprint))
            seen[ds.fingerprint] = (key, opts)
    # Content, not names: change one pixel -> another fingerprint.
    before = load_signals(samples["images"]).fingerprint
    Image.fromarray(np.full((9, 9), 7, dtype=np.uint8)).save(samples["images"] / "0.png")
    assert load_signals(samples["images"]).fingerprint != before


def test_every_set_is_valid(samples):
    for key, path in samples.items():
        ds = load_signals(path)
        x = ds.get(ds.indices())
        assert x.shape == (len(ds), *ds.signal_shape) and x.dtype == np.float32
        assert 0 <= x.min() and x.max() <= 1
        assert ds.describe()["count"] == len(ds)


# -- real data ------------------------------------------------------------------------------------

@pytest.mark.shared_data
def test_mitbih_ds1_beats(shared_data):
    folder = shared_data / "ecg" / "mitdb-ds1"
    if not folder.is_dir():
        pytest.skip("MIT-BIH DS1 records absent")
    t0 = time.perf_counter()
    ds = load_signals(folder)
    seconds = time.perf_counter() - t0
    assert seconds < 60
    counts = ds.info["class_counts"]
    # Published DS1 counts (de Chazal et al. 2004): 51,021 beats = N 45,866, S 944, V 3,788, F 415, Q 8.
    assert 50_000 <= len(ds) <= 52_000
    assert 45_000 <= counts["N"] <= 46_500
    assert 900 <= counts["S"] <= 1_000
    assert 3_700 <= counts["V"] <= 3_900
    assert 380 <= counts["F"] <= 450
    assert 5 <= counts["Q"] <= 12
    assert sum(counts.values()) == len(ds)
    assert np.bincount(ds.labels[:, 0], minlength=5).tolist() == [counts[c] for c in "NSVFQ"]
    records = ds.info["records"]
    assert sorted(sum(records.values(), [])) == sorted(set(ds.records.tolist()))
    assert len(set(ds.records.tolist())) == 22
    for rec in set(ds.records.tolist()):
        assert len(set(ds.splits[ds.records == rec].tolist())) == 1  # no patient in two splits
    x = ds.get(np.arange(0, len(ds), 97))
    assert x.shape[1:] == (1, 187) and 0 <= x.min() and x.max() <= 1
    print(f"\nDS1: {len(ds)} beats {counts} in {seconds:.1f} s; records {records}")


@pytest.mark.shared_data
def test_ecg5000(shared_data):
    f = shared_data / "ecg" / "ecg5000" / "ECG5000_TRAIN.txt"
    if not f.is_file():
        pytest.skip("ECG5000 absent")
    ds = load_signals(f)
    assert len(ds) == 500 and ds.signal_shape == (1, 140) and ds.task == "multi-class"
    assert ds.label_names == {"0": "1", "1": "2", "2": "3", "3": "4", "4": "5"}
    assert ds.info["class_counts"] == {"1": 292, "2": 177, "3": 10, "4": 19, "5": 2}
    x = ds.get(range(500))
    assert np.allclose(x.min(axis=-1), 0) and np.allclose(x.max(axis=-1), 1)


@pytest.mark.shared_data
def test_mricron_with_aal_labels(shared_data):
    d = shared_data / "volumes" / "mricron"
    if not d.is_dir():
        pytest.skip("MRIcron volumes absent")
    ds = load_signals(d / "ch2bet.nii.gz", extra={"labels": str(d / "aal.nii.gz")})
    assert ds.signal_shape == (1, 64, 64, 64)  # 181 x 217 x 181 -> default 64^3
    assert len(ds.info["mask_values"]) == 117  # background + 116 AAL regions
    x, m = ds.get([0])[0, 0], ds.get_masks([0])[0]
    assert x.min() == 0 and x.max() == 1
    assert x[m > 0].mean() > 5 * x[m == 0].mean()  # atlas regions sit on the brain
    folder = load_signals(d, resolution=32)
    assert len(folder) == 5 and folder.signal_shape == (1, 32, 32, 32)
    assert folder.get([4]).shape == (1, 1, 32, 32, 32)


@pytest.mark.shared_data
def test_voxelmorph_scan(shared_data):
    f = shared_data / "volumes" / "voxelmorph" / "test_scan.npz"
    if not f.is_file():
        pytest.skip("voxelmorph scan absent")
    ds = load_signals(f, resolution=32)
    assert ds.signal_shape == (1, 32, 32, 32) and len(ds.info["mask_values"]) == 46
    m = ds.get_masks([0])[0]
    assert m.max() <= 45 and len(np.unique(m)) > 30


@pytest.mark.shared_data
def test_kvasir_and_isbi(shared_data):
    kv = shared_data / "seg" / "kvasir-seg"
    em = shared_data / "seg" / "isbi2012-em"
    if not (kv.is_dir() and em.is_dir()):
        pytest.skip("segmentation folders absent")
    ds = load_signals(kv)
    assert len(ds) == 799 and ds.signal_shape == (3, 64, 64) and ds.has_masks
    idx = np.arange(0, 799, 100)
    x, m = ds.get(idx), ds.get_masks(idx)
    assert 0.02 < m.mean() < 0.5  # polyps cover a minority of the frame
    em_ds = load_signals(em)
    assert len(em_ds) == 30 and em_ds.signal_shape == (1, 64, 64)
    cells = em_ds.get_masks(range(30)).mean()
    assert 0.6 < cells < 0.9  # class 1 = cell (255), the larger part of an EM slice
