"""Train, select and evaluate a latent classifier on a latent set (what ``funcml classify`` does).

The classifier is fitted on the train split; when the set has a validation split, a small grid of
hyper-parameters (:data:`SEARCH_GRIDS`) is searched on it (and models with early stopping stop on
it); the selected model is evaluated on the test split, or on every row of another latent set
encoded with the same field model (``test_latents``, e.g. the records of other patients). The
features are the latents, the set's auxiliary features (``rr``: a beat's RR intervals) or both
(``features="latent,rr"``; ``latent_rec``: the latents centred on their record's median,
:mod:`funcml.latents.features`); each model standardises them with statistics of the train split only.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from funcml.errors import ArtifactError, ConfigError, DataError
from funcml.latents.features import LATENT, LATENT_REC, feature_columns, parse_features
from funcml.tasks.classify.metrics import (classification_metrics, default_select_metric, json_safe,
                                           predict_from_proba, selection_score)
from funcml.tasks.classify.targets import MULTILABEL, class_names, expand_proba, labels_to_y, n_outputs

MODEL_NAMES = ("mlp", "xgboost", "logreg", "svm", "knn", "gnn", "fusion")

# Hyper-parameters searched on the validation split, per model (only where it pays: the MLP, the
# GNN and XGBoost stop early on the validation loss instead).
SEARCH_GRIDS: dict[str, list[dict[str, Any]]] = {
    "mlp": [{}],
    "xgboost": [{"max_depth": 3}, {"max_depth": 6}],
    "logreg": [{"C": c} for c in (0.01, 0.1, 1.0, 10.0)],
    "svm": [{"kernel": "rbf", "C": c} for c in (0.5, 2.0, 8.0)] + [{"kernel": "linear", "C": c} for c in (0.01, 0.1)],
    "knn": [{"n_neighbors": k} for k in (1, 5, 15, 31)],
    "gnn": [{"n_neighbors": k} for k in (5, 20)],
    "fusion": [{}],  # no search (an MLP expert, when asked for, stops early on the validation loss)
}
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "mlp": {"default": {}, "paper": {"hidden_layer_sizes": (2048, 1024, 512), "dropout": 0.3}},
}


def estimator_class(model: str):
    from funcml.tasks.classify.store import classifier_kinds

    kinds = classifier_kinds()
    if model not in kinds:
        raise ConfigError(f"unknown model {model!r}; choose from {', '.join(MODEL_NAMES)}")
    return kinds[model]


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON, as a comma-separated tuple of numbers, or as text."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConfigError(f"--param takes KEY=VALUE; got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        if "," in raw:
            try:
                value = tuple(json.loads(p) for p in raw.split(","))
            except json.JSONDecodeError:
                value = raw
        else:
            value = {"none": None, "true": True, "false": False}.get(raw.lower(), raw)
    return key, tuple(value) if isinstance(value, list) else value


@dataclass
class EvalSet:
    """Latents to report on: ``X (n, P)``, targets, source rows and their split codes."""

    name: str
    X: np.ndarray
    y: np.ndarray
    rows: np.ndarray
    index: np.ndarray
    splits: np.ndarray


@dataclass
class ClassifyResult:
    """The selected classifier and everything reported about it."""

    classifier: Any
    report: dict
    eval_set: EvalSet
    proba: np.ndarray  # (n, K) on the evaluation set, columns = class indices
    names: list[str] = field(default_factory=list)


def _eval_set(latent_set, rows: np.ndarray, name: str, task: str, features: tuple[str, ...]) -> EvalSet:
    y = labels_to_y(latent_set.labels, task, str(latent_set.path))
    return EvalSet(name=name, X=latent_set.features(rows, features), y=y[rows], rows=rows,
                   index=np.asarray(latent_set.index[rows]), splits=np.asarray(latent_set.splits[rows]))


def check_compatible(train_set, other, features: tuple[str, ...] = (LATENT,)) -> None:
    """Raise unless ``other`` holds labels of the same task and, when the latents are used, latents of
    the same field model."""
    if other.task != train_set.task:
        raise DataError(f"{other.path} has task {other.task!r}, {train_set.path} has {train_set.task!r}")
    if LATENT not in features and LATENT_REC not in features:
        return
    if other.latent_dim != train_set.latent_dim:
        raise ArtifactError(f"{other.path} has latent dimension {other.latent_dim}, {train_set.path} has "
                            f"{train_set.latent_dim}: a classifier cannot be applied across them")
    if train_set.model_id and other.model_id and other.model_id != train_set.model_id:
        raise ArtifactError(f"{other.path} was encoded with model {other.model_id[:12]}, {train_set.path} with "
                            f"{train_set.model_id[:12]}: latents of different models are not comparable")


def classify_latent_set(latent_set, model: str = "mlp", *, test_latents=None, test_split: str = "all",
                        params: dict[str, Any] | None = None, preset: str | None = None, search: bool = True,
                        select_metric: str = "auto", class_weight: str | None = None, device: str = "cpu",
                        seed: int = 0, features: str | tuple[str, ...] = LATENT,
                        log: Callable[[str], None] = lambda s: None) -> ClassifyResult:
    """Fit ``model`` on the train split, select on val, evaluate on test (or on ``test_latents``).

    Args:
        latent_set: an opened :class:`~funcml.latents.LatentSet` with labels.
        model: one of :data:`MODEL_NAMES`.
        test_latents: another latent set (same field model) to report on instead of the test split;
            ``test_split`` picks its rows (``all`` or a split name).
        params: fixed hyper-parameters (removed from the search grid).
        preset: a named parameter set (``paper`` for the MLP: 2048-1024-512, dropout 0.3).
        search: search :data:`SEARCH_GRIDS` on the validation split.
        select_metric: validation metric of the search (``auto``: AUC for binary/multi-label tasks,
            macro-F1 otherwise; see :func:`~funcml.tasks.classify.metrics.default_select_metric`).
        class_weight: None or ``"balanced"`` (models other than k-NN).
        device: ``cpu``, ``cuda`` or ``auto`` (MLP, GNN, XGBoost).
        features: ``latent`` (default), ``rr`` (the set's RR-interval features), ``latent,rr`` ...
            (:mod:`funcml.latents.features`); ``test_latents`` must have the same.
    """
    cls = estimator_class(model)
    groups = parse_features(features)
    feature_names, _ = feature_columns(latent_set, groups)
    task = latent_set.task
    y_all = labels_to_y(latent_set.labels, task, str(latent_set.path))
    k = n_outputs(y_all, task, latent_set.label_names)
    names = class_names(latent_set.label_names, k)
    tr, va = latent_set.split_indices("train"), latent_set.split_indices("val")
    if len(tr) == 0:
        raise DataError(f"{latent_set.path} has no training latents (train split is empty)")
    evaluation = _evaluation_set(latent_set, test_latents, test_split, groups)
    X_tr, y_tr = latent_set.features(tr, groups), y_all[tr]
    X_va, y_va = (latent_set.features(va, groups), y_all[va]) if len(va) else (None, None)
    metric = default_select_metric(task) if select_metric == "auto" else select_metric
    selection_score({metric: 0.0}, metric)  # validates the name
    base, fixed = _fit_params(cls, model, task, device, seed, class_weight, preset, params)
    if model == "fusion":
        base["linear_columns"] = _auxiliary_columns(feature_names, groups)
    grid = _search_grid(model, search and X_va is not None, fixed)
    if X_va is None:
        log("no validation split: no hyper-parameter search and no early stopping")
    found = _search(cls, model, grid, base, fixed, _Fit(X_tr, y_tr, X_va, y_va, evaluation.X, k, names, task),
                    metric, log)
    best = found.best
    best.model_id_ = latent_set.model_id
    proba = expand_proba(best.predict_proba(evaluation.X), best.classes_, k, task)
    report: dict[str, Any] = {
        "model": model, "task": task, "latents": str(latent_set.path), "model_id": latent_set.model_id,
        "latent_dim": latent_set.latent_dim, "features": list(groups), "feature_count": len(feature_names),
        "aux_features": [n for n in feature_names if "." in n],
        "params": json_safe({kk: (list(v) if isinstance(v, tuple) else v) for kk, v in best.get_params().items()}),
        "select_metric": metric, "selected": json_safe(dict(found.params)), "search": found.log,
        "fit_seconds": found.fit_seconds, "search_seconds": found.seconds,
        "counts": {"train": int(len(tr)), "val": int(len(va)), "eval": int(len(evaluation.rows))},
        "eval_set": evaluation.name,
    }
    if X_va is not None:
        report["val"] = classification_metrics(
            y_va, expand_proba(best.predict_proba(X_va), best.classes_, k, task), task, names)
    report["test"] = classification_metrics(evaluation.y, proba, task, names)
    return ClassifyResult(classifier=best, report=report, eval_set=evaluation, proba=proba, names=names)


def _evaluation_set(latent_set, test_latents, test_split: str, groups: tuple[str, ...]):
    """The rows to report on: the test split, or ``test_latents`` (its ``test_split`` rows, or all)."""
    task = latent_set.task
    if test_latents is not None:
        check_compatible(latent_set, test_latents, groups)
        rows = np.arange(len(test_latents)) if test_split == "all" else test_latents.split_indices(test_split)
        evaluation = _eval_set(test_latents, rows, f"{test_latents.path}:{test_split}", task, groups)
    else:
        evaluation = _eval_set(latent_set, latent_set.split_indices("test"), "test", task, groups)
    if len(evaluation.rows) == 0:
        raise DataError(f"nothing to evaluate on: {evaluation.name} is empty (pass --test-latents OTHER)")
    return evaluation


def _auxiliary_columns(feature_names: list[str], groups: tuple[str, ...]) -> tuple[int, ...]:
    """The columns of the auxiliary features (``rr`` ...) among ``feature_names``: what the fusion's linear
    expert reads; raises when the features have none."""
    cols = tuple(j for j, n in enumerate(feature_names) if "." in n)
    if not cols or len(cols) == len(feature_names):
        raise ConfigError(f"the fusion model needs the latents and an auxiliary group beside them "
                          f"(e.g. --features latent,rr or latent_rec,rr); got {','.join(groups)}")
    return cols


def _fit_params(cls, model: str, task: str, device: str, seed: int, class_weight: str | None,
                preset: str | None, params: dict[str, Any] | None) -> tuple[dict, dict]:
    """``(base, fixed)``: the parameters every candidate gets (task, device, seed, class weight, preset)
    and the user's fixed ones, both checked against the model's parameter names."""
    accepted = set(cls().get_params())
    base: dict[str, Any] = {"task": task}
    for key, value in (("device", device), ("random_state", seed)):
        if key in accepted:
            base[key] = value
    if class_weight is not None:
        if "class_weight" not in accepted:
            raise ConfigError(f"--class-weight does not apply to {model}")
        base["class_weight"] = class_weight
    if preset:
        presets = PRESETS.get(model, {"default": {}})
        if preset not in presets:
            raise ConfigError(f"unknown preset {preset!r} for {model}; available: {', '.join(presets)}")
        base.update(presets[preset])
    fixed = dict(params or {})
    unknown = set(fixed) - accepted
    if unknown:
        raise ConfigError(f"{model} has no parameter(s) {sorted(unknown)}; it takes {sorted(accepted)}")
    return base, fixed


def _search_grid(model: str, search: bool, fixed: dict[str, Any]) -> list[dict[str, Any]]:
    """The candidates of the search (one empty one without it), without the fixed parameters, deduplicated."""
    grid = SEARCH_GRIDS[model] if search else [{}]
    grid = [{k2: v for k2, v in g.items() if k2 not in fixed} for g in grid]
    return [g for i, g in enumerate(grid) if g not in grid[:i]]


@dataclass
class _Fit:
    """What the search fits on: train and val features ``(n, F)`` and targets, the rows to predict (the
    GNN's unlabelled nodes), the number of outputs, the class names and the task."""

    X_tr: np.ndarray
    y_tr: np.ndarray
    X_va: np.ndarray | None
    y_va: np.ndarray | None
    X_eval: np.ndarray
    k: int
    names: list[str]
    task: str


@dataclass
class _Search:
    """The winner of a search, its candidate's parameters and fit time, every candidate's entry and the
    search's seconds."""

    best: Any
    params: dict[str, Any]
    fit_seconds: float
    log: list[dict]
    seconds: float


def _search(cls, model: str, grid: list[dict], base: dict, fixed: dict, data: _Fit, metric: str,
            log: Callable[[str], None]) -> _Search:
    """Fit each candidate, score it on val by ``metric``; the best (the first without val) wins."""
    entries, best, best_score = [], None, -np.inf
    t_search = time.perf_counter()
    for cand in grid:
        est = cls(**{**base, **cand, **fixed})
        t0 = time.perf_counter()
        if model == "gnn":
            est.fit(data.X_tr, data.y_tr, data.X_va, data.y_va, X_unlabelled=data.X_eval)
        else:
            est.fit(data.X_tr, data.y_tr, data.X_va, data.y_va)
        seconds = time.perf_counter() - t0
        entry = {"params": json_safe(dict(cand)), "fit_seconds": seconds}
        score = 0.0
        if data.X_va is not None:
            proba = expand_proba(est.predict_proba(data.X_va), est.classes_, data.k, data.task)
            val = classification_metrics(data.y_va, proba, data.task, data.names)
            entry["val_" + metric] = val[metric]
            score = selection_score(val, metric)
        entries.append(entry)
        log(f"  {model} {cand or 'defaults'}: {seconds:.1f} s" +
            (f", val {metric} {entry['val_' + metric]:.4f}" if data.X_va is not None else ""))
        if best is None or score > best_score:
            best, best_score = _Search(est, cand, seconds, entries, 0.0), score
    best.seconds = time.perf_counter() - t_search
    return best


def predictions_frame(result: ClassifyResult):
    """Per-row predictions of the evaluation set as a DataFrame (true, predicted, probabilities)."""
    import pandas as pd

    from funcml.data.base import SPLITS

    ev, task = result.eval_set, result.report["task"]
    df = pd.DataFrame({"row": ev.rows, "index": ev.index, "split": [SPLITS[int(s)] for s in ev.splits]})
    pred = predict_from_proba(result.proba, task)
    if task == MULTILABEL:
        for j, name in enumerate(result.names):
            df[f"true_{name}"] = ev.y[:, j]
            df[f"pred_{name}"] = pred[:, j]
            df[f"p_{name}"] = result.proba[:, j]
    else:
        df["true"] = ev.y
        df["pred"] = pred
        df["true_name"] = [result.names[int(c)] for c in ev.y]
        df["pred_name"] = [result.names[int(c)] for c in pred]
        for j, name in enumerate(result.names):
            df[f"p_{name}"] = result.proba[:, j]
    return df


def write_outputs(result: ClassifyResult, out: str | Path, latent_set, *, overwrite: bool = False) -> dict[str, str]:
    """Write the classifier directory: the model files, predictions.csv, metrics.json and figures."""
    from funcml.io import atomic_dir, atomic_write_bytes, atomic_write_json
    from funcml.tasks.classify.figures import plot_confusion, plot_roc
    from funcml.tasks.classify.store import save_classifier
    from funcml.tasks.classify.targets import BINARY

    report, task = result.report, result.report["task"]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        training = {k: report[k] for k in ("latents", "select_metric", "search", "fit_seconds", "search_seconds",
                                           "counts", "eval_set")}
        features = {"groups": report["features"], "aux_names": report["aux_features"]}
        training["source"] = latent_set.manifest.get("source", {})
        save_classifier(result.classifier, tmp, label_names={str(i): n for i, n in enumerate(result.names)},
                        model_id=latent_set.model_id, metrics={k: report[k] for k in ("val", "test") if k in report},
                        training=training, features=features)
        buf = io.StringIO()
        predictions_frame(result).to_csv(buf, index=False, float_format="%.6g")
        atomic_write_bytes(tmp / "predictions.csv", buf.getvalue().encode())
        atomic_write_json(tmp / "metrics.json", json_safe(report))
        title = f"{report['model']} on {Path(report['latents']).name} ({report['eval_set']})"
        plot_confusion(np.asarray(report["test"]["confusion_matrix"]), result.names, tmp / "confusion_matrix.png",
                       title)
        files = {"classifier": str(out), "predictions": str(Path(out) / "predictions.csv"),
                 "metrics": str(Path(out) / "metrics.json"), "confusion_matrix": str(Path(out) / "confusion_matrix.png")}
        if task == BINARY:
            plot_roc(result.eval_set.y, result.proba[:, 1], tmp / "roc.png", name=report["model"], title=title,
                     positive=result.names[1] if len(result.names) > 1 else None)
            files["roc"] = str(Path(out) / "roc.png")
    return files
