"""Classification metrics as the communities report them, computed with scikit-learn.

``accuracy`` and ``auc`` follow MedMNIST's evaluator (``medmnist.evaluator.getACC/getAUC``):
binary tasks threshold the positive-class score at 0.5 and take its ROC AUC; multi-class and
ordinal tasks take the arg-max and average one-vs-rest AUCs over the classes; multi-label tasks
average per-label accuracies (threshold 0.5) and AUCs. Unlike MedMNIST's code, classes (labels)
whose AUC is undefined in the evaluated set (no positive or no negative example) are left out of
the average instead of crashing. Further: ``macro_f1``, ``balanced_accuracy``, per-class
``sensitivity`` (recall; AAMI Se), ``precision`` (positive predictive value; AAMI +P),
``specificity``, ``f1`` and ``support``, the confusion matrix, and for ordinal tasks the mean
absolute error and quadratic-weighted kappa of the predicted grade. When the classes include the
AAMI heartbeat classes S and V, ``j_index`` = Se_S + +P_S + Se_V + +P_V (Mar et al. 2011; at most
4), where a class never predicted counts +P = 0 and a class absent from the evaluated set leaves the
j-index undefined.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, cohen_kappa_score, confusion_matrix, f1_score,
                             log_loss, mean_absolute_error, multilabel_confusion_matrix,
                             precision_recall_fscore_support, roc_auc_score)

from funcml.tasks.classify.targets import BINARY, MULTILABEL, ORDINAL

SELECT_METRICS = ("accuracy", "auc", "macro_f1", "balanced_accuracy", "loss")


def predict_from_proba(proba: np.ndarray, task: str, threshold: float = 0.5) -> np.ndarray:
    """Hard predictions: class indices ``(n,)`` (binary: positive score > threshold) or ``(n, L)`` 0/1."""
    proba = np.asarray(proba)
    if task == MULTILABEL:
        return (proba > threshold).astype(np.int64)
    if task == BINARY:
        return (proba[:, 1] > threshold).astype(np.int64)
    return np.argmax(proba, axis=1).astype(np.int64)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, score))


def _mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, task: str,
                           names: list[str] | None = None) -> dict:
    """See :func:`_classification_metrics` (scikit-learn's warnings about classes absent from the
    evaluated set are expected here and silenced)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*y_pred contains classes not in y_true.*")
        warnings.filterwarnings("ignore", message=".*is ill-defined.*")
        return _classification_metrics(y_true, proba, task, names)


