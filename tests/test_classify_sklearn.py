"""scikit-learn compatibility: estimator checks for every latent classifier, the FieldEncoder transformer
in pipelines, and latent sets as DataFrames / torch Datasets."""

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from funcml.estimators import (FieldEncoder, LatentGraphClassifier, LatentKNNClassifier, LatentLogisticRegression,
                               LatentMLPClassifier, LatentSVMClassifier, LatentXGBClassifier)

ESTIMATORS = [
    LatentMLPClassifier(hidden_layer_sizes=(32,), max_epochs=30),
    LatentLogisticRegression(),
    LatentSVMClassifier(kernel="rbf"),
    LatentSVMClassifier(kernel="linear"),
    LatentKNNClassifier(),
    LatentXGBClassifier(n_estimators=20),
    LatentGraphClassifier(hidden=16, max_epochs=30),
]


def _expected_failures(estimator):
    if isinstance(estimator, LatentKNNClassifier):
        return {"check_classifiers_multilabel_output_format_predict_proba":
                "k-NN votes give label probabilities of exactly 0 and 1; the check wants them strictly inside"}
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# -- FieldEncoder --------------------------------------------------------------------------------

TINY = dict(width=16, depth=3, latent_dim=8, batch_size=4, inner_steps=2, inner_lr=0.5, val_every=0, test_steps=3)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A model meta-trained for a few steps on 8x8 synthetic images (saved like `funcml train` does)."""
    from conftest import make_signal_set
    from funcml.encoders.presets import get_preset
    from funcml.encoders.trainer import MetaTrainer

    torch.set_num_threads(1)
    signals = make_signal_set(24, (1, 8, 8))
    field, train = get_preset("cpu-image").build(2, 1, steps=4, **TINY)
    out = tmp_path_factory.mktemp("model") / "m"
    MetaTrainer(field, train, signals, out, "cpu", progress=False).run()
    return out


def test_field_encoder_transform_equals_funcml_encode(tiny_model_dir, tmp_path):
    from conftest import make_signal_set
    from funcml.encoders.config import replace
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel

    signals = make_signal_set(10, (1, 8, 8), seed=4)
    model = FieldModel.load(tiny_model_dir)
    latent_set, _ = encode_signal_set(model, signals, tmp_path / "lat", replace(model.encode_defaults, batch_size=4),
                                      model_dir=tiny_model_dir, progress=False)
    enc = FieldEncoder(model=str(tiny_model_dir), batch_size=4).fit(signals.get(np.arange(10)))
    z = enc.transform(signals.get(np.arange(10)))
    assert z.shape == (10, 8) and z.dtype == np.float32
    np.testing.assert_array_equal(z, latent_set.rows(np.arange(10)))
    flat = enc.transform(signals.get(np.arange(10)).reshape(10, -1))  # flattened rows read with the model's shape
    np.testing.assert_array_equal(flat, z)
    assert enc.model_id_ == model.id and list(enc.get_feature_names_out()[:2]) == ["phi_0", "phi_1"]
    assert enc.inverse_transform(z).shape == (10, 1, 8, 8)


def test_field_encoder_refuses_values_outside_unit_range(tiny_model_dir):
    enc = FieldEncoder(model=str(tiny_model_dir)).fit(np.zeros((2, 1, 8, 8)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        enc.transform(np.full((2, 1, 8, 8), 2.0))
    with pytest.raises(ValueError):
        enc.transform(np.full((2, 1, 8, 8), np.nan))
    with pytest.raises(ValueError, match="cannot be read"):
        enc.transform(np.zeros((2, 10)))


def test_pipelines_with_xgboost_and_latent_classifiers(tiny_model_dir):
    from xgboost import XGBClassifier
    from conftest import make_signal_set

    signals = make_signal_set(40, (1, 8, 8), seed=2)
    y = np.arange(40) % 2
    x = np.clip(signals.get(np.arange(40)) + np.where(y, 0.2, -0.2)[:, None, None, None], 0, 1)  # bright vs dark
    for clf in (XGBClassifier(n_estimators=20, max_depth=2), LatentLogisticRegression()):
        pipe = make_pipeline(FieldEncoder(model=str(tiny_model_dir)), clf).fit(x[:30], y[:30])
        assert pipe.predict(x[30:]).shape == (10,)
        assert pipe.score(x[:30], y[:30]) > 0.7  # the latents carry the brightness


def test_field_encoder_meta_trains_when_given_no_model(tmp_path):
    from conftest import make_signal_set

    x = make_signal_set(12, (1, 8, 8), seed=5).get(np.arange(12))
    enc = FieldEncoder(preset="cpu-image", steps=3, train_options=TINY, model_dir=str(tmp_path / "m"))
    z = enc.fit_transform(x)
    assert z.shape == (12, 8) and np.isfinite(z).all()
    assert (tmp_path / "m" / "config.json").is_file() and enc.model_id_


@pytest.mark.parametrize("check_name", ["check_no_attributes_set_in_init", "check_get_params_invariance",
                                        "check_set_params", "check_parameters_default_constructible",
                                        "check_estimator_repr", "check_estimator_cloneable"])
def test_field_encoder_api_checks(check_name):
    import sklearn.utils.estimator_checks as checks

    check = getattr(checks, check_name)
    try:
        check("FieldEncoder", FieldEncoder())
    except TypeError:
        check("FieldEncoder", FieldEncoder)  # checks that take the class


# -- latent sets as DataFrames and torch Datasets feed the estimators ------------------------------

def test_latent_set_dataframe_and_dataset_feed_the_estimators(tmp_path):
    from funcml.latents import write_latent_set

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    ls = write_latent_set(tmp_path / "s", x, splits=np.r_[np.zeros(40), np.full(20, 2)], labels=y[:, None],
                          task="binary-class")
    df = ls.to_dataframe("train")
    clf = LatentLogisticRegression().fit(df[[f"phi_{i}" for i in range(4)]], df["label"])
    assert clf.score(ls.split("test")[0], ls.split("test")[1][:, 0]) > 0.9
    z, lab = next(iter(torch.utils.data.DataLoader(ls.torch_dataset("test"), batch_size=20)))
    np.testing.assert_array_equal(clf.predict(z.numpy()), clf.predict(ls.split("test")[0]))
    assert lab.shape == (20, 1)
