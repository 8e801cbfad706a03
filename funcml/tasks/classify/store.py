"""The classifier directory (format ``funcml.classifier``, version 1): save and load, no pickle.

Layout::

    classifier.json         {"format": "funcml.classifier", "version": 1, "kind", "class", "task",
                             "classes", "class_names", "label_names", "latent_dim", "model_id",
                             "normalisation": {"mean": [P], "scale": [P]}, "features", "params", "state",
                             "metrics", "training", "files": {name: sha256}, "funcml_version", "created"}
    classifier.safetensors  learnt tensors (torch weights; linear/kernel parameters; k-NN references)
    xgboost.json            XGBoost's own JSON model (kind ``xgboost`` only)

``load_classifier`` checks the format, the version and every file's sha256, then rebuilds the
estimator from its hyper-parameters and learnt parameters.
"""

from __future__ import annotations

import datetime as _dt
import inspect
from pathlib import Path

import numpy as np

from funcml import __version__
from funcml.errors import ArtifactError, OutputExistsError
from funcml.io.artifact import read_artifact_config
from funcml.io import atomic_write_bytes, atomic_write_json, load_tensors, save_tensors, sha256_file
from funcml.tasks.classify.base import LatentClassifier
from funcml.tasks.classify.metrics import json_safe
from funcml.tasks.classify.targets import CLASSIFICATION_TASKS

FORMAT = "funcml.classifier"
VERSION = 1
META_FILE = "classifier.json"
TENSOR_FILE = "classifier.safetensors"


def classifier_kinds() -> dict[str, type[LatentClassifier]]:
    """``kind -> estimator class`` of every latent classifier."""
    from funcml.tasks.classify.fusion import LatentFusionClassifier
    from funcml.tasks.classify.gnn import LatentGraphClassifier
    from funcml.tasks.classify.knn import LatentKNNClassifier
    from funcml.tasks.classify.linear import LatentLogisticRegression, LatentSVMClassifier
    from funcml.tasks.classify.mlp import LatentMLPClassifier
    from funcml.tasks.classify.xgb import LatentXGBClassifier

    classes = (LatentMLPClassifier, LatentXGBClassifier, LatentLogisticRegression, LatentSVMClassifier,
               LatentKNNClassifier, LatentGraphClassifier, LatentFusionClassifier)
    return {c.kind: c for c in classes}


def _json_params(clf: LatentClassifier) -> dict:
    params = clf.get_params(deep=False)
    params["task"] = clf.task_
    return json_safe({k: (list(v) if isinstance(v, tuple) else v) for k, v in params.items()})


