"""The functions that are explained: latents -> class scores, and signals -> encoder -> class scores.

A :class:`LatentScores` maps latents ``(B, P)`` to one score per class ``(B, K)``; the score is the
log-odds of the class (``output="logodds"``: ``log p_k - log(1 - p_k)``, which is the logit for
multi-label tasks and ``l_k - logsumexp_{j != k} l_j`` for softmax tasks; it does not saturate like
the probability) or its probability (``output="proba"``). Column k belongs to ``classifier.classes_[k]``.
Classifiers with a torch module (MLP, logistic regression, SVM) are differentiable; the others
(k-NN, XGBoost, GNN) are evaluated through ``predict_proba`` and only perturbation methods apply.

A :class:`SignalScores` composes the encoder with it: signals ``(B, C, *spatial)`` are encoded by H
test-time steps from zero (:func:`~funcml.encoders.fitting.fit_latents`, with a fixed context seed
so that the function is deterministic), and the latents are scored. With ``differentiable`` set,
the whole composition can be differentiated with respect to the signal values.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch

from funcml.encoders.config import EncodeConfig
from funcml.encoders.fitting import fit_latents
from funcml.encoders.siren import ModulatedSiren

OUTPUTS = ("logodds", "proba")
_EPS = 1e-7


def log_odds_from_logits(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Per-class log-odds ``(B, K)`` from logits ``(B, K)`` (``sigmoid``: the logits themselves)."""
    if activation == "sigmoid":
        return logits
    k = logits.shape[1]
    others = logits.unsqueeze(1).expand(-1, k, -1)
    mask = torch.eye(k, dtype=torch.bool, device=logits.device)
    return logits - torch.logsumexp(others.masked_fill(mask, float("-inf")), dim=2)


def log_odds_from_proba(proba: torch.Tensor) -> torch.Tensor:
    """``log p - log(1 - p)`` with p clipped to ``[1e-7, 1 - 1e-7]``."""
    p = proba.clamp(_EPS, 1 - _EPS)
    return torch.log(p) - torch.log1p(-p)


class LatentScores:
    """Scores ``(B, K)`` of latents ``(B, P)`` under a loaded classifier (see the module docstring).

    Args:
        classifier: a fitted latent classifier (``predict_proba``, ``as_torch_module``, ``task_``).
        output: ``logodds`` or ``proba``.
        module: use this torch module (latents -> logits) instead of the classifier's own one
            (a weight-randomised copy for the sanity check).
    """

    def __init__(self, classifier, output: str = "logodds", module: torch.nn.Module | None = None) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
        self.classifier = classifier
        self.output = output
        self.module = module if module is not None else classifier.as_torch_module()
        if self.module is not None:
            self.module = self.module.eval()
            for p in self.module.parameters():
                p.requires_grad_(False)
        self.activation = "sigmoid" if classifier.output_activation == "sigmoid" else "softmax"

    @property
    def differentiable(self) -> bool:
        return self.module is not None

    @property
    def n_outputs(self) -> int:
        return len(self.classifier.classes_)

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K)`` (differentiable classifiers only)."""
        if self.module is None:
            raise TypeError("this classifier has no differentiable module")
        return self.module(z)

    def proba(self, z: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(B, K)`` (equal to ``predict_proba``)."""
        if self.module is not None:
            logits = self.module(z)
            return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
        p = self.classifier.predict_proba(z.detach().cpu().numpy().astype(np.float64))
        return torch.as_tensor(p, dtype=z.dtype, device=z.device)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """The explained scores ``(B, K)``."""
        if self.module is not None:
            logits = self.module(z)
            if self.output == "logodds":
                return log_odds_from_logits(logits, self.activation)
            return torch.sigmoid(logits) if self.activation == "sigmoid" else torch.softmax(logits, dim=1)
        p = self.proba(z)
        return log_odds_from_proba(p) if self.output == "logodds" else p

    def with_module(self, module: torch.nn.Module) -> "LatentScores":
        """The same scores computed by another module (e.g. a randomised copy)."""
        return LatentScores(self.classifier, self.output, module=module)