def _classification_metrics(y_true: np.ndarray, proba: np.ndarray, task: str,
                            names: list[str] | None = None) -> dict:
    """Metrics of scores ``proba`` against ``y_true``.

    Args:
        y_true: ``(n,)`` class indices 0..K-1, or ``(n, L)`` 0/1 for multi-label.
        proba: ``(n, K)`` class probabilities (column k = class k) or ``(n, L)`` label probabilities.
        task: a MedMNIST task name.
        names: K class (or L label) names for the per-class entries.

    Returns:
        a JSON-able dict (undefined values are NaN; :func:`json_safe` turns them into null).
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    k = proba.shape[1]
    names = list(names) if names is not None else [str(i) for i in range(k)]
    pred = predict_from_proba(proba, task)
    out: dict = {"count": int(len(y_true))}
    if task == MULTILABEL:
        per_acc = [accuracy_score(y_true[:, j], pred[:, j]) for j in range(k)]
        per_auc = [_auc(y_true[:, j], proba[:, j]) for j in range(k)]
        out["accuracy"] = float(np.mean(per_acc))
        out["auc"] = _mean(per_auc)
        out["macro_f1"] = float(f1_score(y_true, pred, average="macro", zero_division=0))
        out["balanced_accuracy"] = float(np.mean([balanced_accuracy_score(y_true[:, j], pred[:, j])
                                                  if len(np.unique(y_true[:, j])) > 1 else np.nan
                                                  for j in range(k)]))
        out["exact_match"] = float(accuracy_score(y_true, pred))
        mcm = multilabel_confusion_matrix(y_true, pred, labels=list(range(k)))
        per_class = {}
        for j in range(k):
            tn, fp, fn, tp = (int(v) for v in mcm[j].ravel())
            per_class[names[j]] = _rates(tp, fp, fn, tn) | {"accuracy": float(per_acc[j]), "auc": per_auc[j]}
        out["per_class"] = per_class
        out["confusion_matrix"] = mcm.tolist()
        out["loss"] = float(np.mean([log_loss(y_true[:, j], np.clip(proba[:, j], 1e-7, 1 - 1e-7), labels=[0, 1])
                                     for j in range(k)])) if len(y_true) else float("nan")
        return out
    labels = list(range(k))
    if task == BINARY:
        out["accuracy"] = float(accuracy_score(y_true, pred))
        out["auc"] = _auc(y_true, proba[:, 1])
        per_auc = [out["auc"], out["auc"]]
    else:
        out["accuracy"] = float(accuracy_score(y_true, pred))
        per_auc = [_auc((y_true == c).astype(int), proba[:, c]) for c in labels]
        out["auc"] = _mean(per_auc)
    out["macro_f1"] = float(f1_score(y_true, pred, average="macro", zero_division=0))
    out["balanced_accuracy"] = float(balanced_accuracy_score(y_true, pred)) if len(y_true) else float("nan")
    cm = confusion_matrix(y_true, pred, labels=labels)
    total = int(cm.sum())
    per_class = {}
    for c in labels:
        tp = int(cm[c, c])
        fn = int(cm[c].sum()) - tp
        fp = int(cm[:, c].sum()) - tp
        per_class[names[c]] = _rates(tp, fp, fn, total - tp - fn - fp) | {"auc": per_auc[c]}
    out["per_class"] = per_class
    out["confusion_matrix"] = cm.tolist()
    if {"S", "V"} <= set(per_class):
        out["j_index"] = j_index(per_class)
    p = np.clip(proba, 1e-7, 1.0)
    out["loss"] = float(log_loss(y_true, p / p.sum(axis=1, keepdims=True), labels=labels)) if len(y_true) else float("nan")
    if task == ORDINAL:
        out["mae"] = float(mean_absolute_error(y_true, pred))
        out["qwk"] = float(cohen_kappa_score(y_true, pred, weights="quadratic", labels=labels))
    return out


def j_index(per_class: dict) -> float:
    """Se_S + +P_S + Se_V + +P_V of per-class rates (undefined +P, nothing predicted, counts 0)."""
    total = 0.0
    for c in ("S", "V"):
        se, ppv = per_class[c]["sensitivity"], per_class[c]["precision"]
        if not math.isfinite(se):
            return float("nan")
        total += se + (ppv if math.isfinite(ppv) else 0.0)
    return total


def _rates(tp: int, fp: int, fn: int, tn: int) -> dict:
    def ratio(a: int, b: int) -> float:
        return a / b if b else float("nan")

    sens, prec = ratio(tp, tp + fn), ratio(tp, tp + fp)
    f1 = 2 * prec * sens / (prec + sens) if (prec + sens) > 0 else (0.0 if tp + fp + fn else float("nan"))
    return {"sensitivity": sens, "precision": prec, "specificity": ratio(tn, tn + fp), "f1": f1,
            "support": tp + fn}


def default_select_metric(task: str) -> str:
    """Validation metric of the model search: AUC for binary and multi-label, macro-F1 otherwise
    (accuracy rewards predicting the majority class of imbalanced sets such as MIT-BIH)."""
    return "auc" if task in (BINARY, MULTILABEL) else "macro_f1"


def selection_score(metrics: dict, name: str) -> float:
    """A higher-is-better score from :func:`classification_metrics` (``loss`` is negated)."""
    if name not in SELECT_METRICS:
        from funcml.errors import ConfigError

        raise ConfigError(f"unknown selection metric {name!r}; choose from {SELECT_METRICS}")
    value = metrics[name]
    value = -value if name == "loss" else value
    return value if math.isfinite(value) else -math.inf


def json_safe(obj):
    """Replace NaN/Inf by None and numpy scalars/arrays by Python values (for JSON files)."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj
