"""scikit-learn linear and kernel models on latents: logistic regression and (linear or RBF) SVMs.

Both are stored as their learnt parameters (no pickle) and rebuilt on load:

* logistic regression: ``coef_ (K', P)`` and ``intercept_ (K',)`` in scikit-learn's layout
  (binary: one row), rebuilt as :class:`sklearn.linear_model.LogisticRegression` objects
  (one per label for multi-label targets);
* SVM: one binary SVM per column (the positive class of a binary task, one-vs-rest per class,
  one per label), each ``s(x) = sum_j a_j k(x, sv_j) + b`` with ``k`` linear (stored as a weight
  vector) or RBF ``exp(-gamma |x - sv|^2)`` (stored support vectors and dual coefficients), then
  Platt scaling ``z = alpha s + beta`` fitted on out-of-fold decision values of the training set
  (3-fold, as ``SVC(probability=True)`` does with 5). Probabilities follow the base rule
  (``softmax`` of ``[0, z]`` for binary, of ``z`` for multi-class; ``sigmoid`` for multi-label).

Both have a differentiable torch version (:meth:`as_torch_module`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC, LinearSVC

from funcml.tasks.classify.base import BinaryLogits, LatentClassifier, logits_to_proba
from funcml.tasks.classify.targets import BINARY, MULTILABEL


def _columns(Y: np.ndarray, task: str, n_classes: int) -> list[np.ndarray]:
    """Binary 0/1 targets of each output column (binary task: one column for the positive class)."""
    if task == MULTILABEL:
        return [Y[:, j] for j in range(Y.shape[1])]
    if task == BINARY and n_classes == 2:
        return [(Y == 1).astype(np.int64)]
    return [(Y == c).astype(np.int64) for c in range(n_classes)]


def _constant_logit(y: np.ndarray) -> float:
    p = np.clip((y.sum() + 0.5) / (len(y) + 1.0), 1e-4, 1 - 1e-4)
    return float(np.log(p / (1 - p)))


def _column_logits_to_proba(z: np.ndarray, task: str) -> np.ndarray:
    if z.shape[1] == 1 and task != MULTILABEL:
        z = np.concatenate([np.zeros_like(z), z], axis=1)
    return logits_to_proba(z, task)


class LinearLogits(torch.nn.Module):
    """``z W^T + b`` as a torch module (``W (K, P)``, ``b (K,)``)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)


