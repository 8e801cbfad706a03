"""Gradient-boosted trees (XGBoost, ``tree_method="hist"``; on the GPU when asked and available).

With validation latents, boosting stops after ``early_stopping_rounds`` rounds without a better
validation log-loss and the model is cut to its best round. The model is stored in XGBoost's own
JSON format (``xgboost.json``) and predicted with the booster directly after loading.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from funcml.errors import ConfigError
from funcml.tasks.classify.base import LatentClassifier
from funcml.tasks.classify.targets import MULTILABEL

XGB_FILE = "xgboost.json"


def xgboost_device(device: str) -> str:
    """``cuda`` when asked (or ``auto``) and both torch sees a GPU and XGBoost was built with CUDA."""
    import xgboost

    if device in (None, "cpu"):
        return "cpu"
    has_cuda = bool(xgboost.build_info().get("USE_CUDA"))
    import torch

    if str(device).startswith("cuda") and not (has_cuda and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was requested but no CUDA device is available")
        return "cpu"  # an xgboost-cpu build: train on the CPU
    if device == "auto":
        return "cuda" if has_cuda and torch.cuda.is_available() else "cpu"
    return str(device)


class LatentXGBClassifier(LatentClassifier):
    """XGBoost classifier on latents (multi-label targets natively, one output per label).

    Args:
        n_estimators: boosting rounds at most. learning_rate, max_depth, subsample, colsample_bytree,
        min_child_weight, reg_lambda: XGBoost's parameters.
        early_stopping_rounds: patience on the validation log-loss (used when ``fit`` gets ``X_val``).
        class_weight: None, ``"balanced"`` or ``{class: weight}`` (as sample weights; single-label tasks).
        device: ``cpu``, ``cuda`` or ``auto``. n_jobs: threads. random_state: seed.
        standardize, task: see :class:`LatentClassifier`.

    Attributes:
        booster_: the trained ``xgboost.Booster`` (cut to the best round); best_iteration_.
    """

    kind = "xgboost"

    def __init__(self, n_estimators=500, learning_rate=0.1, max_depth=4, subsample=0.8, colsample_bytree=0.5,
                 min_child_weight=1.0, reg_lambda=1.0, early_stopping_rounds=30, class_weight=None, device="cpu",
                 n_jobs=None, standardize=True, task="auto", random_state=0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.early_stopping_rounds = early_stopping_rounds
        self.class_weight = class_weight
        self.device = device
        self.n_jobs = n_jobs
        self.standardize = standardize
        self.task = task
        self.random_state = random_state

    def _fit(self, Z, Y, Zv, Yv) -> None:
        from xgboost import XGBClassifier

        has_val = Zv is not None
        model = XGBClassifier(
            n_estimators=int(self.n_estimators), learning_rate=self.learning_rate, max_depth=self.max_depth,
            subsample=self.subsample, colsample_bytree=self.colsample_bytree, min_child_weight=self.min_child_weight,
            reg_lambda=self.reg_lambda, tree_method="hist", device=xgboost_device(self.device), n_jobs=self.n_jobs,
            random_state=self.random_state, early_stopping_rounds=self.early_stopping_rounds if has_val else None)
        if self.class_weight is not None and self.task_ == MULTILABEL:
            raise ValueError("XGBoost takes no class_weight for multi-label targets (weights are per sample)")
        per_class = self._class_weight_vector(Y)
        weight = None if per_class is None else per_class[Y]
        kwargs = {"eval_set": [(Zv, Yv)], "verbose": False} if has_val else {}
        model.fit(Z, Y, sample_weight=weight, **kwargs)
        booster = model.get_booster()
        best = getattr(model, "best_iteration", None) if has_val else None
        if best is not None:
            booster = booster[: int(best) + 1]
        booster.set_param({"device": "cpu"})
        self.booster_ = booster
        self.best_iteration_ = int(best) if best is not None else int(self.n_estimators) - 1
        self.n_iter_ = self.best_iteration_ + 1

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        p = np.asarray(self.booster_.inplace_predict(np.ascontiguousarray(Z, dtype=np.float32)), dtype=np.float64)
        if self.task_ == MULTILABEL:
            return p.reshape(len(Z), -1)
        if len(self.classes_) == 2:
            p = p.reshape(-1)
            return np.stack([1 - p, p], axis=1)
        return p.reshape(len(Z), len(self.classes_))

    def _state(self):
        return {"best_iteration": self.best_iteration_}, {}

    def _extra_files(self) -> dict[str, bytes]:
        return {XGB_FILE: bytes(self.booster_.save_raw(raw_format="json"))}

    def _set_state(self, state, tensors, directory: Path) -> None:
        import xgboost

        booster = xgboost.Booster()
        booster.load_model(bytearray((directory / XGB_FILE).read_bytes()))
        booster.set_param({"device": "cpu"})
        self.booster_ = booster
        self.best_iteration_ = int(state["best_iteration"])
        self.n_iter_ = self.best_iteration_ + 1
