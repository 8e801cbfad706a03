"""Every worked example runs end to end in its --fast mode, on small synthetic data made here.

The examples are imported and their ``main`` called in this process (no interpreter start-up per
example); each writes ``OUT/result.json`` with its numbers, which are checked for sense.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NAMES = ("ecg_mitdb", "superres_breast", "kvasir_segment", "generate_classes", "explain_classifier",
         "mednf_import", "volume_nifti")


def example(name: str):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    return importlib.import_module(name)


def _smooth_images(n: int, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    return np.stack([0.5 + 0.4 * np.sin(rng.uniform(1, 4) * xx + rng.uniform(0, 3) * yy) for _ in range(n)])


def _write_pair(folder: Path, sizes=(8, 16), n=(16, 6, 6)) -> tuple[Path, Path]:
    """The same images at two resolutions (the high one averaged 2x2 gives the low one)."""
    rng = np.random.default_rng(1)
    low_arrays, high_arrays = {}, {}
    for k, (split, count) in enumerate(zip(("train", "val", "test"), n)):
        high = _smooth_images(count, sizes[1], seed=k)
        low = high.reshape(count, sizes[0], 2, sizes[0], 2).mean(axis=(2, 4))
        labels = rng.integers(0, 2, size=(count, 1)).astype(np.uint8)
        labels[:2, 0] = (0, 1)  # both classes in every split
        high_arrays[f"{split}_images"] = (255 * high).astype(np.uint8)
        low_arrays[f"{split}_images"] = (255 * low).astype(np.uint8)
        high_arrays[f"{split}_labels"] = low_arrays[f"{split}_labels"] = labels
    paths = folder / "pair_low.npz", folder / "pair_high.npz"
    np.savez(paths[0], **low_arrays)
    np.savez(paths[1], **high_arrays)
    return paths


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("examples")


@pytest.fixture(scope="module")
def image_pair(workdir) -> tuple[Path, Path]:
    return _write_pair(workdir)


@pytest.fixture(scope="module")
def tiny_latents(workdir, image_pair) -> Path:
    """A labelled latent set of the low-resolution images with an embedded tiny model."""
    example("_common").funcml(
        "train", image_pair[0], "--out", workdir / "tiny-model", "--steps", "3", "--width", "32", "--depth", "3",
        "--latent-dim", "16", "--batch-size", "4", "--val-every", "0", "--test-steps", "3", "--device", "cpu")
    example("_common").funcml("encode", image_pair[0], "--model", workdir / "tiny-model", "--out",
                              workdir / "tiny-latents", "--steps", "3", "--device", "cpu")
    return workdir / "tiny-latents"


def _result(out: Path) -> dict:
    return json.loads((out / "result.json").read_text())


def test_superres_fast(workdir, image_pair):
    out = workdir / "superres"
    res = example("superres_breast").main(["--low", str(image_pair[0]), "--high", str(image_pair[1]), "--fast",
                                           "--out", str(out)])
    assert res == _result(out) and res["count"] == 6
    assert {"funcml", "bicubic", "nearest"} <= set(res["psnr"]) and all(np.isfinite(list(res["psnr"].values())))
    assert (out / "superres" / "superres.png").stat().st_size > 0
    renders = np.load(out / "render" / "renders.npy")
    assert renders.shape == (6, 1, 32, 32)  # 8x8 fields rendered 4x finer


def test_generate_fast(workdir, tiny_latents):
    out = workdir / "generate"
    res = example("generate_classes").main(["--latents", str(tiny_latents), "--fast", "--out", str(out)])
    assert set(res["sample_grids"]) == {"0", "1"} or len(res["sample_grids"]) == 2
    for grid in res["sample_grids"].values():
        assert Path(grid).stat().st_size > 0
    samples = np.load(out / "samples-0" / "samples.npy")
    assert samples.shape == (4, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert (out / "evaluation" / "metrics.json").exists()


def test_explain_fast(workdir, tiny_latents):
    out = workdir / "explain"
    res = example("explain_classifier").main(["--latents", str(tiny_latents), "--fast", "--out", str(out)])
    assert len(res["rows"]) == 2 and 0 <= res["test_accuracy"] <= 1
    assert (out / "explain" / "explain.json").exists()
    assert any(Path(f).suffix == ".png" for f in _flatten(res["figures"]))


def _flatten(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _flatten(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten(v)
    elif isinstance(obj, str):
        yield obj


def test_mednf_fast_round_trip(workdir, tiny_latents):
    from funcml.latents import LatentSet

    out = workdir / "mednf"
    res = example("mednf_import").main(["--from-latents", str(tiny_latents), "--fast", "--out", str(out)])
    original, imported = LatentSet.open(tiny_latents), LatentSet.open(out / "latents")
    assert res["latents"] == len(imported) == len(original) and res["latent_dim"] == 16
    # The release holds each split in order: the imported latents and labels are the original ones.
    for split in ("train", "val", "test"):
        xo, yo = original.split(split)
        xi, yi = imported.split(split)
        np.testing.assert_array_equal(xi, xo)
        np.testing.assert_array_equal(yi, yo)
    assert res["decode_max_abs_diff_vs_original"] < 1e-5


def test_volume_fast(workdir):
    import nibabel as nib

    folder = workdir / "volumes"
    folder.mkdir()
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, 12)] * 3, indexing="ij")
    for i in range(5):
        vol = np.exp(-((xx - 0.1 * i) ** 2 + yy ** 2 + (zz + 0.05 * i) ** 2) / 0.3).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), folder / f"vol{i}.nii.gz")
    out = workdir / "volume"
    res = example("volume_nifti").main(["--data", str(folder), "--fast", "--out", str(out)])
    assert res["volumes"] == 5 and res["fit_grid"] == 8 and res["render_grid"] == 16
    assert res["psnr_render_grid"]["train"] is not None and (out / "render.png").stat().st_size > 0


def test_kvasir_fast(workdir):
    folder = workdir / "polyps"
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:24, :24]
    for i in range(12):
        cy, cx, r = rng.integers(8, 16), rng.integers(8, 16), rng.integers(4, 7)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2) <= r * r
        img = np.stack([120 + 100 * mask, 80 + 40 * mask, 60 + 0 * mask], axis=-1).astype(np.uint8)
        Image.fromarray(img).save(folder / "images" / f"{i}.png")
        Image.fromarray((255 * mask).astype(np.uint8)).save(folder / "masks" / f"{i}.png")
    out = workdir / "kvasir"
    res = example("kvasir_segment").main(["--data", str(folder), "--fast", "--out", str(out)])
    head, unet = res["query_head"], res["unet"]
    assert head["grid"] == 16 and unet["grid"] == 8
    assert 0 <= head["dice_foreground"] <= 1 and 0 <= unet["dice_foreground"] <= 1
    assert np.load(out / "predict" / "masks.npy").shape[1:] == (16, 16)


def test_ecg_fast(workdir):
    from test_data_ecg import write_record

    folder = workdir / "records"
    folder.mkdir()
    for name in ("100", "101", "102", "103", "104", "105"):
        write_record(folder, name)
    out = workdir / "ecg"
    res = example("ecg_mitdb").main(["--data", str(folder), "--test-records", "104", "--val-records", "105",
                                     "--fast", "--out", str(out)])
    assert res["test_records"] == ["104"] and res["test_count"] > 0
    assert 0 <= res["test_accuracy"] <= 1 and (out / "beats.png").stat().st_size > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_example_states_command_expected_output_and_run_time(name):
    text = (EXAMPLES / f"{name}.py").read_text()
    doc = text.split('"""')[1]
    assert f"python examples/{name}.py" in doc and "Expected output" in doc and "run time" in doc
    assert "--fast" in doc
    assert f"examples/{name}.py" in (ROOT / "docs" / "examples.md").read_text()


