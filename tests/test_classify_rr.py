"""RR features from WFDB beats to the latent set to `funcml classify --features`, and AAMI metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import DataWarning
from funcml.latents import LatentSet, write_latent_set
from funcml.tasks.classify import classify_latent_set, load_classifier
from funcml.tasks.classify.metrics import classification_metrics
from test_cli import last_json, run
from test_data_ecg import FS, write_record

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:wfdb")
RR = ("rr.pre", "rr.post")


def _beat_model(tmp_path):
    net = ModulatedSiren(FieldConfig(dim_in=1, channels=1, width=8, depth=2, latent_dim=4))
    model = FieldModel(net, (1, 187), EncodeConfig(steps=2, batch_size=16))
    model.save(tmp_path / "model")
    return tmp_path / "model"


def _rr_latents(path, n=300, seed=0, with_aux=True):
    """Latents that carry no class information; the class is in the RR features only (early beats = S)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.6, 0.2, 0.2])
    pre = np.where(y == 1, 0.6, np.where(y == 2, 0.7, 1.0)) + 0.03 * rng.normal(size=n)
    post = np.where(y == 2, 1.3, 1.0) + 0.03 * rng.normal(size=n)
    aux = 50.0 + np.c_[pre, post].astype(np.float32)  # far from zero: unscaled, the models would struggle
    splits = np.r_[np.zeros(n // 2), np.ones(n // 4), np.full(n - n // 2 - n // 4, 2)].astype(np.uint8)
    kw = dict(aux=aux, aux_names=RR) if with_aux else {}
    return write_latent_set(path, rng.normal(size=(n, 6)).astype(np.float32), splits=splits, labels=y[:, None],
                            task="multi-class", label_names={"0": "N", "1": "S", "2": "V"}, model_id="c" * 64,
                            signal_shape=(1, 187), **kw), aux, y, splits


def test_encode_stores_rr_features_and_warns_about_missing_ds2_records(tmp_path, capsys):
    folder = tmp_path / "ecg"
    folder.mkdir()
    for name in ("101", "106", "108"):
        write_record(folder, name, seconds=12, positions=np.arange(144, 12 * FS - 100, 288))
    model = _beat_model(tmp_path)
    code, out, err = run(["encode", str(folder), "--model", str(model), "--out", str(tmp_path / "lat"),
                          "--data-option", "split=inter-patient", "--val-fraction", "0.34", "--json"], capsys)
    assert code == 0, err
    assert "warning:" in err and "DS2 record(s) 100, 103, 105" in err and "test split is empty" in err
    ls = LatentSet.open(tmp_path / "lat")
    from funcml.data import load_signals

    with pytest.warns(DataWarning, match="DS2 record"):
        ds = load_signals(folder, val_fraction=0.34, extra={"split": "inter-patient"})
    assert ls.manifest["version"] == 2 and ls.aux_names == list(ds.aux_names)
    np.testing.assert_array_equal(ls.aux, ds.aux)
    assert ls.manifest["splits"]["test"] == 0 and ls.manifest["extra"]["source_info"]["split"] == "inter-patient"
    code, _, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "logreg",
                        "--features", "latent,rr"], capsys)
    assert code != 0 and "nothing to evaluate" in err and "--test-latents" in err