class SignalScores:
    """Scores ``(B, K)`` of signals ``(B, C, *spatial)``: encode (H steps from zero), then classify.

    Args:
        net: the field model's shared network (theta, frozen).
        config: test-time settings (H = ``config.steps``; ``batch_size`` is ignored here).
        scores: the latent scores.
        seed: seeds the context subsets of every call, so equal signals give equal scores
            whatever the batch.
    """

    def __init__(self, net: ModulatedSiren, config: EncodeConfig, scores: LatentScores, seed: int = 0) -> None:
        self.net = net
        self.config = config
        self.scores = scores
        self.seed = int(seed)

    def encode(self, x: torch.Tensor, differentiable: bool = False) -> torch.Tensor:
        """Latents ``(B, P)`` of ``x``; with ``differentiable`` they keep the graph back to ``x``."""
        gen = torch.Generator().manual_seed(self.seed)
        return fit_latents(self.net, x, self.config, generator=gen, differentiable=differentiable)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        differentiable = torch.is_grad_enabled() and x.requires_grad and self.scores.differentiable
        z = self.encode(x, differentiable)
        if differentiable:
            return self.scores(z)
        with torch.no_grad():
            return self.scores(z.detach())

    def proba(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.scores.proba(self.encode(x, False))

    def with_scores(self, scores: LatentScores) -> "SignalScores":
        return SignalScores(self.net, self.config, scores, self.seed)


@contextmanager
def frozen(net: torch.nn.Module) -> Iterator[None]:
    """Temporarily turn off gradients of ``net``'s parameters (attributions need input gradients only)."""
    flags = [p.requires_grad for p in net.parameters()]
    for p in net.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(net.parameters(), flags):
            p.requires_grad_(flag)


# -- model randomisation (Adebayo et al. 2018) ---------------------------------------------------------
def learnt_layers(module: torch.nn.Module) -> list[str]:
    """Names of the sub-modules holding learnt tensors of a classifier module, input to output.

    For a :class:`~funcml.tasks.classify.LatentScorer` only its ``core`` counts (the standardisation
    is data statistics, not learnt weights).
    """
    core = getattr(module, "core", module)
    prefix = "core." if core is not module else ""
    names = []
    for name, sub in core.named_modules():
        own = list(sub.named_parameters(recurse=False)) + [(n, b) for n, b in sub.named_buffers(recurse=False)
                                                           if b.is_floating_point()]
        if own:
            names.append(prefix + name if name else prefix.rstrip("."))
    return names


def randomised_copy(module: torch.nn.Module, layers: list[str] | None = None, seed: int = 0) -> torch.nn.Module:
    """A copy of ``module`` whose learnt tensors in ``layers`` (default: all of :func:`learnt_layers`)
    are replaced by Gaussian noise with each tensor's own mean and standard deviation (one-element
    tensors: standard deviation ``|value|``). The input standardisation is kept."""
    out = copy.deepcopy(module)
    every = learnt_layers(out)
    names = every if layers is None else layers
    subs = dict(out.named_modules())
    for name in names:
        if name not in subs:
            raise ValueError(f"no layer {name!r}; learnt layers are {every}")
        # each layer draws from its own stream, so cascading copies share the noise of a layer
        gen = torch.Generator().manual_seed(int(seed) * 1009 + every.index(name))
        sub = subs[name]
        tensors = list(sub.parameters(recurse=False)) + [b for b in sub.buffers(recurse=False) if b.is_floating_point()]
        for t in tensors:
            with torch.no_grad():
                flat = t.detach().double()
                mean = flat.mean()
                std = flat.std() if t.numel() > 1 else flat.abs().reshape(())
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float64)
                t.copy_((mean + std * noise).to(t.dtype))
    return out.eval()


def cascading_randomisations(module: torch.nn.Module, seed: int = 0) -> list[tuple[str, torch.nn.Module]]:
    """Adebayo's cascading randomisation: copies with the top 1, 2, ... learnt layers randomised
    (output layer first); the last one is fully randomised. Returns ``[(layer name, module), ...]``."""
    layers = learnt_layers(module)
    return [(layers[-k], randomised_copy(module, layers[-k:], seed)) for k in range(1, len(layers) + 1)]


ScoreFn = Callable[[torch.Tensor], torch.Tensor]
