"""`funcml explain`: attributions in latent and signal space, their quality checks, counterfactuals."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from funcml.data.base import ArraySignalSet
from funcml.encoders.config import EncodeConfig, FieldConfig
from funcml.encoders.model import FieldModel
from funcml.encoders.siren import ModulatedSiren
from funcml.errors import ArtifactError, ConfigError
from funcml.latents import write_latent_set
from funcml.tasks.classify import (LatentKNNClassifier, LatentLogisticRegression, LatentMLPClassifier,
                                   load_classifier)
from funcml.tasks.explain import (ExplainConfig, LatentScores, attribute, cascading_randomisations,
                                  check_compatible, explain_latent_set, latent_counterfactuals, learnt_layers,
                                  parse_indices, perturbation_curves, randomised_copy, rank_correlation,
                                  write_outputs)
from test_cli import last_json, run, write_medmnist_npz

T = 32
REGION = slice(0, 8)  # the label lives here: a bump centred at sample 4


def bump_task(n=160, seed=0):
    """1D signals ``(n, 1, 32)``: random bumps in samples 12-31 (noise) and, for label 1, a bump at 4."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    x = np.full((n, 1, T), 0.3, np.float32)
    for i in range(n):
        for _ in range(2):
            c = rng.uniform(12, 30)
            x[i, 0] += rng.uniform(0.1, 0.35) * np.exp(-0.5 * ((t - c) / 2) ** 2)
    y = rng.integers(0, 2, n)
    x[y == 1, 0] += 0.4 * np.exp(-0.5 * ((t - 4) / 1.5) ** 2)
    splits = np.r_[np.zeros(n - 60), np.ones(20), np.full(40, 2)].astype(np.uint8)
    return ArraySignalSet(np.clip(x, 0, 1), name="bump", spec="bump", splits=splits, labels=y[:, None],
                          task="binary-class", label_names={"0": "flat", "1": "bump"}, fingerprint=f"bump-{seed}")


@pytest.fixture(scope="module")
def bump(tmp_path_factory):
    """The bump task encoded by a small (untrained) field: H = 3 full-context steps from zero."""
    torch.manual_seed(0)
    signals = bump_task()
    net = ModulatedSiren(FieldConfig(dim_in=1, channels=1, width=32, depth=3, latent_dim=16, omega_first=10.0,
                                     omega_last=20.0), inner_lr=0.5)
    enc = EncodeConfig(steps=3, inner_lr=0.5, context_ratio=1.0, grad_rescale=False)
    model = FieldModel(net, (1, T), enc)
    x = torch.from_numpy(signals.get(np.arange(len(signals))))
    z = model.encode(x).detach().numpy()
    ls = write_latent_set(tmp_path_factory.mktemp("bump") / "lat", z, splits=signals.splits, labels=signals.labels,
                          task=signals.task, label_names=signals.label_names, signal_shape=(1, T), embed_model=False,
                          source={"spec": "bump", "fingerprint": signals.fingerprint})
    train = signals.splits == 0
    clf = LatentLogisticRegression(C=1.0).fit(z[train], signals.labels[train, 0])
    test = ls.split_indices("test")
    assert (clf.predict(z[test]) == signals.labels[test, 0]).mean() > 0.9  # the task is learnt
    return signals, model, ls, clf


def _region_share(a):
    a = np.abs(a[:, 0])
    return a[:, REGION].sum(axis=1) / a.sum(axis=1)


@pytest.mark.parametrize("method", ["ig", "saliency", "occlusion", "gradshap"])
def test_signal_attributions_concentrate_on_the_label_region(bump, method):
    signals, model, ls, clf = bump
    cfg = ExplainConfig(method=method, space="signal", target="true", signal_baseline="mean", quality=False,
                        sanity=False, counterfactual=False, window=(4,))
    rows = ls.split_indices("test")
    res = explain_latent_set(ls, clf, model=model, signals=signals, rows=rows, config=cfg)
    a = res.arrays["signal_attributions"]
    assert a.shape == (len(rows), 1, T)
    share = _region_share(a)
    # the region is 1/4 of the samples; its share of the attribution mass is far larger
    assert share.mean() > 0.55 and np.median(share) > 0.5, share
    assert res.report["signal"]["fidelity"]["prediction_agreement"] == 1.0  # same encoder, same latents


