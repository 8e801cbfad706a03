"""Latent classifiers: known answers for every model and task type, persistence, torch export."""

import functools
import json

import numpy as np
import pytest
import torch

from funcml.errors import ArtifactError
from funcml.tasks.classify import (LatentGraphClassifier, LatentKNNClassifier, LatentLogisticRegression,
                                   LatentMLPClassifier, LatentSVMClassifier, LatentXGBClassifier, classification_metrics,
                                   load_classifier, save_classifier)
from funcml.tasks.classify.targets import expand_proba

TASKS = ["binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression"]
MODELS = {
    "mlp": lambda: LatentMLPClassifier(hidden_layer_sizes=(32,), batch_size=32, max_epochs=60, patience=15),
    "xgboost": lambda: LatentXGBClassifier(n_estimators=100),
    "logreg": lambda: LatentLogisticRegression(),
    "svm-rbf": lambda: LatentSVMClassifier(kernel="rbf"),
    "svm-linear": lambda: LatentSVMClassifier(kernel="linear"),
    "knn": lambda: LatentKNNClassifier(n_neighbors=5),
    "gnn": lambda: LatentGraphClassifier(hidden=32, max_epochs=80, patience=20),
}
DIFFERENTIABLE = {"mlp", "logreg", "svm-rbf", "svm-linear"}


def make_latents(task, n, p=6, seed=0, kind="clusters"):
    """``clusters``: tight, well-separated clusters with every dimension informative (classes at
    random centres; ordinal grades along a line; label j sets dimensions 2j, 2j+1 to +-4).
    ``rule``: unclustered N(0, I) latents whose labels follow a linear rule (for the chance test)."""
    rng = np.random.default_rng(seed)
    ml = task == "multi-label, binary-class"
    if kind == "rule":
        x = rng.normal(size=(n, p))
        w = rng.normal(size=(p, 3 if ml else (2 if task == "binary-class" else 4)))
        y = (x @ w > 0).astype(int) if ml else np.argmax(x @ w, axis=1)
        return x.astype(np.float32), y
    noise = rng.normal(size=(n, p))
    if ml:
        y = rng.integers(0, 2, size=(n, 3))
        return (noise + 4.0 * np.repeat(2 * y - 1, 2, axis=1)).astype(np.float32), y
    k = 2 if task == "binary-class" else 4
    y = rng.integers(0, k, size=n)
    centres = 6.0 * np.random.default_rng(7).normal(size=(k, p))
    gaps = np.linalg.norm(centres[:, None] - centres[None], axis=2)
    assert gaps[~np.eye(k, dtype=bool)].min() > 9  # well separated
    return (centres[y] + noise).astype(np.float32), y


def split(task, seed=0, kind="clusters", shuffle=False):
    x, y = make_latents(task, 360, seed=seed, kind=kind)
    if shuffle:  # every label moved to a random other latent: nothing left to learn
        y = np.random.default_rng(1).permutation(y)
    return (x[:120], y[:120]), (x[120:160], y[120:160]), (x[160:], y[160:])


def fit(model, task, shuffle=False):
    (xtr, ytr), (xva, yva), (xte, yte) = split(task, kind="rule" if shuffle else "clusters", shuffle=shuffle)
    clf = MODELS[model]()
    if model == "gnn":
        clf.fit(xtr, ytr, xva, yva, X_unlabelled=xte)
    else:
        clf.fit(xtr, ytr, xva, yva)
    return clf, xte, yte


@functools.lru_cache(maxsize=None)
def fitted(model, task):
    return fit(model, task)


def _metrics(clf, x, y, task):
    k = 2 if task == "binary-class" else (3 if task == "multi-label, binary-class" else 4)
    return classification_metrics(y, expand_proba(clf.predict_proba(x), clf.classes_, k, task), task)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", list(MODELS))
def test_separable_classes_reach_perfect_accuracy(model, task):
    clf, xte, yte = fitted(model, task)
    m = _metrics(clf, xte, yte, task)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["macro_f1"] == 1.0
    assert np.array_equal(clf.predict(xte), yte)
    assert clf.task_ == (task if task != "ordinal-regression" else "multi-class") or clf.task == task


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "multi-label, binary-class"])
@pytest.mark.parametrize("model", list(MODELS))
def test_shuffled_labels_stay_at_chance(model, task):
    clf, xte, yte = fit(model, task, shuffle=True)
    m = _metrics(clf, xte, yte, task)
    if task == "multi-label, binary-class":
        chance = 0.5
    else:  # the largest class share: what always predicting one class scores
        chance = np.bincount(yte).max() / len(yte)
    assert m["accuracy"] < chance + 0.12, m["accuracy"]
    assert m["accuracy"] > (0.25 if task == "multi-class" else 0.5) - 0.15, m["accuracy"]
    assert 0.3 < m["auc"] < 0.7, m["auc"]