@pytest.mark.parametrize("name, argv, expected", [
    ("ecg_mitdb", [], "mitdb-ds1 is not present: run `funcml datasets fetch mitdb-ds1`"),
    ("superres_breast", [], "breastmnist at size 64 is not present: run `funcml datasets fetch breastmnist@64`"),
    ("kvasir_segment", [], "kvasir-seg is not present: download it from https://datasets.simula.no/kvasir-seg/"),
    ("volume_nifti", [], "mricron is not present: download it from https://github.com/neurolabusc/MRIcron"),
    ("kvasir_segment", ["--data", "no/such/folder"], "no/such/folder not found: pass --data"),
])
def test_without_its_data_an_example_says_what_to_download_and_where(name, argv, expected, tmp_path, monkeypatch):
    monkeypatch.setenv("FUNCML_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("FUNCML_MEDMNIST_ROOT", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        example(name).main([*argv, "--out", str(tmp_path / "out")])
    message = str(exc.value.code)
    assert message.startswith("error: ") and expected in message
    assert str(tmp_path / "root") in message or "not found" in message


def test_examples_without_data_arguments_run_on_the_embedded_demo_data(tmp_path):
    """MedNF import with nothing given: a tiny model trained on the demo images, a release written from it."""
    res = example("mednf_import").main(["--fast", "--out", str(tmp_path / "mednf")])
    assert res["latents"] == 180 and res["decode_max_abs_diff_vs_original"] < 1e-5
