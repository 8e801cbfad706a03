"""NIfTI volumes and voxelmorph npz files, on small synthetic volumes with known values."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from funcml.data import ArraySignalSet, LazySignalSet, detect_source, load_signals
from funcml.errors import ConfigError, DataError


def save(path, data, affine=None):
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4) if affine is None else affine), str(path))
    return path


def ramp_volume(shape=(10, 10, 10), seed=0):
    """Values 0..N-1 in a seeded random order, so the percentiles are known exactly."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape).astype(np.float32)


def test_percentile_clipping_and_scaling(tmp_path):
    vol = ramp_volume()
    f = save(tmp_path / "ramp.nii.gz", vol)
    assert detect_source(str(f)).name == "nifti"
    ds = load_signals(f)
    assert isinstance(ds, ArraySignalSet)
    assert ds.signal_shape == (1, 10, 10, 10)  # native grid kept (<= 64 per axis)
    assert ds.task == "none" and ds.labels is None and ds.splits.tolist() == [0]
    lo, hi = np.percentile(np.arange(1000), [0.5, 99.5])  # 4.995, 994.005
    expected = np.clip((vol - lo) / (hi - lo), 0, 1)
    x = ds.get([0])[0, 0]
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert x.min() == 0.0 and x.max() == 1.0
    assert (x == 0).sum() == 5 and (x == 1).sum() == 5  # values 0..4 and 995..999 are clipped
    mm = load_signals(f, extra={"percentiles": "0,100"}).get([0])[0, 0]
    np.testing.assert_allclose(mm, vol / 999, atol=1e-6)
    with pytest.raises(ConfigError):
        load_signals(f, extra={"percentiles": "99,1"})


def test_canonical_orientation(tmp_path):
    vol = ramp_volume((6, 8, 10))
    las = np.diag([-1.0, 1.0, 1.0, 1.0])  # x axis runs right-to-left: canonical RAS+ flips it
    ds = load_signals(save(tmp_path / "las.nii", vol, las), extra={"percentiles": "0,100"})
    np.testing.assert_allclose(ds.get([0])[0, 0], vol[::-1] / vol.max(), atol=1e-6)
    swapped = np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=float)  # axes 0/1 swapped
    ds = load_signals(save(tmp_path / "swap.nii", vol, swapped), extra={"percentiles": "0,100"})
    assert ds.signal_shape == (1, 8, 6, 10)
    np.testing.assert_allclose(ds.get([0])[0, 0], vol.transpose(1, 0, 2) / vol.max(), atol=1e-6)


def test_resolution_and_default_grid(tmp_path):
    f = save(tmp_path / "v.nii.gz", ramp_volume((12, 10, 8)))
    ds = load_signals(f, resolution=(6, 5, 4))
    assert ds.signal_shape == (1, 6, 5, 4)
    x = ds.get([0])
    assert 0 <= x.min() and x.max() <= 1
    assert load_signals(f, resolution=5).signal_shape == (1, 5, 5, 5)
    big = save(tmp_path / "big.nii.gz", ramp_volume((70, 8, 8)))
    assert load_signals(big).signal_shape == (1, 64, 64, 64)
    assert load_signals(f).fingerprint != ds.fingerprint


def test_label_volume_masks(tmp_path):
    vol = ramp_volume((8, 8, 8))
    lab = np.zeros((8, 8, 8), dtype=np.int16)
    lab[2:6, 2:6, 2:6] = 10
    lab[4:, :, :3] = 20
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    f, lf = save(tmp_path / "img.nii.gz", vol, affine), save(tmp_path / "seg.nii.gz", lab, affine)
    ds = load_signals(f, extra={"labels": str(lf)})
    assert ds.has_masks and ds.info["mask_values"] == [0, 10, 20]
    m = ds.get_masks([0])[0]
    expected = np.searchsorted([0, 10, 20], lab)[::-1]  # same canonical flip as the image
    np.testing.assert_array_equal(m, expected)
    small = load_signals(f, resolution=4, extra={"labels": str(lf)})
    m4 = small.get_masks([0])[0]
    assert m4.shape == (4, 4, 4) and set(np.unique(m4).tolist()) <= {0, 1, 2}
    np.testing.assert_array_equal(m4, expected[1::2, 1::2, 1::2])  # nearest neighbour on a 2x coarser grid

    bad = save(tmp_path / "bad.nii.gz", np.zeros((8, 8, 7), dtype=np.int16), affine)
    with pytest.raises(DataError, match="shape"):
        load_signals(f, extra={"labels": str(bad)})
    shifted = save(tmp_path / "shifted.nii.gz", lab, np.diag([2.0, 2.0, 2.0, 1.0]))
    with pytest.raises(DataError, match="grid"):
        load_signals(f, extra={"labels": str(shifted)})
    with pytest.raises(DataError, match="not found"):
        load_signals(f, extra={"labels": str(tmp_path / "nope.nii.gz")})


