"""Latents centred on their record (``latent_rec``) and the fusion of an RR expert with trees on latents."""

from __future__ import annotations

import numpy as np
import pytest

from funcml.errors import ConfigError
from funcml.latents import LatentSet, write_latent_set
from funcml.latents.features import feature_columns
from funcml.tasks.classify import LatentFusionClassifier, classify_latent_set, load_classifier, save_classifier
from test_classify_rr import _rr_latents
from test_cli import last_json, run

NAMES = ("rr_s.record", "rr.pre_norm", "rr.post_norm")


def _records_set(path, n_per=60, seed=0):
    """Three records whose latents sit around a record offset of 5, -3 and 0; one in ten beats is early (S)
    with a latent bump on phi_0. Returns the set, its latents, record keys and labels."""
    rng = np.random.default_rng(seed)
    keys = np.repeat([0.8, 1.0, 0.6], n_per).astype(np.float32)
    offset = np.repeat([5.0, -3.0, 0.0], n_per)[:, None]
    y = (rng.random(len(keys)) < 0.2).astype(np.int64)
    lat = (offset + 0.3 * rng.normal(size=(len(keys), 4)) + 2.0 * y[:, None] * np.eye(4)[0]).astype(np.float32)
    pre = np.where(y == 1, 0.6, 1.0) + 0.05 * rng.normal(size=len(keys))
    aux = np.c_[keys, pre, np.ones(len(keys))].astype(np.float32)
    splits = np.repeat([0, 1, 2], n_per).astype(np.uint8)
    ls = write_latent_set(path, lat, splits=splits, labels=y[:, None], task="multi-class",
                          label_names={"0": "N", "1": "S"}, model_id="d" * 64, signal_shape=(1, 187), aux=aux,
                          aux_names=NAMES)
    return ls, lat, keys, y


def test_latent_rec_subtracts_the_median_of_every_row_of_the_record(tmp_path):
    ls, lat, keys, _ = _records_set(tmp_path / "lat")
    full = ls.features(None, "latent_rec")
    for key in np.unique(keys):
        m = keys == key
        np.testing.assert_allclose(full[m], lat[m] - np.median(lat[m], axis=0), atol=1e-6)
    assert abs(full.mean()) < 0.5 < abs(lat.mean(axis=1)).mean()  # the record offsets are gone
    # a few rows get the median of their whole record, not of the rows asked for
    rows = np.array([3, 70, 71, 150])
    np.testing.assert_allclose(ls.features(rows, "latent_rec,rr"), np.c_[full[rows], ls.aux[rows][:, 1:]], atol=1e-6)
    assert feature_columns(ls, "latent_rec,rr")[0] == ["phi_rec_0", "phi_rec_1", "phi_rec_2", "phi_rec_3",
                                                      "rr.pre_norm", "rr.post_norm"]


def test_latent_rec_needs_the_record_key(tmp_path):
    ls, *_ = _rr_latents(tmp_path / "lat")  # RR features without rr_s.record
    with pytest.raises(ConfigError, match="rr_s.record"):
        ls.features(None, "latent_rec")
    with pytest.raises(ConfigError, match="it has: latent, rr$"):
        ls.features(None, "hrv")
    with_key, *_ = _records_set(tmp_path / "keyed")
    with pytest.raises(ConfigError, match="it has: latent, latent_rec, rr_s, rr$"):
        with_key.features(None, "hrv")


def test_fusion_is_the_weighted_geometric_mean_of_its_experts_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(240, 5))
    y = (X[:, 0] + 0.5 * X[:, 3] ** 2 > 0.6).astype(int) + (X[:, 4] > 1.2)
    clf = LatentFusionClassifier(linear_columns=(0, 1), n_estimators=20, weight=0.3, class_weight="balanced",
                                 n_jobs=1).fit(X, y)
    Z = (X - clf.mean_) / clf.scale_
    p_lin, p_trees = clf.linear_.predict_proba(Z[:, [0, 1]]), clf.trees_.predict_proba(Z)
    expected = p_lin ** 0.3 * p_trees ** 0.7
    np.testing.assert_allclose(clf.predict_proba(X), expected / expected.sum(axis=1, keepdims=True), rtol=1e-6)
    assert clf.linear_.coef_.shape == (3, 2)
    save_classifier(clf, tmp_path / "clf")
    back = load_classifier(tmp_path / "clf")
    assert back.linear_columns == (0, 1) and back.weight == 0.3
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    with pytest.raises(ValueError, match="linear_columns"):
        LatentFusionClassifier(linear_columns=(0, 7)).fit(X, y)



def test_fusion_with_an_mlp_beside_the_trees_weighs_them_alike_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 4))
    y = (X[:, 0] * X[:, 1] > 0).astype(int)
    clf = LatentFusionClassifier(linear_columns=(2,), n_estimators=10, weight=0.4, experts="xgboost,mlp",
                                 n_jobs=1).fit(X[:150], y[:150], X[150:], y[150:])
    Z = (X - clf.mean_) / clf.scale_
    floor = lambda p: np.maximum(p, 1e-12)  # noqa: E731  (each expert's floor before the logarithm)
    parts = (floor(clf.linear_.predict_proba(Z[:, [2]])) ** 0.4 * floor(clf.trees_.predict_proba(Z)) ** 0.3
             * floor(clf.mlp_.predict_proba(Z)) ** 0.3)
    np.testing.assert_allclose(clf.predict_proba(X), parts / parts.sum(axis=1, keepdims=True), rtol=1e-6)
    assert clf.mlp_.best_epoch_ < clf.mlp_.n_iter_  # it stopped on the validation loss
    save_classifier(clf, tmp_path / "clf")
    np.testing.assert_allclose(load_classifier(tmp_path / "clf").predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    only_mlp = LatentFusionClassifier(linear_columns=(2,), experts="mlp").fit(X, y)
    assert only_mlp.trees_ is None and only_mlp.mlp_ is not None
    with pytest.raises(ValueError, match="experts"):
        LatentFusionClassifier(linear_columns=(2,), experts="svm").fit(X, y)


def test_fusion_in_classify_reads_the_rr_columns_and_the_cli_saves_it(tmp_path, capsys):
    ls, lat, keys, y = _records_set(tmp_path / "lat", n_per=120)
    res = classify_latent_set(ls, "fusion", features="latent_rec,rr", class_weight="balanced")
    assert res.report["params"]["linear_columns"] == [4, 5] and res.report["selected"] == {}
    assert res.report["test"]["per_class"]["S"]["sensitivity"] > 0.9
    with pytest.raises(ConfigError, match="auxiliary group"):
        classify_latent_set(ls, "fusion", features="latent")
    code, out, err = run(["classify", "--latents", str(tmp_path / "lat"), "--model", "fusion", "--features",
                          "latent_rec,rr", "--class-weight", "balanced", "--param", "experts=xgboost,mlp",
                          "--param", "n_estimators=20", "--out", str(tmp_path / "clf"), "--json"], capsys)
    assert code == 0, err
    rep = last_json(out)
    assert rep["features"] == ["latent_rec", "rr"] and rep["params"]["experts"] == "xgboost,mlp"
    clf = load_classifier(tmp_path / "clf")
    assert clf.mlp_ is not None and clf.trees_ is not None
    x, _ = LatentSet.open(tmp_path / "lat").split("test", features="latent_rec,rr")
    pred = np.loadtxt(tmp_path / "clf" / "predictions.csv", delimiter=",", skiprows=1, usecols=4)
    np.testing.assert_array_equal(clf.predict(x), pred)