def test_integrated_gradients_completeness(bump):
    """sum(attributions) = f(x) - f(baseline), with f the log-odds computed from predict_proba."""
    signals, model, ls, clf = bump
    rows = ls.split_indices("test")[:12]
    cfg = ExplainConfig(method="ig", ig_steps=32, target="predicted", signal_baseline="mean", quality=False,
                        sanity=False, counterfactual=False)
    res = explain_latent_set(ls, clf, model=model, signals=signals, rows=rows, config=cfg)
    t = res.arrays["targets"]

    def log_odds(z):
        p = clf.predict_proba(z)[np.arange(len(z)), t]
        return np.log(p) - np.log1p(-p)

    z = ls.rows(rows)
    lat = res.arrays["latent_attributions"].sum(axis=1)
    np.testing.assert_allclose(lat, log_odds(z) - log_odds(np.zeros_like(z)), rtol=1e-3, atol=1e-3)
    # signal space: f = classifier(encoder(x)), the baseline is each signal's mean
    x = res.arrays["signals"]
    base = np.broadcast_to(x.mean(axis=2, keepdims=True), x.shape).copy()
    enc = lambda s: model.encode(torch.from_numpy(s)).detach().numpy()  # noqa: E731
    sig = res.arrays["signal_attributions"].reshape(len(rows), -1).sum(axis=1)
    change = log_odds(enc(x)) - log_odds(enc(base))
    np.testing.assert_allclose(sig, change, rtol=1e-2, atol=1e-2 * np.abs(change).max())
    assert res.report["signal"]["completeness"]["relative_gap"] < 1e-2


def test_latent_ig_completeness_for_a_nonlinear_mlp():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(300, 6)).astype(np.float32)
    y = ((z[:, 0] * z[:, 1] > 0) ^ (z[:, 2] > 1)).astype(int)
    clf = LatentMLPClassifier(hidden_layer_sizes=(16,), max_epochs=20, random_state=0).fit(z, y)
    scores = LatentScores(clf, "proba")
    x = torch.from_numpy(z[:20])
    tgt = torch.from_numpy(clf.predict(z[:20]).astype(np.int64))
    a, gaps = attribute(scores, x, tgt, "ig", n_steps=64)
    p = clf.predict_proba(z[:20])[np.arange(20), tgt.numpy()]
    p0 = clf.predict_proba(np.zeros((20, 6), np.float32))[np.arange(20), tgt.numpy()]
    np.testing.assert_allclose(a.sum(dim=1).numpy(), p - p0, atol=5e-3)
    assert gaps.abs().max() < 5e-3


def test_randomisation_check_separates_trained_from_random_classifier(bump):
    signals, model, ls, clf = bump
    rows = ls.split_indices("test")[:16]
    cfg = ExplainConfig(method="saliency", target="true", quality=False, counterfactual=False)
    res = explain_latent_set(ls, clf, model=model, signals=signals, rows=rows, config=cfg)
    trained = res.arrays["signal_attributions"]
    rand = res.arrays["signal_attributions_randomised"]
    assert np.all(rank_correlation(trained, trained) == pytest.approx(1.0))
    sig = res.report["signal"]["randomisation"]["full"]["spearman_abs"]
    assert sig < 0.5, sig  # attributions change when the weights are randomised ...
    assert _region_share(rand).mean() < _region_share(trained).mean() - 0.2  # ... and lose the region
    lat = res.report["latent"]["randomisation"]
    assert [c["layer"] for c in lat["cascading"]] == list(reversed(learnt_layers(clf.as_torch_module())))
    assert lat["full"]["spearman_abs"] < 0.5


def test_randomised_copy_keeps_standardisation_and_redraws_weights():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(120, 5)).astype(np.float32)
    clf = LatentMLPClassifier(hidden_layer_sizes=(8, 8), max_epochs=5, random_state=0).fit(z, (z[:, 0] > 0).astype(int))
    m = clf.as_torch_module()
    layers = learnt_layers(m)
    assert len(layers) == 3 and all(name.startswith("core") for name in layers)
    r = randomised_copy(m, seed=1)
    assert torch.equal(r.mean, m.mean) and torch.equal(r.scale, m.scale)
    for (name, p), (_, q) in zip(m.named_parameters(), r.named_parameters()):
        assert not torch.equal(p, q), name
    casc = cascading_randomisations(m, seed=1)
    assert [name for name, _ in casc] == layers[::-1]
    # the first cascade step redraws the output layer only
    first = dict(casc[0][1].named_parameters())
    for name, p in m.named_parameters():
        assert torch.equal(p, first[name]) != name.startswith(layers[-1] + ".")


