"""Evaluate a latent generator honestly, against a ceiling and a floor.

Protocol (``evaluate_generator``):

* Feature space: a small CNN (:mod:`~funcml.tasks.generate.features`) trained here to classify
  the real training signals (raw signals when the source data can be read, else the decoded
  training latents). Generated latents are decoded through the field model before featurising.
* Reference: the training split (what the generator modelled), raw when available.
* Compared sets, all of the same size n (the held-out split, capped at ``max_compare``) and with
  the held-out labels: the held-out real signals (the ceiling: fresh real data), the held-out
  latents decoded (the ceiling for any latent generator: it includes the field's reconstruction
  error), the generator's samples and a per-class Gaussian fitted to the latents (the floor).
  Samples are drawn ``repeats`` times; means and standard deviations are reported.
* Metrics per set: Fréchet distance and k-NN precision/recall (k = 3) in CNN features; label
  agreement (accuracy of the real-signal CNN on the set, against the labels it was generated
  for); memorisation (nearest-training-neighbour distances against the held-out set's, in the
  standardised latent space and in CNN features of decoded signals, so a copied training latent
  is an exact copy in both).
* CAS: a classifier on latents trained on generated latents (as many as real training latents,
  capped at ``max_cas_train``, with their labels) and tested on the real held-out latents, next to
  the same classifier trained on the same number of real training latents (the ceiling) and on
  Gaussian samples (the floor).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from funcml.errors import DataError
from funcml.tasks.generate.baselines import ClassGaussian
from funcml.tasks.generate.features import embed, predict, train_feature_net
from funcml.tasks.generate.metrics import (classification_accuracy_score, frechet_distance, memorisation,
                                           precision_recall)

SINGLE_LABEL_TASKS = ("binary-class", "multi-class", "ordinal-regression")


def decode_latents(model, latents: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Decode ``(n, P)`` latents to signals ``(n, C, *spatial)`` with a field model, in batches."""
    out = []
    for start in range(0, len(latents), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(latents[start:start + batch_size], dtype=np.float32))
        out.append(model.decode(z.to(model.device)).cpu().numpy())
    if not out:
        return np.zeros((0, *model.signal_shape), np.float32)
    return np.concatenate(out)


def single_labels(latent_set, rows: np.ndarray) -> np.ndarray | None:
    """Labels ``(n,)`` of single-label sets, else None."""
    if latent_set.labels is None or latent_set.task not in SINGLE_LABEL_TASKS:
        return None
    return np.asarray(latent_set.labels[rows])[:, 0].astype(np.int64)


def held_out_rows(latent_set) -> tuple[np.ndarray, str]:
    for split in ("test", "val"):
        rows = latent_set.split_indices(split)
        if len(rows) >= 5:
            return rows, split
    raise DataError(f"{latent_set.path} has no held-out split (test or val) with at least 5 latents "
                    "to evaluate against")


def _subsample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= n else np.sort(rng.choice(rows, size=n, replace=False))


def _summary(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), (float(np.std(values)) if len(values) > 1 else 0.0)


