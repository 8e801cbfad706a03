"""benchmarks/ecg_rr.py: the principal-component stand-in for the latents and the spread over seeds."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from funcml.latents import write_latent_set

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ecg_rr  # noqa: E402


def test_pca_codes_replace_the_latents_fitted_on_the_training_rows_only(tmp_path):
    rng = np.random.default_rng(0)
    n, t = 60, 20
    splits = np.r_[np.zeros(40), np.ones(10), np.full(10, 2)].astype(np.uint8)
    beats = rng.normal(size=(n, t)).astype(np.float32)
    beats[splits != 0] += 3.0  # val and test beats lie elsewhere: their mean must not enter the fit
    aux = rng.normal(size=(n, 2)).astype(np.float32)
    fold = write_latent_set(tmp_path / "fold", rng.normal(size=(n, 4)).astype(np.float32), splits=splits,
                            labels=rng.integers(0, 3, size=(n, 1)), task="multi-class",
                            label_names={"0": "N", "1": "S", "2": "V"}, model_id="c" * 64, signal_shape=(1, t),
                            aux=aux, aux_names=("rr.a", "rr.b"), embed_model=False)
    codes = ecg_rr.pca_code_set(fold, beats, tmp_path / "pca")
    assert codes.latent_dim == 4 and codes.aux_names == ["rr.a", "rr.b"]
    np.testing.assert_array_equal(codes.aux, aux)
    np.testing.assert_array_equal(codes.labels, fold.labels)
    z = codes.rows(slice(None))
    train = splits == 0
    np.testing.assert_allclose(z[train].mean(axis=0), 0.0, atol=1e-5)  # centred on the training beats
    assert np.abs(z[~train].mean(axis=0)).max() > 0.5                   # the others were not in the fit
    # The components span the training beats' main directions: the codes keep their variance in order.
    var = z[train].var(axis=0)
    assert np.all(np.diff(var) <= 1e-6)


def _row(model, features, s_se, v_se, j):
    return {"model": model, "features": features, "j_index": j,
            "per_class": {"S": {"sensitivity": s_se}, "V": {"sensitivity": v_se}}}


def test_seed_spread_summarises_each_row_over_the_seeds(monkeypatch, tmp_path):
    base = [_row("fusion", "latent,rr", 0.6, 0.8, 2.0), _row("logreg", "rr,rr_s", 0.2, 0.5, 1.4),
            _row("xgboost", "latent", 0.1, 0.6, 1.2)]
    other = {1: [_row("fusion", "latent,rr", 0.7, 0.9, 2.2)], 2: [_row("fusion", "latent,rr", 0.5, 0.7, 1.9)]}
    calls = []

    def fake_cv(ls, records, models, params, folds, stride, seed, work, ablation):
        calls.append((tuple(models), seed, ablation))
        return other[seed]
    monkeypatch.setattr(ecg_rr, "cross_validation", fake_cv)
    out = ecg_rr.seed_spread(None, None, base, 0, [1, 0, 2, 1], ["fusion", "logreg"], {}, 5, 1, tmp_path)
    # the base seed is not run again, a repeated seed once
    assert calls == [(("fusion", "logreg"), 1, ()), (("fusion", "logreg"), 2, ())]
    # logreg rr,rr_s ran with one seed only, xgboost is not a spread model: only the fusion row is left
    assert [(r["model"], r["features"]) for r in out] == [("fusion", "latent,rr")]
    row = out[0]
    assert row["seeds"] == [0, 1, 2] and row["V_se"]["values"] == [0.8, 0.9, 0.7]
    assert row["V_se"]["mean"] == pytest.approx(0.8) and row["V_se"]["min"] == 0.7 and row["V_se"]["max"] == 0.9
    assert row["S_se"]["mean"] == pytest.approx(0.6) and row["j_index"]["max"] == 2.2


def test_cross_validation_rows_are_kept_per_seed():
    assert ecg_rr.cv_key(5, 1, 0, "fusion-latent,rr") == "cv5-n1-fusion-latent,rr"
    assert ecg_rr.cv_key(5, 1, 2, "fusion-latent,rr") == "cv5-n1-s2-fusion-latent,rr"
    assert ecg_rr.cv_key(5, 1, 2, "fusion-latent,rr", val=False) == "cv5-n1-s2-trainval-fusion-latent,rr"


def test_folds_without_val_records_train_on_them_and_test_the_same_records():
    records = np.repeat([f"r{i}" for i in range(22)], 3)
    with_val, without = ecg_rr.fold_codes(records, 5, 7), ecg_rr.fold_codes(records, 5, 7, val=False)
    tested = np.zeros(len(records), dtype=int)
    for a, b in zip(with_val, without):
        assert len(set(records[a == 1])) == 2 and not (b == 1).any()
        np.testing.assert_array_equal(a == 2, b == 2)           # the same test records
        np.testing.assert_array_equal(b == 0, (a == 0) | (a == 1))  # the val records train
        assert not set(records[a == 2]) & set(records[a != 2])  # a record is in one split of a fold
        tested += a == 2
    np.testing.assert_array_equal(tested, 1)  # every record tested once over the folds


def test_only_models_that_search_or_stop_early_get_val_records():
    fixed = {"logreg": {"C": 0.1}, "xgboost": {"max_depth": 4}}
    assert not ecg_rr.uses_val("logreg", fixed) and ecg_rr.uses_val("logreg", {})  # C open: searched on val
    assert ecg_rr.uses_val("xgboost", fixed)                                         # early stopping
    assert not ecg_rr.uses_val("fusion", fixed) and not ecg_rr.uses_val("fusion-300", fixed)
    assert ecg_rr.uses_val("fusion-mlp", fixed) and ecg_rr.uses_val("fusion-mlp-thirds", fixed)
    assert ecg_rr.uses_val("gnn", {"gnn": {"n_neighbors": 5}})                       # stops early too


def test_the_caption_names_what_the_val_records_serve():
    note = ecg_rr._val_note({"xgboost": True, "logreg": False, "fusion": False})
    assert note == "two of the training records as val for xgboost; logreg, fusion read no val records and train " \
                   "on those records too."
    assert ecg_rr._val_note({}) == "no val records."