def test_deletion_insertion_beat_random_orders(bump):
    signals, model, ls, clf = bump
    rows = ls.split_indices("test")[:16]
    cfg = ExplainConfig(method="ig", target="predicted", signal_baseline="mean", sanity=False, counterfactual=False,
                        signal_curve_points=9, signal_random_orders=2)
    res = explain_latent_set(ls, clf, model=model, signals=signals, rows=rows, config=cfg)
    for space in ("latent", "signal"):
        q = res.report[space]["quality"]
        assert q["deletion"]["auc"] < q["deletion"]["auc_random"], space
        assert q["insertion"]["auc"] > q["insertion"]["auc_random"], space
    # in latent space the deletion curve starts at the classifier's probability of the explained class
    p = np.asarray(res.report["proba_target"]).mean()
    assert res.report["latent"]["quality"]["deletion"]["curve"][0] == pytest.approx(p, abs=1e-5)


def test_perturbation_curves_known_answer():
    """One informative feature of four: deleting it first drops p to p(baseline) after 1/4."""
    def proba(x):
        p1 = torch.sigmoid(4 * x[:, 0])
        return torch.stack([1 - p1, p1], dim=1)

    x = torch.tensor([[1.0, 0.3, -0.2, 0.5]])
    attr = torch.tensor([[2.0, 0.1, 0.0, -0.1]])
    rep = perturbation_curves(proba, x, torch.zeros_like(x), attr, torch.tensor([1]), points=5, random_orders=0)
    p_x, p_b = float(torch.sigmoid(torch.tensor(4.0))), 0.5
    np.testing.assert_allclose(rep["deletion"]["curve"], [p_x, p_b, p_b, p_b, p_b], rtol=1e-6)
    np.testing.assert_allclose(rep["insertion"]["curve"], [p_b, p_x, p_x, p_x, p_x], rtol=1e-6)
    assert rep["deletion"]["auc"] == pytest.approx(np.trapezoid([p_x, p_b, p_b, p_b, p_b], dx=0.25))


def test_counterfactuals_cross_the_boundary_in_the_fewest_steps():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4)).astype(np.float32)
    y = (z[:, 0] - z[:, 1] > 0).astype(int)
    clf = LatentLogisticRegression(C=1.0).fit(z, y)
    scores = LatentScores(clf)
    pred = clf.predict(z[:10])
    step = 0.05
    cf = latent_counterfactuals(scores, z[:10], pred, step=step, max_steps=1000)
    assert cf.flipped.all()
    assert (clf.predict(cf.latents) != pred).all()
    # logistic regression: the log-odds are linear in standardised units u, w.u + b; normalised
    # gradient steps go straight along w, so ceil(|w.u + b| / |w| / step) steps reach the boundary
    m = clf.as_torch_module()
    u = (torch.from_numpy(z[:10]) - m.mean) / m.scale
    logit = m(torch.from_numpy(z[:10])).detach()
    margin = (logit[:, 1] - logit[:, 0]).abs().numpy()
    w_norm = float(torch.autograd.functional.jacobian(lambda v: m.core(v)[:, 1] - m.core(v)[:, 0], u[:1])[0, 0].norm())
    np.testing.assert_array_equal(cf.steps, np.ceil(margin / w_norm / step).astype(int))