class EvaluationContext:
    """What the protocol needs that does not depend on the generator: the real latents and signals,
    the feature CNN (trained once), the reference features, the held-out sets' scores, the real-data
    CAS and the Gaussian floor. Build it once to evaluate several generators or guidance weights.

    Args: see :func:`evaluate_generator`; ``feature_net`` is an already trained
    ``(SignalCNN, info)`` pair from :func:`~funcml.tasks.generate.features.train_feature_net`.
    """

    def __init__(self, latent_set, model, *, signals=None, seed: int = 0, k: int = 3, max_compare: int = 2000,
                 max_reference: int = 5000, max_cas_train: int = 10000, classifier: str = "logistic",
                 cnn_steps: int = 1000, repeats: int = 3, device: str | torch.device = "cpu",
                 log: Callable[[str], None] = print, feature_net: tuple | None = None) -> None:
        self._prepare(latent_set, model, signals, seed, k, max_compare, max_reference, max_cas_train, classifier,
                      cnn_steps, repeats, device, log, feature_net)

    def _prepare(self, latent_set, model, signals, seed, k, max_compare, max_reference, max_cas_train, classifier,
                 cnn_steps, repeats, device, log, feature_net) -> None:
        self.latent_set, self.model, self.seed, self.k, self.repeats = latent_set, model, seed, k, repeats
        self.classifier, self.device, self.log = classifier, device, log
        rng = np.random.default_rng(seed)
        train_rows = latent_set.split_indices("train")
        if len(train_rows) < 5:
            raise DataError(f"{latent_set.path} has fewer than 5 training latents")
        test_rows, self.held_name = held_out_rows(latent_set)
        self.y_train, self.y_test = single_labels(latent_set, train_rows), single_labels(latent_set, test_rows)
        self.x_train, self.x_test = latent_set.rows(train_rows), latent_set.rows(test_rows)
        self.mean, self.scale = self.x_train.mean(0), np.maximum(self.x_train.std(0), 1e-12)
        self.raw = signals is not None
        self.multilabel = latent_set.task == "multi-label, binary-class" and latent_set.labels is not None

        # feature network on the real training signals
        ref_rows = _subsample(np.arange(len(train_rows)), max_reference, rng)
        if self.raw:
            real_train = signals.get(np.asarray(latent_set.index[train_rows]))
            real_test = signals.get(np.asarray(latent_set.index[test_rows]))
        else:
            real_train, real_test = decode_latents(model, self.x_train), None
        cnn_labels = np.asarray(latent_set.labels[train_rows]) if self.multilabel else self.y_train
        if feature_net is None:
            feature_net = train_feature_net(real_train, cnn_labels, multilabel=self.multilabel, steps=cnn_steps,
                                            seed=seed, device=device, log=log)
        self.net, self.net_info = feature_net[0], dict(feature_net[1])
        if self.raw and not self.multilabel and self.y_test is not None and self.net_info["trained"]:
            self.net_info["held_out_accuracy"] = float((predict(self.net, real_test, device=device)
                                                        == self.y_test).mean())
        self.feat_ref = self.embed(real_train[ref_rows])
        self.ref_count = len(ref_rows)
        # memorisation compares decoded samples with decoded training latents (copies are then exact)
        self.feat_train_decoded = (self.feat_ref if not self.raw
                                   else self.embed(decode_latents(model, self.x_train[ref_rows])))

        # held-out sets: fresh real data (the ceiling) and their decoded latents
        cmp_rows = _subsample(np.arange(len(test_rows)), max_compare, rng)
        self.compared_count = len(cmp_rows)
        self.labels_cmp = None if self.y_test is None else self.y_test[cmp_rows]
        self.z_train = self.standardise(self.x_train)
        self.z_held = self.standardise(self.x_test[cmp_rows])
        recon = decode_latents(model, self.x_test[cmp_rows])
        self.feat_held = self.embed(recon)
        self.held_results: dict[str, dict] = {}
        self.figure_sets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
        if self.raw:
            held_sig = real_test[cmp_rows]
            self.held_results["held_out_real"] = self.score(held_sig, self.labels_cmp, None)
            self.figure_sets["real"] = (held_sig, self.labels_cmp)
        self.held_results["held_out_decoded"] = self.score(recon, self.labels_cmp, None)
        if not self.raw:
            self.figure_sets["real (decoded)"] = (recon, self.labels_cmp)
        self._floor: dict[bool, tuple[dict, dict | None, tuple]] = {}
        self._cas_real: dict | None = None
        # CAS trains on as many generated latents as real ones (capped, the real ones subsampled alike)
        self.cas_rows = _subsample(np.arange(len(train_rows)), max_cas_train, rng)

    # -- helpers ----------------------------------------------------------------------------------
    def embed(self, signals: np.ndarray) -> np.ndarray:
        return embed(self.net, signals, device=self.device)

    def standardise(self, latents: np.ndarray) -> np.ndarray:
        return (latents - self.mean) / self.scale

    def score(self, signals: np.ndarray, labels: np.ndarray | None, latents: np.ndarray | None) -> dict:
        """FD, precision, recall (+ label agreement, + memorisation when ``latents`` are given)."""
        feats = self.embed(signals)
        prec, rec = precision_recall(self.feat_ref, feats, self.k)
        out = {"fd": frechet_distance(self.feat_ref, feats), "precision": prec, "recall": rec}
        if labels is not None and self.net_info["trained"] and not self.multilabel:
            out["label_agreement"] = float((predict(self.net, signals, device=self.device) == labels).mean())
        if latents is not None:
            out["memorisation_latent"] = memorisation(self.standardise(latents), self.z_held, self.z_train)
            out["memorisation_feature"] = memorisation(feats, self.feat_held, self.feat_train_decoded)
        return out

    def score_source(self, source, conditional: bool, guidance: float) -> tuple[dict, tuple]:
        """Scores of ``repeats`` draws from ``source`` (mean and std) and the first draw for a figure."""
        labels = self.labels_cmp if conditional else None
        runs, first = [], None
        for r in range(self.repeats):
            z, lab = source.sample(self.compared_count, labels=labels, guidance=guidance, seed=self.seed + r)
            sig = decode_latents(self.model, z)
            runs.append(self.score(sig, lab, z))
            first = first or (sig, lab)
        return _aggregate(runs), first

    def cas(self, source, guidance: float = 1.0) -> dict:
        """Train the CAS classifier on as many samples of ``source`` as real training latents (same
        labels) and test it on the real held-out latents."""
        z, lab = source.sample(len(self.cas_rows), labels=self.y_train[self.cas_rows], guidance=guidance,
                               seed=self.seed + 1000)
        return classification_accuracy_score(z, lab, self.x_test, self.y_test, self.classifier, self.seed)

    def floor(self, conditional: bool) -> tuple[dict, dict | None, tuple]:
        """The Gaussian floor's scores, CAS and figure draw (cached per conditioning)."""
        if conditional not in self._floor:
            gauss = ClassGaussian(self.seed).fit(self.x_train, self.y_train if conditional else None)
            scores, first = self.score_source(gauss, conditional, 1.0)
            cas = self.cas(gauss) if conditional and self.y_test is not None else None
            self._floor[conditional] = (scores, cas, first)
        return self._floor[conditional]

    def cas_real(self) -> dict:
        if self._cas_real is None:
            rows = self.cas_rows
            self._cas_real = classification_accuracy_score(self.x_train[rows], self.y_train[rows], self.x_test,
                                                           self.y_test, self.classifier, self.seed)
        return self._cas_real

    # -- the evaluation ---------------------------------------------------------------------------
    def evaluate(self, generator, guidance: float = 1.0) -> tuple[dict, dict]:
        """``(report, figure_sets)`` for one generator at one guidance weight."""
        return self._evaluate(generator, guidance)

    def _evaluate(self, generator, guidance: float) -> tuple[dict, dict]:
        conditional = bool(generator.conditional and self.y_train is not None)
        results = dict(self.held_results)
        results["generated"], first = self.score_source(generator, conditional, guidance)
        results["gaussian"], floor_cas, floor_first = self.floor(conditional)
        figure_sets = {**self.figure_sets, "generated": first, "gaussian": floor_first}
        for name in ("generated", "gaussian"):
            r = results[name]
            self.log(f"{name}: FD {r['fd']:.3f}, precision {r['precision']:.3f}, recall {r['recall']:.3f}")
        cas = None
        if conditional and self.y_test is not None:
            cas = {"classifier": self.classifier, "trained_on": f"{len(self.cas_rows)} latents",
                   "tested_on": f"real {self.held_name} latents", "real": self.cas_real(),
                   "generated": self.cas(generator, guidance), "gaussian": floor_cas}
            cas["gap_points"] = 100 * (cas["real"]["accuracy"] - cas["generated"]["accuracy"])
            self.log(f"CAS ({self.classifier} on latents): real {cas['real']['accuracy']:.3f}, generated "
                     f"{cas['generated']['accuracy']:.3f}, gaussian {cas['gaussian']['accuracy']:.3f}")
        report = {
            "reference": {"set": "train", "signals": "raw" if self.raw else "decoded latents",
                          "count": int(self.ref_count)},
            "held_out_split": self.held_name, "compared_count": int(self.compared_count),
            "repeats": int(self.repeats), "guidance": float(guidance), "conditional": conditional, "k": int(self.k),
            "seed": int(self.seed), "feature_net": dict(self.net_info), "sets": results, "cas": cas,
        }
        return report, figure_sets


