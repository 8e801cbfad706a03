"""The querying commands end to end on tiny files: render, superres, impute, encode --observed,
train --target-data, segment train / predict / unet."""

import json

import numpy as np
import pytest

from test_cli import TINY, last_json, run, write_medmnist_npz


def make_tiny(root, high_model: bool = False):
    """In ``root``: 8x8 and 16x16 MedMNIST-layout files of the same images, a tiny model ``m`` of the 8x8
    file and its latent set ``lat`` (with ``high_model``, also a model ``m2`` of the 16x16 file);
    ``(root, low, high)``."""
    low = str(write_medmnist_npz(root / "tinymnist.npz", size=8, seed=0))
    high = str(write_medmnist_npz(root / "tinymnist_16.npz", size=16, seed=0))
    runs = [["train", low, "--out", str(root / "m"), "--steps", "3", *TINY]]
    if high_model:
        runs.append(["train", high, "--out", str(root / "m2"), "--steps", "3", *TINY])
    runs.append(["encode", low, "--model", str(root / "m"), "--out", str(root / "lat")])
    for argv in runs:
        code, _, err = _Capture().run(argv)
        assert code == 0, err
    return root, low, high


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny model trained on an 8x8 MedMNIST-layout file, its latent set, and the same images at 16x16."""
    return make_tiny(tmp_path_factory.mktemp("query"))


class _Capture:
    """Run the CLI in-process outside a test's capsys (for module fixtures)."""

    def run(self, argv):
        import contextlib
        import io

        from funcml.cli import main

        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(argv)
            except SystemExit as exc:
                return exc.code, out.getvalue(), err.getvalue()
        return 0, out.getvalue(), err.getvalue()