def test_gradient_methods_need_a_differentiable_classifier(bump):
    signals, model, ls, clf = bump
    z, y = ls.split("train")
    knn = LatentKNNClassifier(n_neighbors=5).fit(z, y[:, 0])
    with pytest.raises(ConfigError, match="occlusion"):
        explain_latent_set(ls, knn, config=ExplainConfig(method="ig", space="latent"))
    res = explain_latent_set(ls, knn, rows=np.arange(4), config=ExplainConfig(method="occlusion", space="latent"))
    assert res.arrays["latent_attributions"].shape == (4, 16)
    assert "skipped" in res.report["latent"]["randomisation"] and "skipped" in res.report["counterfactual"]
    # occlusion of one latent dimension = the drop of the score when it is set to the baseline (0)
    z4 = ls.rows(np.arange(4))
    t = res.arrays["targets"]
    lo = lambda v: np.log(np.clip(knn.predict_proba(v)[np.arange(4), t], 1e-7, 1 - 1e-7) /  # noqa: E731
                          np.clip(1 - knn.predict_proba(v)[np.arange(4), t], 1e-7, 1))
    z_off = z4.copy()
    z_off[:, 3] = 0
    np.testing.assert_allclose(res.arrays["latent_attributions"][:, 3], lo(z4) - lo(z_off), rtol=1e-4, atol=1e-4)


def test_artifacts_must_belong_together(bump, tmp_path):
    signals, model, ls, clf = bump
    other = write_latent_set(tmp_path / "o", np.zeros((4, 16), np.float32), splits=np.zeros(4), task="binary-class",
                             labels=np.zeros((4, 1)), model_id="b" * 64, signal_shape=(1, T), embed_model=False)
    clf.model_id_ = "a" * 64  # pretend it was trained on another model's latents
    try:
        with pytest.raises(ArtifactError, match="model"):
            check_compatible(other, clf)
    finally:
        del clf.model_id_
    short = write_latent_set(tmp_path / "s", np.zeros((4, 8), np.float32), splits=np.zeros(4), task="binary-class",
                             labels=np.zeros((4, 1)), signal_shape=(1, T), embed_model=False)
    with pytest.raises(ArtifactError, match="dimension"):
        check_compatible(short, clf)


def test_parse_indices():
    assert parse_indices("0-3,7, 5", 10).tolist() == [0, 1, 2, 3, 5, 7]
    assert parse_indices(None, 10) is None
    for bad in ("3-1", "a", "0-10", ""):
        with pytest.raises(ConfigError):
            parse_indices(bad, 10)


@pytest.mark.parametrize("shape", [(1, 32), (1, 8, 8), (1, 6, 6, 6)])
def test_outputs_and_figures_for_1d_2d_3d(shape, tmp_path):
    """write_outputs on 1D beats, 2D images and 3D volumes (orthogonal slices): files and round trip."""
    from funcml.tasks.explain.run import ExplainResult

    rng = np.random.default_rng(0)
    n, p = 3, 6
    arrays = {"rows": np.arange(n), "targets": np.zeros(n, np.int64), "signals": rng.random((n, *shape)),
              "signal_attributions": rng.normal(size=(n, *shape)), "latent_attributions": rng.normal(size=(n, p)),
              "latent_attributions_by_class": np.stack([rng.normal(size=p), np.full(p, np.nan)]),
              "decoded": rng.random((n, *shape)), "counterfactual_decoded": rng.random((n, *shape))}
    arrays["signal_attributions_randomised"] = rng.normal(size=(n, *shape))
    report = {"config": {"method": "ig"}, "rows": [0, 1, 2], "signal": {"encode_steps": 3},
              "counterfactual": {"from_class": ["a", "a", "b"]}, "latent": {}}
    files = write_outputs(ExplainResult(report, arrays, ["a", "b"], titles=["x", "y", "z"]), tmp_path / "o")
    for key in ("latent_figure", "signal_figure", "counterfactual_figure", "attributions", "report"):
        assert (tmp_path / "o" / files[key].split("/")[-1]).is_file(), key
    back = load_file(str(tmp_path / "o" / "attributions.safetensors"))
    np.testing.assert_allclose(back["signal_attributions"], arrays["signal_attributions"].astype(np.float32))
    with pytest.raises(Exception, match="exists"):
        write_outputs(ExplainResult(report, arrays, ["a", "b"]), tmp_path / "o")