def test_rr_features_find_what_the_latents_cannot(tmp_path):
    ls, aux, y, splits = _rr_latents(tmp_path / "lat")
    scores = {}
    for features in ("latent", "rr", "latent,rr"):
        res = classify_latent_set(ls, "logreg", features=features, class_weight="balanced")
        scores[features] = res.report["test"]
        assert res.report["features"] == features.split(",")
    assert scores["rr"]["per_class"]["S"]["sensitivity"] > 0.9 and scores["rr"]["j_index"] > 3.5
    assert scores["latent,rr"]["j_index"] > 3.0 > 1.5 > scores["latent"]["j_index"]
    # Standardisation learnt on the train split only.
    res = classify_latent_set(ls, "logreg", features="rr", search=False)
    np.testing.assert_allclose(res.classifier.mean_, aux[splits == 0].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(res.classifier.scale_, aux[splits == 0].std(axis=0), rtol=1e-4)


def test_classify_cli_features_json_and_saved_classifier(tmp_path, capsys):
    _rr_latents(tmp_path / "lat")
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "logreg", "--features", "rr",
                          "--out", str(tmp_path / "clf"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["features"] == ["rr"] and rep["aux_features"] == list(RR) and rep["feature_count"] == 2
    assert "j-index" in err and "F1" in err
    cm = np.asarray(rep["test"]["confusion_matrix"])
    s, v = rep["test"]["per_class"]["S"], rep["test"]["per_class"]["V"]
    assert s["sensitivity"] == pytest.approx(cm[1, 1] / cm[1].sum()) and v["precision"] == pytest.approx(cm[2, 2] / cm[:, 2].sum())
    assert rep["test"]["j_index"] == pytest.approx(s["sensitivity"] + s["precision"] + v["sensitivity"] + v["precision"])
    assert (tmp_path / "clf" / "confusion_matrix.png").stat().st_size > 1000
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert meta["features"] == {"groups": ["rr"], "aux_names": list(RR)} and meta["latent_dim"] == 2
    clf = load_classifier(tmp_path / "clf")
    assert clf.features_ == ["rr"]
    ls = LatentSet.open(tmp_path / "lat")
    x, _ = ls.split("test", features="rr")
    pred = np.loadtxt(tmp_path / "clf" / "predictions.csv", delimiter=",", skiprows=1, usecols=4)
    np.testing.assert_array_equal(clf.predict(x), pred)
    # explain needs a classifier of the latents alone
    code, _, err = run(["explain", "--latents", str(tmp_path / "lat"), "--classifier", str(tmp_path / "clf"),
                        "--out", str(tmp_path / "ex")], capsys)
    assert code != 0 and "--features latent" in err


def test_rr_asked_of_a_set_without_rr_features_is_a_clear_error(tmp_path, capsys):
    _rr_latents(tmp_path / "plain", with_aux=False)
    _rr_latents(tmp_path / "rr", seed=1)
    code, _, err = run(["classify", "--latents", str(tmp_path / "plain"), "--features", "latent,rr"], capsys)
    assert code != 0 and "has no 'rr' features" in err and "Traceback" not in err
    code, _, err = run(["classify", "--latents", str(tmp_path / "rr"), "--features", "rr", "--model", "logreg",
                        "--test-latents", str(tmp_path / "plain")], capsys)
    assert code != 0 and "plain has no 'rr' features" in err
    # A set with RR features but encoded before the QRS features existed says how to get them
    code, _, err = run(["classify", "--latents", str(tmp_path / "rr"), "--features", "latent,rr,qrs"], capsys)
    assert code != 0 and "has no 'qrs' features" in err and "encode the records again" in err
    # --test-latents with the features it needs works as before
    code, out, err = run(["classify", "--latents", str(tmp_path / "rr"), "--features", "rr", "--model", "logreg",
                          "--test-latents", str(tmp_path / "rr"), "--test-split", "test", "--json"], capsys)
    assert code == 0, err
    assert last_json(out)["counts"]["eval"] == 75


def test_j_index_known_answer():
    # rows: true N S V F; columns: predicted
    cm = np.array([[50, 5, 3, 0], [4, 6, 0, 0], [1, 1, 8, 0], [0, 0, 2, 1]])
    y = np.repeat(np.arange(4), cm.sum(axis=1))
    pred = np.concatenate([np.repeat(np.arange(4), row) for row in cm])
    m = classification_metrics(y, np.eye(4)[pred], "multi-class", ["N", "S", "V", "F"])
    assert m["confusion_matrix"] == cm.tolist()
    assert m["j_index"] == pytest.approx(6 / 10 + 6 / 12 + 8 / 10 + 8 / 13)
    assert m["per_class"]["F"]["f1"] == pytest.approx(2 * 1 * (1 / 3) / (1 + 1 / 3))
    never_s = classification_metrics(y, np.eye(4)[np.where(pred == 1, 0, pred)], "multi-class", ["N", "S", "V", "F"])
    assert never_s["j_index"] == pytest.approx(0 + 0 + 8 / 10 + 8 / 13)  # +P of a class never predicted counts 0
    assert "j_index" not in classification_metrics(y, np.eye(4)[pred], "multi-class", ["a", "b", "c", "d"])
