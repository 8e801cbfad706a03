"""The query-head commands end to end on tiny files: superres train / evaluate --head, impute train /
evaluate --head, render --head, segment with observed samples; the old invocations and clear errors."""

import json

import numpy as np
import pytest

from test_cli import last_json, run
from test_query_cli import make_tiny

HEAD = ["--steps", "6", "--hidden", "8", "--layers", "1", "--encoder-width", "4", "--encoder-depth", "1",
        "--batch-size", "4", "--coords-per-signal", "16"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny(tmp_path_factory.mktemp("qhead"), high_model=True)


def test_superres_train_real_pairs_then_evaluate_with_the_head(tiny, capsys):
    root, low, high = tiny
    code, out, err = run(["superres", "train", low, "--model", str(root / "m"), "--target-data", high,
                          "--out", str(root / "h"), *HEAD, "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["steps"] == 6 and (root / "h" / "head.safetensors").is_file()
    assert not (root / "h" / "checkpoints").exists() and not (root / "h.partial").exists()
    cfg = json.loads((root / "h" / "config.json").read_text())
    assert cfg["format"] == "funcml.queryhead" and cfg["task"] == "superres" and cfg["grid"] == [8, 8]
    code, out, err = run(["superres", low, high, "--model", str(root / "m"), "--head", str(root / "h"),
                          "--out", str(root / "sr"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert {"funcml", "funcml_head", "bicubic"} <= set(rep) and 0 < rep["funcml_head"]["psnr"] < 100
    assert (root / "sr" / "superres.png").is_file()
    # the old invocation without a head still reports the field and the baselines
    code, out, err = run(["superres", low, high, "--model", str(root / "m"), "--json"], capsys)
    assert code == 0 and "funcml_head" not in last_json(out)
    # the head refuses another field model, with one clear line
    code, _, err = run(["superres", low, high, "--model", str(root / "m2"), "--head", str(root / "h")], capsys)
    assert code != 0 and "trained on field model" in err and "Traceback" not in err


def test_superres_train_self_supervised_and_render_through_the_head(tiny, capsys):
    root, low, high = tiny
    code, out, err = run(["superres", "train", high, "--model", str(root / "m"), "--scales", "1.5-3", "--repeats",
                          "2", "--out", str(root / "hs"), *HEAD, "--json"], capsys)
    assert code == 0, err
    code, out, err = run(["render", "--latents", str(root / "lat"), "--head", str(root / "hs"), "--data", low,
                          "--scale", "2", "--out", str(root / "r"), "--json"], capsys)
    assert code == 0, err
    assert np.load(root / "r" / "renders.npy").shape == (20, 1, 16, 16)
    code, _, err = run(["render", "--latents", str(root / "lat"), "--head", str(root / "hs"), "--scale", "2",
                        "--out", str(root / "r2")], capsys)
    assert code != 0 and "--data" in err


def test_impute_train_then_evaluate_with_the_head(tiny, capsys):
    root, low, _ = tiny
    code, out, err = run(["impute", "train", low, "--model", str(root / "m"), "--hide", "random:0.5,block:0.3",
                          "--repeats", "2", "--out", str(root / "hi"), *HEAD, "--json"], capsys)
    assert code == 0, err
    code, out, err = run(["impute", low, "--model", str(root / "m"), "--observed", "random:0.5", "--head",
                          str(root / "hi"), "--baselines", "linear", "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert {"funcml", "funcml_head", "linear"} <= set(rep)
    # an imputation head is not a super-resolution head
    code, _, err = run(["superres", low, low, "--model", str(root / "m"), "--head", str(root / "hi")], capsys)
    assert code != 0 and "is a head for impute, not for superres" in err


@pytest.mark.parametrize("argv, message", [
    (["superres", "train", "{low}", "--scales", "0.5-2"], "--scales"),
    (["superres", "train", "{low}", "--inputs", "pixels"], "--inputs"),
    (["superres", "train", "{low}", "--inputs", "features", "--base", "classic"], "observed"),
    (["impute", "train", "{low}", "--hide", "stripes:0.3"], "--hide"),
    (["superres", "train", "{low}", "--target-data", "{missing}"], "missing"),
])
def test_head_training_refuses_bad_input_with_one_line(tiny, capsys, argv, message):
    root, low, _ = tiny
    argv = [a.format(low=low, missing=str(root / "missing.npz")) for a in argv]
    code, _, err = run([*argv, "--model", str(root / "m"), "--out", str(root / "bad"), *HEAD], capsys)
    assert code != 0 and message in err and "Traceback" not in err
    assert not (root / "bad").exists()


def test_an_existing_head_is_not_overwritten(tiny, capsys):
    root, low, high = tiny
    (root / "taken").mkdir()
    code, _, err = run(["superres", "train", low, "--model", str(root / "m"), "--target-data", high, "--out",
                        str(root / "taken"), *HEAD], capsys)
    assert code != 0 and "exists" in err