def test_four_d_is_channels(tmp_path):
    vol = np.stack([ramp_volume((6, 6, 6), seed=s) for s in range(3)], axis=-1)
    ds = load_signals(save(tmp_path / "multi.nii.gz", vol))
    assert ds.signal_shape == (3, 6, 6, 6)
    x = ds.get([0])[0]
    assert all(x[c].max() == 1.0 and x[c].min() == 0.0 for c in range(3))
    with pytest.raises(ConfigError):
        load_signals(tmp_path / "multi.nii.gz", channels=1)


def test_folder_is_lazy_with_random_splits_and_label_folder(tmp_path):
    root, labels = tmp_path / "vols", tmp_path / "labs"
    root.mkdir()
    labels.mkdir()
    for i in range(10):
        save(root / f"s{i}.nii.gz", ramp_volume((6, 7, 8), seed=i))
        save(labels / f"s{i}.nii.gz", (ramp_volume((6, 7, 8), seed=i) > 300).astype(np.uint8) * (i % 3 + 1))
    (root / "notes.txt").write_text("ignored")
    ds = load_signals(root, resolution=4, split_seed=5, extra={"labels": str(labels)})
    assert isinstance(ds, LazySignalSet) and len(ds) == 10
    assert ds.describe()["splits"] == {"train": 7, "val": 1, "test": 2}
    assert ds.info["mask_values"] == [0, 1, 2, 3]
    x, m = ds.get(range(10)), ds.get_masks(range(10))
    assert x.shape == (10, 1, 4, 4, 4) and m.shape == (10, 4, 4, 4)
    assert set(np.unique(m[1]).tolist()) == {0, 2}
    assert ds.fingerprint != load_signals(root, resolution=4, split_seed=6, extra={"labels": str(labels)}).fingerprint
    with pytest.raises(ConfigError, match="folder"):
        load_signals(root, extra={"labels": str(labels / "s0.nii.gz")})


def test_truncated_and_invalid_volumes(tmp_path):
    f = save(tmp_path / "v.nii.gz", ramp_volume((20, 20, 20)))
    raw = f.read_bytes()
    f.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="v.nii.gz"):
        load_signals(f)
    f.write_bytes(raw[:100])  # cut inside the header
    with pytest.raises(DataError, match="v.nii.gz"):
        load_signals(f)
    (tmp_path / "junk.nii").write_bytes(b"not a nifti file at all" * 20)
    with pytest.raises(DataError, match="junk.nii"):
        load_signals(tmp_path / "junk.nii")
    nan = ramp_volume((5, 5, 5))
    nan[1, 2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        load_signals(save(tmp_path / "nan.nii", nan))


def test_truncated_volume_in_folder_fails_on_read(tmp_path):
    for i in range(3):
        save(tmp_path / f"v{i}.nii.gz", ramp_volume((16, 16, 16), seed=i))
    raw = (tmp_path / "v1.nii.gz").read_bytes()
    (tmp_path / "v1.nii.gz").write_bytes(raw[: len(raw) - 200])
    ds = load_signals(tmp_path)
    assert ds.get([0]).shape == (1, 1, 16, 16, 16)
    with pytest.raises(DataError, match="v1.nii.gz"):
        ds.get([1])


def test_symlinked_volume_is_refused(tmp_path):
    root = tmp_path / "vols"
    root.mkdir()
    save(root / "a.nii.gz", ramp_volume((4, 4, 4)))
    (root / "b.nii.gz").symlink_to(save(tmp_path / "elsewhere.nii.gz", ramp_volume((4, 4, 4))))
    with pytest.raises(DataError, match="symbolic link"):
        load_signals(root)


def test_voxelmorph_npz(tmp_path):
    vol = ramp_volume((8, 10, 12)) / 959.0
    seg = np.zeros((8, 10, 12))
    seg[:4] = 2.0
    seg[4:, 5:] = 41.0
    f = tmp_path / "scan.npz"
    np.savez_compressed(f, vol=vol, seg=seg)
    assert detect_source(str(f)).name == "nifti"
    ds = load_signals(f, extra={"percentiles": "0,100"})
    assert ds.signal_shape == (1, 8, 10, 12) and ds.info["mask_values"] == [0.0, 2.0, 41.0]
    np.testing.assert_allclose(ds.get([0])[0, 0], vol / vol.max(), atol=1e-6)
    np.testing.assert_array_equal(ds.get_masks([0])[0], np.searchsorted([0, 2, 41], seg))
    np.savez(tmp_path / "noseg.npz", vol=vol)
    assert not load_signals(tmp_path / "noseg.npz").has_masks
    np.savez(tmp_path / "badseg.npz", vol=vol, seg=seg[:4])
    with pytest.raises(DataError, match="seg"):
        load_signals(tmp_path / "badseg.npz")
    raw = f.read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) - 50])
    with pytest.raises(DataError, match="corrupt npz"):
        load_signals(tmp_path / "cut.npz")


def test_gzip_of_garbage(tmp_path):
    f = tmp_path / "g.nii.gz"
    with gzip.open(f, "wb") as z:
        z.write(b"\x00" * 400)
    with pytest.raises(DataError, match="g.nii.gz"):
        load_signals(f)