class LatentLogisticRegression(LatentClassifier):
    """L2-regularised logistic regression (multinomial for several classes, one per label for
    multi-label targets) on standardised latents.

    Args:
        C: inverse regularisation strength. class_weight: None, ``"balanced"`` or ``{class: weight}``.
        max_iter: L-BFGS iterations. standardize, task: see :class:`LatentClassifier`.

    Attributes:
        coef_ ``(K', P)``, intercept_ ``(K',)`` (binary: one row);
        estimators_: the rebuilt scikit-learn models (one, or one per label).
    """

    kind = "logreg"

    def __init__(self, C=1.0, class_weight=None, max_iter=2000, standardize=True, task="auto"):
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.standardize = standardize
        self.task = task

    def _new(self, class_weight: dict | None = None) -> LogisticRegression:
        return LogisticRegression(C=self.C, class_weight=class_weight, max_iter=self.max_iter)

    def _fit(self, Z, Y, Zv, Yv) -> None:
        weights = self._class_weight_vector(Y)
        if self.task_ == MULTILABEL:
            coefs, icepts = [], []
            for j, y in enumerate(_columns(Y, self.task_, len(self.classes_))):
                if len(np.unique(y)) < 2:
                    coefs.append(np.zeros(Z.shape[1]))
                    icepts.append(_constant_logit(y))
                    continue
                lr = self._new(None if weights is None else {0: 1.0, 1: float(weights[j])}).fit(Z, y)
                coefs.append(lr.coef_[0])
                icepts.append(lr.intercept_[0])
            self.coef_, self.intercept_ = np.array(coefs), np.array(icepts)
        else:
            cw = None if weights is None else {i: float(w) for i, w in enumerate(weights)}
            lr = self._new(cw).fit(Z, Y)
            self.coef_, self.intercept_ = lr.coef_.copy(), lr.intercept_.copy()
        self.n_iter_ = 1
        self._rebuild()

    def _rebuild(self) -> None:
        """scikit-learn estimators from ``coef_``/``intercept_`` (also used after loading)."""
        def make(coef: np.ndarray, intercept: np.ndarray, classes: np.ndarray) -> LogisticRegression:
            lr = self._new()
            lr.coef_, lr.intercept_, lr.classes_ = coef, intercept, classes
            lr.n_features_in_ = coef.shape[1]
            lr.n_iter_ = np.array([0])
            return lr

        if self.task_ == MULTILABEL:
            self.estimators_ = [make(self.coef_[j:j + 1], self.intercept_[j:j + 1], np.arange(2))
                                for j in range(len(self.coef_))]
        else:
            self.estimators_ = [make(self.coef_, self.intercept_, np.arange(len(self.classes_)))]

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        if self.task_ == MULTILABEL:
            return np.stack([est.predict_proba(Z)[:, 1] for est in self.estimators_], axis=1)
        return self.estimators_[0].predict_proba(Z)

    def _torch_core(self) -> torch.nn.Module:
        core = LinearLogits(self.coef_, self.intercept_)
        return BinaryLogits(core) if self.task_ != MULTILABEL and len(self.coef_) == 1 else core

    def _state(self):
        return {}, {"coef": self.coef_, "intercept": self.intercept_}

    def _set_state(self, state, tensors, directory: Path) -> None:
        self.coef_ = np.asarray(tensors["coef"], dtype=np.float64)
        self.intercept_ = np.asarray(tensors["intercept"], dtype=np.float64)
        self.n_iter_ = 1
        self._rebuild()


class KernelScores(torch.nn.Module):
    """Decision values ``(B, K)`` of per-column SVMs, Platt-scaled to logits ``alpha s + beta``.

    Linear kernel: ``s = z W^T + b``; RBF: ``s = exp(-gamma |z - sv|^2) A + b``.
    """

    def __init__(self, kernel: str, weight: np.ndarray, bias: np.ndarray, alpha: np.ndarray, beta: np.ndarray,
                 support: np.ndarray | None = None, gamma: float = 1.0) -> None:
        super().__init__()
        f32 = torch.float32
        self.kernel = kernel
        self.gamma = float(gamma)
        self.register_buffer("weight", torch.as_tensor(weight, dtype=f32))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=f32))
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=f32))
        self.register_buffer("beta", torch.as_tensor(beta, dtype=f32))
        sv = np.zeros((0, weight.shape[0] if kernel == "rbf" else 0)) if support is None else support
        self.register_buffer("support", torch.as_tensor(sv, dtype=f32))

    def decision(self, z: torch.Tensor) -> torch.Tensor:
        if self.kernel == "linear":
            return z @ self.weight.T + self.bias
        # |z - sv|^2 expanded (differentiable everywhere, unlike cdist at zero distance)
        d2 = (z * z).sum(1, keepdim=True) - 2 * z @ self.support.T + (self.support * self.support).sum(1)
        return torch.exp(-self.gamma * d2.clamp_min(0)) @ self.weight + self.bias

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.decision(z) + self.beta