def evaluate_generator(generator, latent_set, model, *, signals=None, guidance: float = 1.0, seed: int = 0,
                       repeats: int = 3, k: int = 3, max_compare: int = 2000, max_reference: int = 5000,
                       max_cas_train: int = 10000, classifier: str = "logistic", cnn_steps: int = 1000,
                       device: str | torch.device = "cpu",
                       log: Callable[[str], None] = print, context: EvaluationContext | None = None) -> tuple[dict, dict]:
    """Run the protocol above for ``generator`` (anything with ``conditional`` and
    ``sample(n, labels=, guidance=, seed=) -> (latents, labels)``).

    Args:
        signals: the source :class:`SignalSet` (None: decoded latents stand in for real signals).
        guidance: classifier-free guidance weight for the samples.
        repeats: sample draws per set (mean and std reported).
        k: k of the k-NN manifolds; max_compare / max_reference / max_cas_train: caps on the set sizes.
        classifier: CAS classifier on latents (``logistic`` or ``mlp``).
        cnn_steps: training steps of the feature CNN.
        context: a prepared :class:`EvaluationContext` (the other data arguments are then ignored).

    Returns:
        ``(report, figure_sets)``; figure_sets maps a set name to ``(signals (m, C, *spatial),
        labels (m,) | None)`` for :func:`plot_comparison`.
    """
    if context is None:
        context = EvaluationContext(latent_set, model, signals=signals, seed=seed, k=k, max_compare=max_compare,
                                    max_reference=max_reference, max_cas_train=max_cas_train,
                                    classifier=classifier, cnn_steps=cnn_steps,
                                    repeats=repeats, device=device, log=log)
    return context.evaluate(generator, guidance)


def _aggregate(runs: list[dict]) -> dict:
    out: dict = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = _aggregate([r[key] for r in runs])
        else:
            mean, std = _summary([r[key] for r in runs])
            out[key], out[f"{key}_std"] = mean, std
    return out


def plot_comparison(sets: dict[str, tuple[np.ndarray, np.ndarray | None]], path: str | Path,
                    label_names: dict[str, str] | None = None, per_row: int = 8) -> None:
    """One row of signals per set and class (real / generated / Gaussian side by side)."""
    from funcml.tasks.generate.viz import plot_rows

    rows: list[tuple[str, np.ndarray]] = []
    first = next(iter(sets.values()))[1]
    classes = [None] if first is None else list(np.unique(first))
    for c in classes:
        for name, (sig, lab) in sets.items():
            pick = np.arange(len(sig)) if c is None or lab is None else np.flatnonzero(lab == c)
            cname = "" if c is None else f"\n{(label_names or {}).get(str(int(c)), int(c))}"
            rows.append((f"{name}{cname}", sig[pick[:per_row]]))
    plot_rows(rows, path, slots=per_row)