@pytest.mark.parametrize("task", ["binary-class", "multi-class", "multi-label, binary-class"])
@pytest.mark.parametrize("model", list(MODELS))
def test_save_load_round_trip_and_torch_module(model, task, tmp_path):
    clf, xte, _ = fitted(model, task)
    clf.model_id_ = "m" * 64
    save_classifier(clf, tmp_path / "c", label_names={"0": "zero", "1": "one"})
    meta = json.loads((tmp_path / "c" / "classifier.json").read_text())
    assert meta["format"] == "funcml.classifier" and meta["version"] == 1 and meta["latent_dim"] == 6
    assert len(meta["normalisation"]["mean"]) == 6 and meta["model_id"] == "m" * 64
    assert not list((tmp_path / "c").glob("*.pkl")) and not list((tmp_path / "c").glob("*.pickle"))
    loaded = load_classifier(tmp_path / "c")
    assert type(loaded) is type(clf) and loaded.task == clf.task_ and loaded.latent_dim == 6
    assert loaded.model_id == "m" * 64 and list(loaded.classes_) == list(clf.classes_)
    p = clf.predict_proba(xte)
    np.testing.assert_allclose(loaded.predict_proba(xte), p, atol=1e-6)
    np.testing.assert_array_equal(loaded.predict(xte), clf.predict(xte))
    module = loaded.as_torch_module()
    if model.split("-")[0] not in {m.split("-")[0] for m in DIFFERENTIABLE}:
        assert module is None
        return
    z = torch.from_numpy(xte)
    logits = module(z)
    assert logits.shape == (len(xte), p.shape[1])
    np.testing.assert_allclose(module.proba(z).detach().numpy(), p, atol=2e-5)
    act = torch.sigmoid if task == "multi-label, binary-class" else (lambda t: torch.softmax(t, 1))
    np.testing.assert_allclose(act(logits).detach().numpy(), p, atol=2e-5)


@pytest.mark.parametrize("model", sorted(DIFFERENTIABLE))
def test_torch_module_gradients_are_correct(model):
    clf, xte, _ = fitted(model, "multi-class")
    module = clf.as_torch_module().double()
    z = torch.from_numpy(xte[:4].astype(np.float64)).requires_grad_(True)
    assert torch.autograd.gradcheck(module, (z,), eps=1e-6, atol=1e-5)


def test_logistic_regression_equals_sklearn():
    from sklearn.linear_model import LogisticRegression

    (xtr, ytr), _, (xte, _) = split("multi-class", kind="rule")  # overlapping classes
    ours = LatentLogisticRegression(C=0.3).fit(xtr, ytr)
    mean, std = xtr.astype(np.float64).mean(0), xtr.astype(np.float64).std(0)
    ref = LogisticRegression(C=0.3, max_iter=2000).fit(((xtr - mean) / std).astype(np.float32), ytr)
    np.testing.assert_allclose(ours.predict_proba(xte), ref.predict_proba(((xte - mean) / std).astype(np.float32)),
                               atol=1e-6)


def test_rbf_svm_decision_values_equal_sklearn_svc():
    from sklearn.svm import SVC

    (xtr, ytr), _, (xte, _) = split("multi-class", kind="rule")
    ours = LatentSVMClassifier(kernel="rbf", C=2.0).fit(xtr, ytr)
    z_tr, z_te = ours._normalise(xtr), ours._normalise(xte)
    dec = ours.decision_values(xte)
    for j in range(4):
        ref = SVC(kernel="rbf", C=2.0, gamma=ours.gamma_).fit(z_tr, (ytr == j).astype(int))
        np.testing.assert_allclose(dec[:, j], ref.decision_function(z_te), atol=1e-6)


def test_knn_with_one_neighbour_equals_sklearn():
    from sklearn.neighbors import KNeighborsClassifier

    (xtr, ytr), _, (xte, _) = split("multi-class", kind="rule")
    ours = LatentKNNClassifier(n_neighbors=1, standardize=False).fit(xtr, ytr)
    ref = KNeighborsClassifier(1).fit(xtr, ytr)
    np.testing.assert_array_equal(ours.predict(xte), ref.predict(xte))


