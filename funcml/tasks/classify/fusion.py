"""Late fusion of two experts: a logistic regression on a few columns and XGBoost on all of them.

Made for heartbeats (:func:`~funcml.tasks.classify.classify_latent_set` with ``model="fusion"``):
the linear expert reads the beat's timing (the RR features) alone, where a linear rule carries
over from patient to patient, and the trees read the morphology (the latents) with the timing.
Each expert is fitted on its own; the fused probability is their weighted geometric mean,

    p(k | x) ∝ p_lin(k | x[cols]) ** w * p_xgb(k | x) ** (1 - w),

so a class wins where both experts find it likely, and neither expert's features drown the
other's (as 64 latents drown 4 RR features inside one model). No weight or threshold is fitted
on the validation split; the trees run a fixed number of rounds (no early stopping).

Stored as one classifier directory: the linear expert's coefficients in the safetensors file
(``linear.coef``, ``linear.intercept``), the trees in ``xgboost.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from funcml.tasks.classify.base import LatentClassifier, logits_to_proba
from funcml.tasks.classify.linear import LatentLogisticRegression
from funcml.tasks.classify.targets import MULTILABEL
from funcml.tasks.classify.xgb import LatentXGBClassifier

EPS = 1e-12  # floor of an expert's probability before the logarithm


class LatentFusionClassifier(LatentClassifier):
    """Logistic regression on ``linear_columns`` and XGBoost on all columns, fused by a weighted
    geometric mean of their probabilities (single-label tasks).

    Args:
        linear_columns: the column indices the linear expert reads (e.g. the RR features of
            ``latent,rr``; :func:`classify_latent_set` passes the auxiliary columns).
        C: the linear expert's inverse regularisation strength.
        n_estimators, max_depth, learning_rate: the trees' (fixed) rounds, depth and step.
        weight: w in [0, 1], the linear expert's share (0.5: both count alike).
        class_weight: None, ``"balanced"`` or ``{class: weight}``, given to both experts.
        device, n_jobs, random_state: the trees' device, threads and seed.
        standardize, task: see :class:`LatentClassifier`.

    Attributes:
        linear_: the fitted :class:`LatentLogisticRegression` (on ``linear_columns``);
        trees_: the fitted :class:`LatentXGBClassifier` (on all columns).
    """

    kind = "fusion"

    def __init__(self, linear_columns=(), C=0.1, n_estimators=100, max_depth=4, learning_rate=0.1, weight=0.5,
                 class_weight=None, device="cpu", n_jobs=None, standardize=True, task="auto", random_state=0):
        self.linear_columns = linear_columns
        self.C = C
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.weight = weight
        self.class_weight = class_weight
        self.device = device
        self.n_jobs = n_jobs
        self.standardize = standardize
        self.task = task
        self.random_state = random_state

    def _columns(self, n_features: int) -> np.ndarray:
        cols = np.asarray(self.linear_columns, dtype=np.int64).reshape(-1)
        if len(cols) == 0 or cols.min() < 0 or cols.max() >= n_features or len(set(cols.tolist())) != len(cols):
            raise ValueError(f"linear_columns must name different columns among the {n_features} features "
                             f"(e.g. the RR features); got {self.linear_columns!r}")
        if not 0.0 <= float(self.weight) <= 1.0:
            raise ValueError(f"weight must lie in [0, 1]; got {self.weight!r}")
        return cols

    def _experts(self) -> tuple[LatentLogisticRegression, LatentXGBClassifier]:
        linear = LatentLogisticRegression(C=self.C, class_weight=self.class_weight, standardize=False,
                                          task=self.task_)
        trees = LatentXGBClassifier(n_estimators=self.n_estimators, max_depth=self.max_depth,
                                    learning_rate=self.learning_rate, early_stopping_rounds=None,
                                    class_weight=self.class_weight, device=self.device, n_jobs=self.n_jobs,
                                    standardize=False, task=self.task_, random_state=self.random_state)
        return linear, trees

    def _fit(self, Z, Y, Zv, Yv) -> None:
        if self.task_ == MULTILABEL:
            raise ValueError("the fusion classifier takes single-label targets (binary, multi-class, ordinal)")
        cols = self._columns(Z.shape[1])
        self.linear_, self.trees_ = self._experts()
        self.linear_.fit(Z[:, cols], Y)  # Y: class indices, so both experts share classes 0..K-1
        self.trees_.fit(Z, Y)
        self.n_iter_ = 1

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        w = float(self.weight)
        log_lin = np.log(np.maximum(self.linear_._proba(Z[:, self._columns(Z.shape[1])]), EPS))
        log_trees = np.log(np.maximum(self.trees_._proba(Z), EPS))
        return logits_to_proba(w * log_lin + (1.0 - w) * log_trees, self.task_)

    def _state(self):
        _, linear = self.linear_._state()
        trees_state, _ = self.trees_._state()
        return {"trees": trees_state}, {f"linear.{k}": v for k, v in linear.items()}

    def _extra_files(self) -> dict[str, bytes]:
        return self.trees_._extra_files()

    def _set_state(self, state, tensors, directory: Path) -> None:
        self.linear_, self.trees_ = self._experts()
        cols = self._columns(self.n_features_in_)
        for expert, n_in in ((self.linear_, len(cols)), (self.trees_, self.n_features_in_)):
            expert.task_, expert.classes_, expert.n_features_in_ = self.task_, np.arange(len(self.classes_)), n_in
            expert.mean_, expert.scale_ = np.zeros(n_in), np.ones(n_in)
        self.linear_._set_state({}, {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("linear.")},
                                directory)
        self.trees_._set_state(state["trees"], {}, directory)
        self.n_iter_ = 1