# -- the command line and the demo stage -----------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_artifacts(tmp_path_factory):
    """A MedMNIST-layout file, an (untrained) saved model, its latent set and a logistic regression."""
    from funcml.data import load_signals
    from funcml.latents.encode import encode_signal_set
    from funcml.latents import LatentSet
    from funcml.tasks.classify import classify_latent_set
    from funcml.tasks.classify import write_outputs as write_outputs_clf

    d = tmp_path_factory.mktemp("cli")
    data = write_medmnist_npz(d / "mini.npz", n=(40, 8, 8), size=8)
    torch.manual_seed(0)
    net = ModulatedSiren(FieldConfig(dim_in=2, channels=1, width=16, depth=3, latent_dim=8, omega_first=10.0,
                                     omega_last=20.0), inner_lr=0.5)
    FieldModel(net, (1, 8, 8), EncodeConfig(steps=3, inner_lr=0.5, context_ratio=1.0)).save(d / "model")
    model = FieldModel.load(d / "model")
    encode_signal_set(model, load_signals(str(data)), d / "lat", model_dir=d / "model", progress=False)
    ls = LatentSet.open(d / "lat")
    write_outputs_clf(classify_latent_set(ls, "logreg", search=False), d / "clf", ls)
    return d


def test_explain_cli_end_to_end(cli_artifacts, capsys):
    d = cli_artifacts
    out = d / "ex"
    code, stdout, err = run(["explain", "--latents", str(d / "lat"), "--classifier", str(d / "clf"), "--indices",
                             "0-3", "--encode-steps", "2", "--out", str(out), "--json"], capsys)
    assert code == 0, err
    rep = last_json(stdout)
    assert rep["rows"] == [0, 1, 2, 3] and rep["signal"]["encode_steps"] == 2
    assert rep["signal"]["model_encode_steps"] == 3
    for space in ("latent", "signal"):
        q = rep[space]["quality"]
        assert 0 <= q["deletion"]["auc"] <= 1 and 0 <= q["insertion"]["auc_random"] <= 1
        assert -1 <= rep[space]["randomisation"]["full"]["spearman_abs"] <= 1
    for name in ("explain.json", "attributions.safetensors", "latent_attributions.png", "signal_attributions.png",
                 "counterfactuals.png", "deletion_insertion.png"):
        assert (out / name).is_file(), name
    assert json.loads((out / "explain.json").read_text())["rows"] == [0, 1, 2, 3]
    assert "deletion AUC" in err and "randomisation check" in err
    # user errors: one clear line, no traceback
    code, _, err = run(["explain", "--latents", str(d / "lat"), "--classifier", str(d / "clf"), "--out", str(out)],
                       capsys)
    assert code != 0 and "exists" in err and "Traceback" not in err
    code, _, err = run(["explain", "--latents", str(d / "lat"), "--classifier", str(d / "clf"), "--indices", "0-999",
                        "--out", str(d / "e2")], capsys)
    assert code != 0 and "out of range" in err and "Traceback" not in err


def test_explain_cli_rejects_gradients_for_knn(cli_artifacts, capsys):
    d = cli_artifacts
    assert run(["classify", "--latents", str(d / "lat"), "--model", "knn", "--no-search", "--out", str(d / "knn")],
               capsys)[0] == 0
    code, _, err = run(["explain", "--latents", str(d / "lat"), "--classifier", str(d / "knn"), "--method", "ig",
                        "--out", str(d / "e3")], capsys)
    assert code != 0 and "error:" in err and "occlusion" in err and "Traceback" not in err
    code, stdout, err = run(["explain", "--latents", str(d / "lat"), "--classifier", str(d / "knn"), "--method",
                             "occlusion", "--space", "latent", "--indices", "0-1", "--out", str(d / "e4"), "--json"],
                            capsys)
    assert code == 0, err
    assert load_classifier(d / "knn").kind == "knn" and len(last_json(stdout)["rows"]) == 2


def test_demo_stage_explains_the_demo_classifier(cli_artifacts, tmp_path):
    from funcml.data import load_signals
    from funcml.demo import DemoContext
    from funcml.latents import LatentSet
    from funcml.demo.stages.explanation import explanation_stage

    d = cli_artifacts
    ls = LatentSet.open(d / "lat")
    (tmp_path / "classifier").symlink_to(d / "clf", target_is_directory=True)
    ctx = DemoContext(out=tmp_path, signals=load_signals(str(d / "mini.npz")), model=ls.load_model(), latent_set=ls,
                      device=torch.device("cpu"), quick=True, log=lambda s: None)
    rep = explanation_stage(ctx)
    assert rep["rows"] == 2 and rep["encode_steps"] == 5
    assert 0 <= rep["signal"]["deletion_auc"] <= 1
    assert (tmp_path / "explanation" / "signal_attributions.png").is_file()
