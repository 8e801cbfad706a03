"""Interpretability of latent classifiers: attributions on latents and back to signal space (captum).

``funcml explain --latents L --classifier CLF [--model DIR] --out DIR`` explains a classifier written
by ``funcml classify --out`` on rows of a latent set:

* attributions over the latent dimensions (per signal, and averaged per explained class);
* attributions in signal space through the differentiable encoder: signal -> H test-time steps
  from zero (:func:`~funcml.encoders.fitting.fit_latents` with ``differentiable=True``) ->
  classifier, attributed to the input samples, pixels or voxels (:class:`SignalScores`);
* counterfactual latents: phi moved along the classifier's gradient until the prediction flips,
  decoded, and the change to the decoded original;
* quality checks: deletion/insertion curves (AUC) against random orders and the
  model-randomisation sanity check (Adebayo et al. 2018) as a Spearman rank correlation.

Methods (captum): ``ig`` (integrated gradients), ``saliency``, ``gradshap`` (expected gradients
over training references) and ``occlusion``. Gradient methods need a differentiable classifier
(MLP, logistic regression, SVM); k-NN, XGBoost and the GNN are explained with ``occlusion``.
"""

from funcml.tasks.explain.attribute import GRADIENT_METHODS, METHODS, attribute
from funcml.tasks.explain.counterfactual import Counterfactuals, latent_counterfactuals
from funcml.tasks.explain.quality import perturbation_curves, randomisation_summary, rank_correlation
from funcml.tasks.explain.run import (ExplainConfig, ExplainResult, check_compatible, explain_latent_set,
                                      parse_indices, write_outputs)
from funcml.tasks.explain.scores import (LatentScores, SignalScores, cascading_randomisations, learnt_layers,
                                         randomised_copy)

__all__ = [
    "METHODS", "GRADIENT_METHODS", "attribute", "Counterfactuals", "latent_counterfactuals", "perturbation_curves",
    "randomisation_summary", "rank_correlation", "ExplainConfig", "ExplainResult", "check_compatible",
    "explain_latent_set", "parse_indices", "write_outputs", "LatentScores", "SignalScores",
    "cascading_randomisations", "learnt_layers", "randomised_copy",
]