def test_render_writes_any_grid_and_refuses_bad_options(tiny, capsys):
    root, _, _ = tiny
    code, out, err = run(["render", "--latents", str(root / "lat"), "--out", str(root / "r1"), "--scale", "2",
                          "--roi", "0-0.5,0-1", "--indices", "0-4", "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    arr = np.load(root / "r1" / "renders.npy")
    assert rep["shape"] == [5, 1, 8, 16] and arr.shape == (5, 1, 8, 16)
    assert (root / "r1" / "render_00004.png").is_file() and (root / "r1" / "renders.png").stat().st_size > 1000
    meta = json.loads((root / "r1" / "render.json").read_text())
    assert meta["rows"] == [0, 1, 2, 3, 4] and meta["roi"] == [[0.0, 0.5], [0.0, 1.0]]
    code, out, err = run(["render", "--latents", str(root / "lat"), "--out", str(root / "r2"), "--resolution", "20x12",
                          "--split", "test", "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["shape"] == [4, 1, 20, 12]
    for argv, message in [(["--scale", "2", "--resolution", "8"], "exactly one"),
                          (["--resolution", "8x8x8"], "does not fit"), (["--scale", "2", "--roi", "0.7-0.2"], "LO < HI"),
                          (["--scale", "2", "--indices", "99"], "out of range")]:
        code, _, err = run(["render", "--latents", str(root / "lat"), "--out", str(root / "bad"), *argv], capsys)
        assert code != 0 and message in err, err
    code, _, err = run(["render", "--latents", str(root / "lat"), "--out", str(root / "r1"), "--scale", "2"], capsys)
    assert code != 0 and "--overwrite" in err


def test_superres_and_multires_training_from_the_command_line(tiny, capsys):
    root, low, high = tiny
    code, out, err = run(["superres", low, high, "--model", str(root / "m"), "--split", "all", "--out",
                          str(root / "sr"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["count"] == 20 and rep["high_shape"] == [1, 16, 16] and rep["classic"] == "bicubic"
    assert {"funcml", "bicubic", "bilinear", "nearest"} <= set(rep) and (root / "sr" / "superres.png").is_file()
    code, out, err = run(["train", low, "--target-data", high, "--target-coords", "64", "--out", str(root / "msr"),
                          "--steps", "2", "--json", *TINY], capsys)
    assert code == 0, err
    cfg = json.loads((root / "msr" / "config.json").read_text())
    assert cfg["training"]["multires"]["mode"] == "paired" and cfg["signal_shape"] == [1, 8, 8]
    code, _, err = run(["superres", low, str(write_medmnist_npz(root / "othermnist_16.npz", n=(5, 4, 4), size=16)),
                        "--model", str(root / "m")], capsys)
    assert code != 0 and "same signals" in err
    code, _, err = run(["train", low, "--target-coords", "5", "--out", str(root / "x"), *TINY], capsys)
    assert code != 0 and "--target-data" in err


def test_encode_with_observed_masks_and_impute(tiny, capsys):
    root, low, _ = tiny
    code, out, err = run(["encode", low, "--model", str(root / "m"), "--out", str(root / "lat_obs"), "--observed",
                          "box:0.25-0.75", "--json"], capsys)
    assert code == 0, err
    manifest = json.loads((root / "lat_obs" / "manifest.json").read_text())
    assert manifest["encoding"]["observed"].startswith("box:0.25-0.75")
    np.save(root / "wrong.npy", np.ones((9, 9), bool))
    code, _, err = run(["encode", low, "--model", str(root / "m"), "--out", str(root / "x"), "--observed",
                        str(root / "wrong.npy")], capsys)
    assert code != 0 and "fits neither" in err
    code, out, err = run(["impute", low, "--model", str(root / "m"), "--observed", "random:0.5", "--out",
                          str(root / "imp"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["count"] == 4 and 0.3 < rep["hidden_fraction"] < 0.7
    assert {"funcml", "linear", "biharmonic", "nearest"} <= set(rep) and (root / "imp" / "impute.png").is_file()


def _write_seg_folder(root, n=10, size=20):
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(size) + 0.5
    yy, xx = np.meshgrid(t, t, indexing="ij")
    for i in range(n):
        cy, cx, r = rng.uniform(7, 13), rng.uniform(7, 13), rng.uniform(3, 6)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r ** 2
        Image.fromarray((60 + 140 * m).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((255 * m).astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return str(root)


def test_segment_train_predict_at_another_resolution_and_unet(tmp_path, capsys):
    data = _write_seg_folder(tmp_path / "seg")
    code, _, err = run(["train", data, "--resolution", "16", "--out", str(tmp_path / "m"), "--steps", "3", *TINY], capsys)
    assert code == 0, err
    code, out, err = run(["segment", "train", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "head"),
                          "--steps", "20", "--coords-per-signal", "64", "--mask-resolution", "20", "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["n_classes"] == 2
    code, out, err = run(["segment", "predict", data, "--head", str(tmp_path / "head"), "--model", str(tmp_path / "m"),
                          "--out", str(tmp_path / "pred"), "--resolution", "32", "--split", "all", "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    masks = np.load(tmp_path / "pred" / "masks.npy")
    assert masks.shape == (10, 32, 32) and rep["grid"] == [32, 32] and rep["count"] == 10
    assert set(rep["per_class"]) == {"background", "foreground"} and 0 <= rep["mean"]["dice"] <= 1
    assert (tmp_path / "pred" / "overlays.png").is_file() and (tmp_path / "pred" / "metrics.json").is_file()
    code, _, err = run(["segment", "predict", data, "--head", str(tmp_path / "head"), "--model", str(tmp_path / "m"),
                        "--out", str(tmp_path / "pred"), "--resolution", "32"], capsys)
    assert code != 0 and "--overwrite" in err
    code, out, err = run(["segment", "unet", data, "--out", str(tmp_path / "unet"), "--resolution", "16", "--epochs",
                          "1", "--base", "4", "--depth", "2", "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["grid"] == [16, 16] and rep["split"] == "test" and (tmp_path / "unet" / "unet.safetensors").is_file()
    code, _, err = run(["segment", "train", str(write_medmnist_npz(tmp_path / "tinymnist.npz", size=16)), "--model",
                        str(tmp_path / "m"), "--out", str(tmp_path / "h2")], capsys)
    assert code != 0 and "no segmentation masks" in err


def test_segment_train_with_a_unet_encoder_of_the_image_and_predict(tmp_path, capsys):
    data = _write_seg_folder(tmp_path / "seg")
    code, _, err = run(["train", data, "--resolution", "16", "--out", str(tmp_path / "m"), "--steps", "3", *TINY], capsys)
    assert code == 0, err
    head = ["--inputs", "features,latent,observed", "--encoder", "unet", "--encoder-depth", "2", "--encoder-width", "4"]
    code, out, err = run(["segment", "train", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "head"),
                          "--steps", "20", "--coords-per-signal", "64", *head, "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["inputs"] == "features,latent,observed"
    config = json.loads((tmp_path / "head" / "config.json").read_text())
    assert config["head"]["encoder"] == "unet" and config["head"]["encoder_depth"] == 2
    code, out, err = run(["segment", "predict", data, "--head", str(tmp_path / "head"), "--model", str(tmp_path / "m"),
                          "--out", str(tmp_path / "pred"), "--split", "test", "--json"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "pred" / "masks.npy").shape[1:] == (16, 16)
    code, _, err = run(["segment", "train", data, "--model", str(tmp_path / "m"), "--out", str(tmp_path / "h2"), *head,
                        "--encoder-dilation", "2"], capsys)
    assert code != 0 and "conv encoder" in err
