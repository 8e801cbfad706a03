"""``funcml generate`` end to end on a tiny latent set, the evaluation protocol, and errors."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from funcml.encoders.config import EncodeConfig
from funcml.latents.encode import encode_signal_set
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.latents import LatentSet
from funcml.tasks.generate import evaluate_generator
from funcml.tasks.generate.evaluate import decode_latents

from conftest import make_signal_set
from test_cli import last_json, run

GEN_TINY = ["--steps", "30", "--hidden", "32", "--blocks", "1", "--batch-size", "32", "--sample-steps", "4",
            "--device", "cpu"]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory, ):
    from funcml.encoders.config import FieldConfig

    tmp = tmp_path_factory.mktemp("gen")
    torch.manual_seed(0)
    field = FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0, omega_last=30.0)
    model = FieldModel(ModulatedSiren(field), (1, 8, 8), EncodeConfig(steps=2, inner_lr=0.5, batch_size=32))
    model.save(tmp / "model")
    signals = make_signal_set(60, (1, 8, 8), seed=3)
    latent_set, _ = encode_signal_set(model, signals, tmp / "latents", model_dir=tmp / "model", progress=False)
    return tmp, signals, latent_set, FieldModel.load(tmp / "model")


def test_train_sample_interpolate_evaluate(encoded, tmp_path, capsys):
    lat = str(encoded[0] / "latents")
    gen = str(tmp_path / "gen")
    code, out, err = run(["generate", "train", "--latents", lat, "--out", gen, "--json", *GEN_TINY], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["finished"] and rep["steps_done"] == 30 and rep["train_latents"] == 30 and len(rep["id"]) == 64
    assert (tmp_path / "gen" / "loss.png").stat().st_size > 1000 and not (tmp_path / "gen" / "checkpoints").exists()

    code, out, err = run(["generate", "sample", gen, "--n", "6", "--label", "class1", "--seed", "4", "--format",
                          "npy,png,nifti", "--out", str(tmp_path / "s"), "--json"], capsys)
    assert code == 0, err
    meta = last_json(out)
    assert meta["label_counts"] == {"1": 6}
    samples = np.load(tmp_path / "s" / "samples.npy")
    assert samples.shape == (6, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    assert (np.load(tmp_path / "s" / "labels.npy") == 1).all()
    pngs = sorted((tmp_path / "s" / "png").glob("*.png"))
    assert len(pngs) == 6 and pngs[0].name == "sample_00000_class1.png"
    vol = nib.load(str(sorted((tmp_path / "s" / "nifti").glob("*.nii.gz"))[0]))
    np.testing.assert_allclose(np.asarray(vol.dataobj), samples[0, 0], atol=1e-6)
    # the generated latents form a latent set whose embedded model decodes them to the signals
    gen_set = LatentSet.open(tmp_path / "s" / "latents")
    assert len(gen_set) == 6 and (np.asarray(gen_set.labels) == 1).all()
    model = gen_set.load_model()
    np.testing.assert_allclose(decode_latents(model, gen_set.rows(slice(None))), samples, atol=1e-6)
    assert (tmp_path / "s" / "grid.png").stat().st_size > 1000

    # same seed, same samples
    code, out, err = run(["generate", "sample", gen, "--n", "6", "--label", "1", "--seed", "4", "--out",
                          str(tmp_path / "s2")], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "s2" / "samples.npy"), samples)

    code, out, err = run(["generate", "interpolate", lat, "--frames", "5", "--out", str(tmp_path / "strip.png"),
                          "--json"], capsys)
    assert code == 0, err
    strip = last_json(out)
    assert (tmp_path / "strip.png").stat().st_size > 1000
    lin, sph = np.array(strip["standardised_norms"]["linear"]), np.array(strip["standardised_norms"]["spherical"])
    np.testing.assert_allclose([lin[0], lin[-1]], [sph[0], sph[-1]], rtol=1e-5)
    np.testing.assert_allclose(sph, np.linspace(sph[0], sph[-1], 5), rtol=1e-4)  # slerp: norm goes linearly
    assert lin[2] < sph[2]

    code, out, err = run(["generate", "evaluate", gen, "--latents", lat, "--repeats", "2", "--cnn-steps", "20",
                          "--out", str(tmp_path / "ev"), "--json"], capsys)
    assert code == 0, err
    ev = last_json(out)
    assert set(ev["sets"]) == {"held_out_decoded", "generated", "gaussian"}  # source not readable: no raw row
    assert ev["reference"]["signals"] == "decoded latents" and ev["compared_count"] == 15
    g = ev["sets"]["generated"]
    assert g["fd"] >= 0 and 0 <= g["precision"] <= 1 and 0 <= g["recall"] <= 1 and g["fd_std"] >= 0
    assert {"real", "generated", "gaussian"} <= set(ev["cas"]) and 0 <= ev["cas"]["generated"]["accuracy"] <= 1
    saved = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert saved["sets"]["gaussian"]["fd"] == pytest.approx(ev["sets"]["gaussian"]["fd"])
    assert (tmp_path / "ev" / "comparison.png").stat().st_size > 1000


class Copier:
    """A 'generator' that returns training latents of the requested class: a perfect memoriser."""

    conditional = True

    def __init__(self, x, y):
        self.x, self.y = x, y
        self.classes_ = np.unique(y)
        self.mean_, self.scale_ = x.mean(0), x.std(0)

    def sample(self, n, labels=None, guidance=1.0, seed=0):
        rng = np.random.default_rng(seed)
        rows = [rng.choice(np.flatnonzero(self.y == c)) for c in labels]
        return self.x[rows], np.asarray(labels)


def test_evaluation_flags_a_memorising_generator(encoded):
    _, signals, latent_set, model = encoded
    x, y = latent_set.split("train")
    report, sets = evaluate_generator(Copier(x, y[:, 0]), latent_set, model, signals=signals, repeats=1,
                                      cnn_steps=30, log=lambda m: None)
    assert report["reference"]["signals"] == "raw" and "held_out_real" in report["sets"]
    copied = report["sets"]["generated"]["memorisation_latent"]
    floor = report["sets"]["gaussian"]["memorisation_latent"]
    assert copied["ratio"] < 1e-3 and copied["fraction_closer"] == 1.0
    assert floor["ratio"] > 0.5 and floor["fraction_closer"] < 0.5
    assert report["sets"]["generated"]["memorisation_feature"]["fraction_closer"] == 1.0
    assert report["feature_net"]["trained"] and 0 <= report["feature_net"]["held_out_accuracy"] <= 1
    assert set(sets) == {"real", "generated", "gaussian"} and sets["generated"][0].shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("argv, message", [
    (["generate", "sample", "{tmp}/nogen", "--out", "{tmp}/x"], "generator directory not found"),
    (["generate", "train", "--latents", "{tmp}/nolat", "--out", "{tmp}/g"], "latent set not found"),
    (["generate", "train", "--latents", "{lat}", "--out", "{tmp}/g", "--steps", "0"], "--steps"),
    (["generate", "train", "--latents", "{lat}", "--out", "{lat}"], "exists"),
    (["generate", "interpolate", "{lat}", "--a", "999", "--out", "{tmp}/x.png"], "--a 999"),
])
def test_errors_are_one_clear_line(encoded, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, lat=encoded[0] / "latents") for a in argv]
    code, out, err = run(argv, capsys)
    assert code != 0 and message in err and "Traceback" not in err


def test_sample_errors(encoded, tmp_path, capsys):
    lat, gen = str(encoded[0] / "latents"), str(tmp_path / "gen")
    assert run(["generate", "train", "--latents", lat, "--out", gen, "--steps", "5", *GEN_TINY[2:]], capsys)[0] == 0
    for extra, message in ((["--label", "nope"], "neither a class index nor a class name"),
                           (["--label", "7"], "label 7 is not a class"),
                           (["--format", "gif"], "unknown --format"),
                           (["--guidance", "-2"], "--guidance"),
                           (["--guidance", "nan"], "not a finite number")):
        code, out, err = run(["generate", "sample", gen, "--out", str(tmp_path / "s"), *extra], capsys)
        assert code != 0 and message in err, err
    assert not (tmp_path / "s").exists()


def test_train_refuses_a_generator_another_process_is_writing(encoded, tmp_path, capsys):
    from funcml.io.lock import OutputLock

    gen = tmp_path / "gen"
    with OutputLock(gen):
        code, _, err = run(["generate", "train", "--latents", str(encoded[0] / "latents"), "--out", str(gen),
                            "--steps", "5", *GEN_TINY[2:]], capsys)
    assert code != 0 and "another funcml process" in err and not gen.exists()
    assert run(["generate", "train", "--latents", str(encoded[0] / "latents"), "--out", str(gen), "--steps", "5",
                *GEN_TINY[2:]], capsys)[0] == 0 and (gen / "generator.json").is_file()


def test_demo_stage_writes_figures_and_metrics(encoded, tmp_path):
    from funcml.demo import STAGES, DemoContext
    from funcml.demo.stages.generation import generate_stage

    assert "generate" in [name for name, _ in STAGES]
    _, signals, latent_set, model = encoded
    ctx = DemoContext(out=tmp_path, signals=signals, model=model, latent_set=latent_set, device="cpu", quick=True,
                      log=lambda m: None)
    rep = generate_stage(ctx)
    for name in rep["figures"]:
        assert (tmp_path / name).stat().st_size > 1000
    assert set(rep["fd"]) == {"held_out_real", "held_out_decoded", "generated", "gaussian"}
    assert set(rep["cas"]) == {"real", "generated", "gaussian"} and rep["memorisation_ratio"] > 0
    json.dumps(rep)  # the report is JSON-serialisable