def test_mlp_keeps_the_best_validation_epoch_and_is_reproducible():
    (xtr, ytr), (xva, yva), (xte, _) = split("binary-class", kind="rule", shuffle=True)  # it overfits, then stops
    a = LatentMLPClassifier(hidden_layer_sizes=(64,), max_epochs=200, patience=10, random_state=3).fit(xtr, ytr, xva, yva)
    assert a.n_iter_ < 200 and a.best_epoch_ == a.n_iter_ - 10
    losses = [h["val_loss"] for h in a.history_]
    assert a.best_epoch_ == int(np.argmin(losses)) + 1
    b = LatentMLPClassifier(hidden_layer_sizes=(64,), max_epochs=200, patience=10, random_state=3).fit(xtr, ytr, xva, yva)
    np.testing.assert_array_equal(a.predict_proba(xte), b.predict_proba(xte))
    with torch.no_grad():
        logits = a.net_(torch.from_numpy(a._normalise(xva)))[:, 0]
        kept = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(yva).float())
    assert float(kept) == pytest.approx(min(losses), rel=1e-5)


def test_xgboost_is_cut_to_its_best_round():
    (xtr, ytr), (xva, yva), _ = split("binary-class", kind="rule")
    rng = np.random.default_rng(5)
    ytr = np.where(rng.uniform(size=len(ytr)) < 0.3, 1 - ytr, ytr)
    clf = LatentXGBClassifier(n_estimators=300, early_stopping_rounds=10, learning_rate=0.3).fit(xtr, ytr, xva, yva)
    assert clf.best_iteration_ < 299
    assert clf.booster_.num_boosted_rounds() == clf.best_iteration_ + 1


def test_gnn_is_transductive_and_predicts_new_rows_independently():
    (xtr, ytr), (xva, yva), (xte, _) = split("multi-class")
    clf = LatentGraphClassifier(hidden=16, max_epochs=30).fit(xtr, ytr, xva, yva, X_unlabelled=xte[:50])
    assert clf.reference_.shape == (120 + 40 + 50, 6)
    nodes = clf._node_logits().numpy()
    p_nodes = torch.softmax(torch.from_numpy(nodes[160:]), 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(xte[:50]), p_nodes, atol=1e-6)  # graph nodes: their own output
    new = xte[50:]
    full = clf.predict_proba(new)
    np.testing.assert_allclose(clf.predict_proba(new[::3]), full[::3], atol=1e-6)  # no influence between queries
    np.testing.assert_allclose(clf.predict_proba(new[::-1]), full[::-1], atol=1e-6)
    np.testing.assert_allclose(clf._node_logits().numpy(), nodes)  # queries do not change the graph


def test_gnn_graph_joins_nearest_neighbours():
    from funcml.tasks.classify.gnn import knn_edges

    pts = np.array([[0.0], [1.0], [10.0], [11.5]], dtype=np.float32)
    edges = knn_edges(pts, 1, "euclidean")
    assert {tuple(e) for e in edges.T} == {(0, 1), (1, 0), (2, 3), (3, 2)}


def test_class_weight_balanced_raises_minority_sensitivity():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2)).astype(np.float32)
    y = (x[:, 0] + 0.8 * rng.normal(size=400) > 1.2).astype(int)  # ~15 % positives, overlapping
    plain = LatentLogisticRegression().fit(x, y)
    balanced = LatentLogisticRegression(class_weight="balanced").fit(x, y)
    assert balanced.predict(x)[y == 1].mean() > plain.predict(x)[y == 1].mean() + 0.2


def test_load_rejects_tampered_and_foreign_directories(tmp_path):
    clf, _, _ = fitted("logreg", "binary-class")
    save_classifier(clf, tmp_path / "c")
    meta = json.loads((tmp_path / "c" / "classifier.json").read_text())
    (tmp_path / "c" / "classifier.safetensors").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="checksum"):
        load_classifier(tmp_path / "c")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "classifier.json").write_text(json.dumps({**meta, "version": 2}))
    with pytest.raises(ArtifactError, match="version 2"):
        load_classifier(tmp_path / "d")
    with pytest.raises(ArtifactError, match="not found"):
        load_classifier(tmp_path / "missing")