def save_classifier(clf: LatentClassifier, directory: str | Path, *, label_names: dict[str, str] | None = None,
                    model_id: str | None = None, metrics: dict | None = None, training: dict | None = None,
                    features: dict | None = None, overwrite: bool = False) -> Path:
    """Write a fitted classifier into ``directory`` (created if needed; files written atomically).

    ``features``: ``{"groups": ["latent", "rr"], "aux_names": ["rr.pre_norm", ...]}``, the inputs it takes
    (default: the latents alone)."""
    directory = Path(directory)
    if (directory / META_FILE).exists() and not overwrite:
        raise OutputExistsError(f"{directory} already holds a classifier (pass --overwrite to replace it)")
    directory.mkdir(parents=True, exist_ok=True)
    state, tensors = clf._state()
    files: dict[str, str] = {}
    if tensors:
        save_tensors(directory / TENSOR_FILE, {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                     metadata={"format": FORMAT})
        files[TENSOR_FILE] = sha256_file(directory / TENSOR_FILE)
    for name, blob in clf._extra_files().items():
        atomic_write_bytes(directory / name, blob)
        files[name] = sha256_file(directory / name)
    classes = [c.item() if isinstance(c, np.generic) else c for c in clf.classes_]
    names = label_names or {}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "kind": clf.kind,
        "class": type(clf).__name__,
        "task": clf.task_,
        "classes": classes,
        "class_names": [str(names.get(str(c), c)) for c in classes],
        "label_names": {str(k): str(v) for k, v in names.items()},
        "latent_dim": int(clf.n_features_in_),
        "model_id": model_id if model_id is not None else getattr(clf, "model_id_", None),
        "normalisation": {"mean": clf.mean_.tolist(), "scale": clf.scale_.tolist()},
        "features": features or {"groups": ["latent"], "aux_names": []},
        "params": _json_params(clf),
        "state": json_safe(state),
        "metrics": json_safe(metrics or {}),
        "training": json_safe(training or {}),
        "files": files,
        "funcml_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(directory / META_FILE, meta)
    return directory


def read_classifier_meta(directory: str | Path) -> dict:
    """Read and check ``classifier.json`` (no tensors loaded)."""
    directory = Path(directory)
    meta = read_artifact_config(directory, META_FILE, FORMAT, VERSION, "classifier")
    for key in ("kind", "task", "classes", "latent_dim", "normalisation", "params", "state", "files"):
        if key not in meta:
            raise ArtifactError(f"{directory}/{META_FILE} lacks {key!r}")
    if meta["kind"] not in classifier_kinds():
        raise ArtifactError(f"{directory}: unknown classifier kind {meta['kind']!r}")
    if meta["task"] not in CLASSIFICATION_TASKS:
        raise ArtifactError(f"{directory}: unknown task {meta['task']!r}")
    features = meta.get("features", {"groups": ["latent"]})
    groups = features.get("groups") if isinstance(features, dict) else None
    if not (isinstance(groups, list) and groups and all(isinstance(g, str) for g in groups)):
        raise ArtifactError(f"{directory}/{META_FILE}: 'features' must name the feature groups it takes")
    norm = meta["normalisation"]
    if not (isinstance(norm, dict) and len(norm.get("mean", [])) == meta["latent_dim"]
            and len(norm.get("scale", [])) == meta["latent_dim"]):
        raise ArtifactError(f"{directory}: normalisation statistics do not have {meta['latent_dim']} entries")
    return meta


def load_classifier(path: str | Path) -> LatentClassifier:
    """Load a classifier directory written by ``funcml classify --out`` or :func:`save_classifier`.

    Returns the fitted estimator (``predict_proba``, ``predict``, ``classes_``, ``task``,
    ``latent_dim``, ``model_id``, ``as_torch_module()``); raises :class:`ArtifactError` when the
    directory is not a classifier, is of another version, or a file is missing or altered.
    """
    directory = Path(path)
    meta = read_classifier_meta(directory)
    for name, digest in meta["files"].items():
        file = directory / name
        if not file.is_file():
            raise ArtifactError(f"{directory}: {name} named in {META_FILE} is missing")
        if sha256_file(file) != digest:
            raise ArtifactError(f"{file} does not match its checksum in {META_FILE} (corrupt or replaced)")
    cls = classifier_kinds()[meta["kind"]]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    defaults = cls().get_params(deep=False)
    params = {}
    for key, value in meta["params"].items():
        if key not in accepted:
            raise ArtifactError(f"{directory}: parameter {key!r} is unknown to {cls.__name__}")
        params[key] = tuple(value) if isinstance(defaults.get(key), tuple) and isinstance(value, list) else value
    clf = cls(**params)
    tensors = {}
    if TENSOR_FILE in meta["files"]:
        tensors = {k: v.numpy() for k, v in load_tensors(directory / TENSOR_FILE).items()}
    clf.task_ = meta["task"]
    clf.classes_ = np.asarray(meta["classes"])
    clf.n_features_in_ = int(meta["latent_dim"])
    clf.mean_ = np.asarray(meta["normalisation"]["mean"], dtype=np.float64)
    clf.scale_ = np.asarray(meta["normalisation"]["scale"], dtype=np.float64)
    clf.model_id_ = meta.get("model_id")
    clf.class_names_ = list(meta.get("class_names") or [str(c) for c in clf.classes_])
    clf.metrics_ = meta.get("metrics", {})
    clf.features_ = list(meta.get("features", {}).get("groups", ["latent"]))
    try:
        clf._set_state(meta["state"], tensors, directory)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{directory}: the stored parameters do not fit a {cls.__name__} ({exc})") from None
    return clf
