"""Classification on latent vectors: scikit-learn estimators, training/selection, saved classifiers.

Estimators (scikit-learn API; ``fit(X (n, P), y)`` with optional ``X_val``/``y_val``):
:class:`LatentMLPClassifier` (torch; ``hidden_layer_sizes=(2048, 1024, 512), dropout=0.3`` is the
paper's), :class:`LatentXGBClassifier`, :class:`LatentLogisticRegression`,
:class:`LatentSVMClassifier` (linear or RBF), :class:`LatentKNNClassifier`,
:class:`LatentGraphClassifier` (population-graph GNN, torch-geometric) and
:class:`LatentFusionClassifier` (a logistic regression on a few columns, such as RR features, fused
with XGBoost on all of them). Targets are ``y (n,)`` for
binary, multi-class and ordinal tasks and ``y (n, L)`` 0/1 for multi-label ones. Each standardises
the latents with statistics learnt on its training data.

:func:`classify_latent_set` trains on a latent set's train split, searches a small grid on its val
split and reports MedMNIST accuracy/AUC, macro-F1, balanced accuracy and per-class sensitivity and
precision (:func:`classification_metrics`); :func:`write_outputs` writes the classifier directory.

Contract of a saved classifier (``funcml classify --out DIR``; used by ``funcml explain``)
-------------------------------------------------------------------------------------------
``DIR/classifier.json`` (format ``funcml.classifier``, version 1) holds the model kind, the task,
the classes and their names, ``latent_dim``, the latent set's field-model id (``model_id``), the
standardisation (``normalisation.mean``/``scale``, P numbers each), the hyper-parameters and the
metrics; learnt tensors are in ``DIR/classifier.safetensors`` and XGBoost's model in
``DIR/xgboost.json``. There is no pickle: scikit-learn models are stored as their learnt
parameters and rebuilt on load. ``DIR`` also holds ``predictions.csv``, ``metrics.json``,
``confusion_matrix.png`` and, for binary tasks, ``roc.png``.

``load_classifier(DIR) -> LatentClassifier`` returns an object with

* ``predict_proba(X: np.ndarray (n, P)) -> (n, K)``: column j is ``classes_[j]``; multi-label:
  the probability of label j;
* ``predict(X) -> (n,)`` classes (``(n, L)`` 0/1 for multi-label);
* ``classes_`` (class labels, or label indices 0..L-1), ``class_names_``, ``task`` (a MedMNIST task
  name), ``latent_dim`` (P), ``model_id`` (the field model of the latents, or None);
* ``as_torch_module() -> torch.nn.Module | None``: latents ``(B, P)`` -> logits ``(B, K)``,
  differentiable, standardisation included, for the MLP, logistic regression and linear/RBF SVMs;
  None for k-NN, XGBoost and the GNN. ``softmax(logits)`` (``sigmoid`` for multi-label) equals
  ``predict_proba``; the module's ``output_activation`` names which, and ``module.proba(z)``
  applies it. Binary models give two columns ``[0, z]``.
"""

from funcml.tasks.classify.base import LatentClassifier, LatentScorer
from funcml.tasks.classify.fusion import LatentFusionClassifier
from funcml.tasks.classify.gnn import LatentGraphClassifier
from funcml.tasks.classify.knn import LatentKNNClassifier
from funcml.tasks.classify.linear import LatentLogisticRegression, LatentSVMClassifier
from funcml.tasks.classify.metrics import classification_metrics
from funcml.tasks.classify.mlp import LatentMLPClassifier
from funcml.tasks.classify.run import MODEL_NAMES, ClassifyResult, classify_latent_set, write_outputs
from funcml.tasks.classify.store import load_classifier, save_classifier
from funcml.tasks.classify.xgb import LatentXGBClassifier

__all__ = [
    "LatentClassifier", "LatentScorer", "LatentMLPClassifier", "LatentXGBClassifier", "LatentLogisticRegression",
    "LatentSVMClassifier", "LatentKNNClassifier", "LatentGraphClassifier", "LatentFusionClassifier",
    "classification_metrics",
    "classify_latent_set", "write_outputs", "ClassifyResult", "MODEL_NAMES", "load_classifier", "save_classifier",
]
