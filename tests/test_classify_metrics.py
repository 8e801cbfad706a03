"""Classification metrics: MedMNIST's ACC/AUC, scikit-learn's F1/balanced accuracy, known answers."""

import numpy as np
import pytest
from sklearn.metrics import (balanced_accuracy_score, cohen_kappa_score, f1_score, mean_absolute_error,
                             precision_score, recall_score, roc_auc_score)

from funcml.tasks.classify.metrics import classification_metrics, json_safe, predict_from_proba

BIN, MC, ML, ORD = "binary-class", "multi-class", "multi-label, binary-class", "ordinal-regression"


def _random_case(task, n=200, k=4, seed=0):
    rng = np.random.default_rng(seed)
    if task == ML:
        y = rng.integers(0, 2, size=(n, k))
        p = np.clip(0.35 * y + rng.uniform(0, 0.65, size=(n, k)), 0, 1)
        return y, p
    k = 2 if task == BIN else k
    y = rng.integers(0, k, size=n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


@pytest.mark.parametrize("task", [BIN, MC, ML, ORD])
def test_accuracy_and_auc_equal_medmnist_evaluator(task):
    evaluator = pytest.importorskip("medmnist.evaluator")
    y, p = _random_case(task)
    m = classification_metrics(y, p, task)
    y_md = y if task == ML else y[:, None]
    assert m["accuracy"] == pytest.approx(evaluator.getACC(y_md, p, task), abs=1e-12)
    assert m["auc"] == pytest.approx(evaluator.getAUC(y_md, p, task), abs=1e-12)
    assert 0.5 < m["auc"] < 1.0  # informative scores, not a degenerate case


@pytest.mark.parametrize("task", [BIN, MC, ORD])
def test_single_label_metrics_equal_sklearn(task):
    y, p = _random_case(task, seed=1)
    m = classification_metrics(y, p, task, names=[f"c{i}" for i in range(p.shape[1])])
    pred = predict_from_proba(p, task)
    assert np.array_equal(pred, p.argmax(1))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    rec = recall_score(y, pred, average=None)
    prec = precision_score(y, pred, average=None)
    for c in range(p.shape[1]):
        assert m["per_class"][f"c{c}"]["sensitivity"] == pytest.approx(rec[c])
        assert m["per_class"][f"c{c}"]["precision"] == pytest.approx(prec[c])
        assert m["per_class"][f"c{c}"]["support"] == int((y == c).sum())
    if task == ORD:
        assert m["mae"] == pytest.approx(mean_absolute_error(y, pred))
        assert m["qwk"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))


def test_multilabel_metrics_equal_sklearn():
    y, p = _random_case(ML, seed=2)
    m = classification_metrics(y, p, ML, names=["a", "b", "c", "d"])
    pred = (p > 0.5).astype(int)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["balanced_accuracy"] == pytest.approx(np.mean([balanced_accuracy_score(y[:, j], pred[:, j]) for j in range(4)]))
    for j, name in enumerate("abcd"):
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
        assert m["per_class"][name]["sensitivity"] == pytest.approx(recall_score(y[:, j], pred[:, j]))
    assert np.asarray(m["confusion_matrix"]).shape == (4, 2, 2)


def test_known_answer_aami_table():
    # 3 N beats, 2 S beats, 1 V beat; one S predicted as N, the V predicted as S
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 0, 0, 1, 1])
    p = np.eye(3)[pred] * 0.8 + 0.2 / 3
    m = classification_metrics(y, p, MC, names=["N", "S", "V"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[3, 0, 0], [1, 1, 0], [0, 1, 0]]
    assert m["per_class"]["N"]["sensitivity"] == pytest.approx(1.0)
    assert m["per_class"]["N"]["precision"] == pytest.approx(3 / 4)
    assert m["per_class"]["S"]["sensitivity"] == pytest.approx(0.5)
    assert m["per_class"]["S"]["precision"] == pytest.approx(0.5)
    assert m["per_class"]["S"]["specificity"] == pytest.approx(3 / 4)
    assert m["per_class"]["V"]["sensitivity"] == 0.0
    assert np.isnan(m["per_class"]["V"]["precision"])  # never predicted: +P undefined
    assert json_safe(m)["per_class"]["V"]["precision"] is None


def test_auc_skips_classes_absent_from_the_evaluated_set():
    y = np.array([0, 0, 1, 1, 0, 1])  # class 2 never occurs
    p = np.array([[.7, .2, .1], [.6, .3, .1], [.2, .7, .1], [.3, .6, .1], [.5, .4, .1], [.1, .8, .1]])
    m = classification_metrics(y, p, MC)
    assert m["auc"] == pytest.approx(1.0)  # mean over classes 0 and 1 only
    assert np.isnan(m["per_class"]["2"]["auc"])


def test_binary_threshold_matches_medmnist():
    y = np.array([0, 1, 1, 0])
    p = np.array([[0.5, 0.5], [0.4, 0.6], [0.2, 0.8], [0.9, 0.1]])  # a tie at 0.5 counts as negative
    m = classification_metrics(y, p, BIN)
    assert m["accuracy"] == pytest.approx(1.0)
