"""Image folders: class, flat and segmentation-pair layouts, on small PNG/JPEG files with known content."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from funcml.data import LazySignalSet, detect_source, load_signals
from funcml.errors import ConfigError, DataError


def grey(path, value, size=(30, 20)):
    Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), "L").save(path)


def rgb(path, colour, size=(30, 20)):
    Image.fromarray(np.tile(np.array(colour, dtype=np.uint8), (size[1], size[0], 1)), "RGB").save(path)


def square_pair(img_path, mask_path, size, box, *, mode="RGB"):
    """An image, dark with a bright box, and its mask (255 inside the box)."""
    w, h = size
    x0, y0, x1, y1 = box
    img = np.full((h, w, 3), 30, dtype=np.uint8)
    img[y0:y1, x0:x1] = (220, 200, 190)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(img if mode == "RGB" else img[..., 0]).save(img_path)
    Image.fromarray(mask).save(mask_path)


def test_class_layout_labels_and_resize(tmp_path):
    for cls, values in {"malignant": [200, 210], "benign": [10, 20, 30]}.items():
        (tmp_path / cls).mkdir()
        for i, v in enumerate(values):
            grey(tmp_path / cls / f"{i}.png", v)
    (tmp_path / "README.txt").write_text("top-level files are ignored in the class layout")
    assert detect_source(str(tmp_path)).name == "image-folder"
    ds = load_signals(tmp_path)
    assert isinstance(ds, LazySignalSet)
    assert ds.signal_shape == (1, 64, 64)  # default grid, grey
    assert ds.task == "binary-class"
    assert ds.label_names == {"0": "benign", "1": "malignant"}
    assert ds.labels[:, 0].tolist() == [0, 0, 0, 1, 1]
    x = ds.get(range(5))
    np.testing.assert_allclose(x.reshape(5, -1).mean(1), np.array([10, 20, 30, 200, 210]) / 255, atol=1e-6)
    assert ds.info["class_counts"] == {"benign": 3, "malignant": 2}
    small = load_signals(tmp_path, resolution=(8, 12))
    assert small.get([0]).shape == (1, 1, 8, 12)
    assert small.fingerprint != ds.fingerprint

    (tmp_path / "unsure").mkdir()
    grey(tmp_path / "unsure" / "0.png", 100)
    three = load_signals(tmp_path)
    assert three.task == "multi-class" and three.label_names["2"] == "unsure"


def test_rgb_channels_default_and_forced(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rgb(tmp_path / "a" / "x.png", (255, 0, 0))
    grey(tmp_path / "b" / "y.png", 128)
    ds = load_signals(tmp_path)
    assert ds.signal_shape == (3, 64, 64)
    x = ds.get([0, 1])
    np.testing.assert_allclose(x[0, :, 0, 0], [1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(x[1, :, 0, 0], [128 / 255] * 3, atol=1e-6)  # grey replicated
    g = load_signals(tmp_path, channels=1)
    np.testing.assert_allclose(g.get([0])[0, 0, 0, 0], 76 / 255, atol=1e-6)  # PIL luma of pure red
    with pytest.raises(ConfigError):
        load_signals(tmp_path, channels=2)


def test_flat_layout_and_16_bit(tmp_path):
    grey(tmp_path / "a.png", 0, size=(40, 50))
    Image.fromarray(np.full((10, 10), 65535, dtype=np.uint16)).save(tmp_path / "b.png")
    Image.fromarray(np.full((12, 12), 100, dtype=np.uint8)).save(tmp_path / "c.jpg")
    Image.fromarray(np.full((12, 12), 50, dtype=np.uint8)).save(tmp_path / "d.bmp")
    Image.fromarray(np.full((12, 12), 51, dtype=np.uint8)).save(tmp_path / "e.tif")
    ds = load_signals(tmp_path, resolution=16, val_fraction=0.2, test_fraction=0.2)
    assert ds.task == "none" and ds.labels is None and ds.label_names == {}
    assert ds.signal_shape == (1, 16, 16)
    x = ds.get(range(5))
    np.testing.assert_allclose(x[:, 0, 0, 0], [0, 1, 100 / 255, 50 / 255, 51 / 255], atol=2 / 255)
    assert ds.describe()["splits"] == {"train": 3, "val": 1, "test": 1}


def test_kvasir_like_pairs_are_aligned(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    (tmp_path / "bboxes.json").write_text("{}")
    specs = {"a": ((300, 200), (30, 40, 150, 120)), "b": ((180, 240), (100, 10, 170, 200)),
             "c": ((1200, 900), (600, 450, 1100, 850))}
    for name, (size, box) in specs.items():
        square_pair(tmp_path / "images" / f"{name}.jpg", tmp_path / "masks" / f"{name}.jpg", size, box)
    ds = load_signals(tmp_path)
    assert ds.info["layout"] == "pairs" and ds.has_masks and ds.task == "none"
    assert ds.signal_shape == (3, 64, 64)
    x, m = ds.get(range(3)), ds.get_masks(range(3))
    assert m.shape == (3, 64, 64) and m.dtype == np.int64 and set(np.unique(m).tolist()) == {0, 1}
    for i, (size, box) in enumerate(specs.values()):
        # The mask's box is where the image is bright, at the expected place on the 64 x 64 grid.
        bright = x[i].mean(0) > 0.5
        iou = (bright & (m[i] == 1)).sum() / (bright | (m[i] == 1)).sum()
        assert iou > 0.98, iou
        w, h = size
        x0, y0, x1, y1 = box
        expected = np.zeros((64, 64), dtype=bool)
        expected[round(y0 * 64 / h):round(y1 * 64 / h), round(x0 * 64 / w):round(x1 * 64 / w)] = True
        np.testing.assert_array_equal(m[i] == 1, expected)


def test_isbi_like_pairs(tmp_path):
    (tmp_path / "image").mkdir()
    (tmp_path / "label").mkdir()
    for i in range(12):
        img = np.random.default_rng(i).integers(0, 256, (32, 32), dtype=np.uint8)
        lab = np.where(img > 100, 255, 0).astype(np.uint8)  # 0 = membrane, 255 = cell
        Image.fromarray(img).save(tmp_path / "image" / f"{i}.png")
        Image.fromarray(lab).save(tmp_path / "label" / f"{i}.png")
    ds = load_signals(tmp_path, resolution=32)
    assert ds.signal_shape == (1, 32, 32)
    # Natural order: 0, 1, 2, ..., 10, 11 (not 0, 1, 10, 11, 2 ...).
    img10 = np.random.default_rng(10).integers(0, 256, (32, 32), dtype=np.uint8)
    np.testing.assert_allclose(ds.get([10])[0, 0], img10 / 255, atol=1e-6)
    np.testing.assert_array_equal(ds.get_masks([10])[0], (img10 > 100).astype(np.int64))  # 1 = cell


def test_index_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    lab = np.zeros((16, 16), dtype=np.uint8)
    lab[:8] = 1
    lab[:, :4] = 2
    grey(tmp_path / "images" / "a.png", 90, size=(16, 16))
    Image.fromarray(lab).save(tmp_path / "masks" / "a.png")
    ds = load_signals(tmp_path, resolution=16, extra={"masks": "index"})
    np.testing.assert_array_equal(ds.get_masks([0])[0], lab)
    assert load_signals(tmp_path, resolution=16).get_masks([0])[0].max() == 0  # binary: all below 128
    rgb(tmp_path / "images" / "b.jpg", (1, 2, 3))
    Image.fromarray(lab).save(tmp_path / "masks" / "b.jpg")
    with pytest.raises(ConfigError, match="lossless"):
        load_signals(tmp_path, extra={"masks": "index"})


def test_pair_problems(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    square_pair(tmp_path / "images" / "a.png", tmp_path / "masks" / "a.png", (40, 40), (5, 5, 20, 20))
    grey(tmp_path / "images" / "b.png", 10)
    with pytest.raises(DataError, match="without a mask.*'b'"):
        load_signals(tmp_path)
    grey(tmp_path / "masks" / "b.png", 0, size=(31, 20))
    ds = load_signals(tmp_path)
    assert ds.get_masks([0]).shape == (1, 64, 64)
    with pytest.raises(DataError, match="31x20"):
        ds.get_masks([1])


def test_non_image_and_corrupt_files(tmp_path):
    grey(tmp_path / "a.png", 10)
    grey(tmp_path / "b.png", 20)
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x01")  # hidden files are ignored
    assert len(load_signals(tmp_path)) == 2
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt is not an image"):
        load_signals(tmp_path)
    (tmp_path / "notes.txt").unlink()
    (tmp_path / "c.png").write_text("not really a png")
    with pytest.raises(DataError, match="c.png"):
        load_signals(tmp_path)  # found while sampling image modes
    (tmp_path / "c.png").unlink()
    raw = (tmp_path / "b.png").read_bytes()
    (tmp_path / "b.png").write_bytes(raw[: len(raw) // 2])
    ds = load_signals(tmp_path, channels=1)  # headers are fine; the data is cut short
    with pytest.raises(DataError, match="b.png"):
        ds.get([1])


def test_many_files_corrupt_one_found_on_read(tmp_path):
    for i in range(40):
        grey(tmp_path / f"{i}.png", i)
    (tmp_path / "7.png").write_bytes(b"garbage")  # not among the 32 sampled files
    ds = load_signals(tmp_path)
    assert ds.get([0, 1]).shape == (2, 1, 64, 64)
    with pytest.raises(DataError, match="7.png"):
        ds.get([7])


def test_symlinks_and_escaping_paths_are_refused(tmp_path):
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    grey(root / "a" / "0.png", 1)
    grey(tmp_path / "secret.png", 2)
    (root / "b" / "0.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match="symbolic link"):
        load_signals(root)
    (root / "b" / "0.png").unlink()
    grey(root / "b" / "0.png", 3)
    (root / "c").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(DataError, match="symbolic link"):
        load_signals(root)


def test_empty_and_imageless_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        load_signals(empty)
    (empty / "sub").mkdir()
    with pytest.raises(DataError):
        load_signals(empty)
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    grey(one / "only" / "0.png", 1)
    with pytest.raises(DataError, match="at least 2"):
        load_signals(one)
    flat_and_sub = tmp_path / "mixed"
    (flat_and_sub / "sub").mkdir(parents=True)
    grey(flat_and_sub / "0.png", 1)
    grey(flat_and_sub / "sub" / "1.png", 1)
    with pytest.raises(DataError, match="unexpected folder"):
        load_signals(flat_and_sub)
    assert len(load_signals(flat_and_sub / "sub")) == 1
    with pytest.raises(ConfigError):
        load_signals(flat_and_sub, extra={"layout": "grid"})


def test_large_images_are_reduced_before_resizing(tmp_path):
    """Big files take the fast path (JPEG draft / box reduce) and still give the right picture."""
    h, w = 1000, 1400
    yy, xx = np.mgrid[0:h, 0:w]
    ramp = (xx * 255 // (w - 1)).astype(np.uint8)
    Image.fromarray(ramp).save(tmp_path / "a.png")
    Image.fromarray(np.stack([ramp] * 3, -1)).save(tmp_path / "b.jpg", quality=95)
    Image.fromarray((xx * 65535 // (w - 1)).astype(np.uint16)).save(tmp_path / "c.png")  # I;16: no reduce
    x = load_signals(tmp_path, resolution=(16, 32), channels=1).get(range(3))[:, 0]
    expected = (np.arange(32) + 0.5) / 32  # column centres of the ramp
    for img in x:
        np.testing.assert_allclose(img.mean(0), expected, atol=0.02)
        assert img.std(0).max() < 0.01  # constant down each column