class LatentSVMClassifier(LatentClassifier):
    """Support-vector machine (linear or RBF kernel) with Platt-scaled probabilities.

    Args:
        kernel: ``"rbf"`` (scikit-learn ``SVC``) or ``"linear"`` (``LinearSVC``).
        C: soft-margin penalty. gamma: RBF width, ``"scale"`` = 1 / (P var(Z)) or a number.
        class_weight: None, ``"balanced"`` or ``{class: weight}`` (as sample weights of every column's SVM
            and of its Platt scaling).
        max_samples: RBF SVMs train on a stratified random subset of at most this many latents
            (kernel SVMs scale quadratically). random_state: seeds that subset and the CV folds.
        standardize, task: see :class:`LatentClassifier`.

    Attributes:
        gamma_; support_vectors_ ``(m, P)`` and dual_coef_ ``(m, K')`` (RBF) or coef_ ``(K', P)``
        (linear); intercept_, platt_alpha_, platt_beta_ ``(K',)``.
    """

    kind = "svm"

    def __init__(self, kernel="rbf", C=1.0, gamma="scale", class_weight=None, max_samples=5000, standardize=True,
                 task="auto", random_state=0):
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.max_samples = max_samples
        self.standardize = standardize
        self.task = task
        self.random_state = random_state

    def _fit_column(self, Z: np.ndarray, y: np.ndarray, sw: np.ndarray | None):
        """(weights, intercept, support indices or None) of one binary SVM (sample weights ``sw``)."""
        if self.kernel == "linear":
            svm = LinearSVC(C=self.C, max_iter=20000, random_state=self.random_state).fit(Z, y, sample_weight=sw)
            return svm.coef_[0], float(svm.intercept_[0]), None
        svm = SVC(kernel="rbf", C=self.C, gamma=self.gamma_).fit(Z, y, sample_weight=sw)
        return svm.dual_coef_[0], float(svm.intercept_[0]), svm.support_

    def _decision(self, Z: np.ndarray, w: np.ndarray, b: float, sv: np.ndarray | None) -> np.ndarray:
        if sv is None:
            return Z.astype(np.float64) @ w + b
        d2 = (Z.astype(np.float64) ** 2).sum(1)[:, None] - 2 * Z.astype(np.float64) @ sv.T + (sv ** 2).sum(1)
        return np.exp(-self.gamma_ * np.maximum(d2, 0)) @ w + b

    def _fit(self, Z, Y, Zv, Yv) -> None:
        if self.kernel not in ("rbf", "linear"):
            raise ValueError(f"kernel must be 'rbf' or 'linear'; got {self.kernel!r}")
        rng = np.random.default_rng(self.random_state)
        if self.kernel == "rbf" and self.max_samples and len(Z) > self.max_samples:
            strat = Y if Y.ndim == 1 else Y.argmax(axis=1)
            from sklearn.model_selection import train_test_split

            keep, _ = train_test_split(np.arange(len(Z)), train_size=int(self.max_samples), stratify=strat,
                                       random_state=int(rng.integers(1 << 31)))
            Z, Y = Z[np.sort(keep)], Y[np.sort(keep)]
        if isinstance(self.gamma, str):
            if self.gamma != "scale":
                raise ValueError(f"gamma must be 'scale' or a number; got {self.gamma!r}")
            var = float(Z.astype(np.float64).var())
            self.gamma_ = 1.0 / (Z.shape[1] * var) if var > 0 else 1.0
        else:
            self.gamma_ = float(self.gamma)
        columns = _columns(Y, self.task_, len(self.classes_))
        per_class = self._class_weight_vector(Y)
        weights, intercepts, supports, alphas, betas = [], [], [], [], []
        for j, y in enumerate(columns):
            if per_class is None:
                sw = None
            elif self.task_ == MULTILABEL:
                sw = np.where(y == 1, per_class[j], 1.0)
            else:
                sw = per_class[Y]
            if len(np.unique(y)) < 2:
                weights.append(None)
                intercepts.append(0.0)
                supports.append(None)
                alphas.append(0.0)
                betas.append(_constant_logit(y))
                continue
            w, b, sv = self._fit_column(Z, y, sw)
            weights.append(w)
            intercepts.append(b)
            supports.append(sv)
            oof = self._out_of_fold(Z, y, sw)
            platt = LogisticRegression(C=1e4, max_iter=1000).fit(oof[:, None], y, sample_weight=sw)
            alphas.append(float(platt.coef_[0, 0]))
            betas.append(float(platt.intercept_[0]))
        self._pack(Z, weights, intercepts, supports, alphas, betas)
        self.n_iter_ = 1

    def _out_of_fold(self, Z: np.ndarray, y: np.ndarray, sw: np.ndarray | None) -> np.ndarray:
        """Decision values of each training latent from an SVM that did not see it (3-fold CV)."""
        n_splits = int(min(3, np.bincount(y).min()))
        if n_splits < 2:
            w, b, sv = self._fit_column(Z, y, sw)
            return self._decision(Z, w, b, None if sv is None else Z[sv])
        oof = np.zeros(len(Z))
        folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=self.random_state)
        for tr, te in folds.split(Z, y):
            w, b, sv = self._fit_column(Z[tr], y[tr], None if sw is None else sw[tr])
            oof[te] = self._decision(Z[te], w, b, None if sv is None else Z[tr][sv])
        return oof

    def _pack(self, Z, weights, intercepts, supports, alphas, betas) -> None:
        k, p = len(weights), Z.shape[1]
        self.intercept_ = np.array(intercepts, dtype=np.float64)
        self.platt_alpha_ = np.array(alphas, dtype=np.float64)
        self.platt_beta_ = np.array(betas, dtype=np.float64)
        if self.kernel == "linear":
            self.coef_ = np.stack([np.zeros(p) if w is None else w for w in weights]).astype(np.float64)
            return
        used = np.unique(np.concatenate([s for s in supports if s is not None] or [np.zeros(0, np.int64)]))
        self.support_vectors_ = Z[used].astype(np.float64)
        self.dual_coef_ = np.zeros((len(used), k), dtype=np.float64)
        for j, (w, s) in enumerate(zip(weights, supports)):
            if s is not None:
                self.dual_coef_[np.searchsorted(used, s), j] = w

    def decision_values(self, X) -> np.ndarray:
        """Raw SVM decision values ``(n, K')`` (before Platt scaling)."""
        from sklearn.utils.validation import check_is_fitted, validate_data

        check_is_fitted(self, "classes_")
        Z = self._normalise(validate_data(self, X, reset=False, dtype=[np.float64, np.float32]))
        return self._scores(Z)

    def _scores(self, Z: np.ndarray) -> np.ndarray:
        Z = Z.astype(np.float64)
        if self.kernel == "linear":
            return Z @ self.coef_.T + self.intercept_
        sv = self.support_vectors_
        out = np.empty((len(Z), len(self.intercept_)))
        for start in range(0, len(Z), 4096):
            z = Z[start:start + 4096]
            d2 = (z ** 2).sum(1)[:, None] - 2 * z @ sv.T + (sv ** 2).sum(1)
            out[start:start + 4096] = np.exp(-self.gamma_ * np.maximum(d2, 0)) @ self.dual_coef_ + self.intercept_
        return out

    def _proba(self, Z: np.ndarray) -> np.ndarray:
        return _column_logits_to_proba(self.platt_alpha_ * self._scores(Z) + self.platt_beta_, self.task_)

    def _torch_core(self) -> torch.nn.Module:
        if self.kernel == "linear":
            core = KernelScores("linear", self.coef_, self.intercept_, self.platt_alpha_, self.platt_beta_)
        else:
            core = KernelScores("rbf", self.dual_coef_, self.intercept_, self.platt_alpha_, self.platt_beta_,
                                support=self.support_vectors_, gamma=self.gamma_)
        return BinaryLogits(core) if self.task_ != MULTILABEL and len(self.intercept_) == 1 else core

    def _state(self):
        tensors = {"intercept": self.intercept_, "platt_alpha": self.platt_alpha_, "platt_beta": self.platt_beta_}
        if self.kernel == "linear":
            tensors["coef"] = self.coef_
        else:
            tensors["support_vectors"] = self.support_vectors_
            tensors["dual_coef"] = self.dual_coef_
        return {"gamma": self.gamma_}, tensors

    def _set_state(self, state, tensors, directory: Path) -> None:
        self.gamma_ = float(state["gamma"])
        for attr, key in (("intercept_", "intercept"), ("platt_alpha_", "platt_alpha"), ("platt_beta_", "platt_beta"),
                          ("coef_", "coef"), ("support_vectors_", "support_vectors"), ("dual_coef_", "dual_coef")):
            if key in tensors:
                setattr(self, attr, np.asarray(tensors[key], dtype=np.float64))
        self.n_iter_ = 1
