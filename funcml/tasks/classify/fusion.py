"""Late fusion of experts: a logistic regression on a few columns, XGBoost and/or an MLP on all of them.

Made for heartbeats (:func:`~funcml.tasks.classify.classify_latent_set` with ``model="fusion"``):
the linear expert reads the auxiliary columns alone (the beat's timing, the RR features, and with
``qrs`` its QRS width and area against the patient's own beats), where a linear rule carries over
from patient to patient, and the trees read the morphology (the latents) with them.
``experts="xgboost,mlp"`` adds an MLP on all columns beside the trees. Each expert is fitted on
its own; the fused probability is their weighted geometric mean, the linear expert weighing w and
the M others (1 - w) / M each,

    p(k | x) ∝ p_lin(k | x[cols]) ** w * prod_m p_m(k | x) ** ((1 - w) / M),

with each expert's probability floored at 1e-12 (an expert sure that a class is impossible lowers
it, but cannot veto it alone), so a class wins where the experts agree it is likely, and no
expert's features drown another's (as 64 latents drown 4 RR features inside one model). No weight or threshold is fitted on the
validation split; the trees run a fixed number of rounds, the MLP stops early on the validation
loss when ``fit`` gets validation data.

Stored as one classifier directory: the linear expert's coefficients (``linear.coef``,
``linear.intercept``) and the MLP's weights (``mlp.net.*``) in the safetensors file, the trees in
``xgboost.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from funcml.tasks.classify.base import LatentClassifier, logits_to_proba
from funcml.tasks.classify.linear import LatentLogisticRegression
from funcml.tasks.classify.mlp import LatentMLPClassifier
from funcml.tasks.classify.targets import MULTILABEL
from funcml.tasks.classify.xgb import LatentXGBClassifier

EPS = 1e-12  # floor of an expert's probability before the logarithm
EXPERTS = ("xgboost", "mlp")  # the experts on all columns that ``experts`` may name


class LatentFusionClassifier(LatentClassifier):
    """Logistic regression on ``linear_columns`` and XGBoost (and/or an MLP) on all columns, fused by
    a weighted geometric mean of their probabilities (single-label tasks).

    Args:
        linear_columns: the column indices the linear expert reads (e.g. the RR features of
            ``latent,rr``; :func:`classify_latent_set` passes the auxiliary columns).
        C: the linear expert's inverse regularisation strength.
        n_estimators, max_depth, learning_rate: the trees' (fixed) rounds, depth and step.
        weight: w in [0, 1], the linear expert's share (0.5: it counts as much as the others together).
        experts: the experts on all columns, comma-separated: ``xgboost``, ``mlp`` or ``xgboost,mlp``.
        class_weight: None, ``"balanced"`` or ``{class: weight}``, given to both experts.
        device, n_jobs, random_state: the device, the trees' threads and the seed.
        standardize, task: see :class:`LatentClassifier`.

    Attributes:
        linear_: the fitted :class:`LatentLogisticRegression` (on ``linear_columns``);
        trees_, mlp_: the fitted :class:`LatentXGBClassifier` and :class:`LatentMLPClassifier` (on all
        columns), None when ``experts`` does not name them.
    """

    kind = "fusion"

    def __init__(self, linear_columns=(), C=0.1, n_estimators=100, max_depth=4, learning_rate=0.1, weight=0.5,
                 class_weight=None, experts="xgboost", device="cpu", n_jobs=None, standardize=True, task="auto",
                 random_state=0):
        self.linear_columns = linear_columns
        self.C = C
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.weight = weight
        self.class_weight = class_weight
        self.experts = experts
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

    def _expert_names(self) -> tuple[str, ...]:
        names = tuple(e.strip() for e in str(self.experts).split(",") if e.strip())
        if not names or len(set(names)) != len(names) or not set(names) <= set(EXPERTS):
            raise ValueError(f"experts must name one or both of {', '.join(EXPERTS)}; got {self.experts!r}")
        return names

    def _build(self) -> None:
        """Unfitted experts: ``linear_``, and ``trees_``/``mlp_`` (or None) as ``experts`` names them."""
        names = self._expert_names()
        self.linear_ = LatentLogisticRegression(C=self.C, class_weight=self.class_weight, standardize=False,
                                                task=self.task_)
        self.trees_ = LatentXGBClassifier(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            early_stopping_rounds=None, class_weight=self.class_weight, device=self.device, n_jobs=self.n_jobs,
            standardize=False, task=self.task_, random_state=self.random_state) if "xgboost" in names else None
        self.mlp_ = LatentMLPClassifier(class_weight=self.class_weight, device=self.device, standardize=False,
                                        task=self.task_, random_state=self.random_state) if "mlp" in names else None

    def _others(self) -> list[LatentClassifier]:
        return [e for e in (self.trees_, self.mlp_) if e is not None]

    def _fit(self, Z, Y, Zv, Yv) -> None:
        if self.task_ == MULTILABEL:
            raise ValueError("the fusion classifier takes single-label targets (binary, multi-class, ordinal)")
        cols = self._columns(Z.shape[1])
        self._build()
        self.linear_.fit(Z[:, cols], Y)  # Y: class indices, so every expert has the classes 0..K-1
        if self.trees_ is not None:
            self.trees_.fit(Z, Y)  # a fixed number of rounds
        if self.mlp_ is not None:
            self.mlp_.fit(Z, Y, Zv, Yv)  # early stopping on the validation loss when given
        self.n_iter_ = 1

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        w, others = float(self.weight), self._others()
        z = w * np.log(np.maximum(self.linear_._proba(Z[:, self._columns(Z.shape[1])]), EPS))
        for expert in others:
            z = z + (1.0 - w) / len(others) * np.log(np.maximum(expert._proba(Z), EPS))
        return logits_to_proba(z, self.task_)

    def _state(self):
        _, linear = self.linear_._state()
        tensors = {f"linear.{k}": v for k, v in linear.items()}
        state: dict = {}
        if self.trees_ is not None:
            state["trees"] = self.trees_._state()[0]
        if self.mlp_ is not None:
            state["mlp"], mlp = self.mlp_._state()
            tensors.update({f"mlp.{k}": v for k, v in mlp.items()})
        return state, tensors

    def _extra_files(self) -> dict[str, bytes]:
        return self.trees_._extra_files() if self.trees_ is not None else {}

    def _set_state(self, state, tensors, directory: Path) -> None:
        self._build()
        cols = self._columns(self.n_features_in_)
        for expert in (self.linear_, *self._others()):
            n_in = len(cols) if expert is self.linear_ else self.n_features_in_
            expert.task_, expert.classes_, expert.n_features_in_ = self.task_, np.arange(len(self.classes_)), n_in
            expert.mean_, expert.scale_ = np.zeros(n_in), np.ones(n_in)
        for name, expert in (("linear", self.linear_), ("mlp", self.mlp_)):
            if expert is not None:
                expert._set_state(state.get(name, {}), {k.split(".", 1)[1]: v for k, v in tensors.items()
                                                       if k.startswith(f"{name}.")}, directory)
        if self.trees_ is not None:
            self.trees_._set_state(state["trees"], {}, directory)
        self.n_iter_ = 1
