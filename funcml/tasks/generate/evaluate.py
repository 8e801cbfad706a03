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
  with the training labels) and tested on the real held-out latents, next to the same classifier
  trained on the real training latents (the ceiling) and on Gaussian samples (the floor).
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
    raise DataError(f"{latent_set.path} has no held-out split (test or val) with at least 5 latents to evaluate against")


def _subsample(rows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= n else np.sort(rng.choice(rows, size=n, replace=False))


def _summary(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0


def evaluate_generator(generator, latent_set, model, *, signals=None, guidance: float = 1.0, seed: int = 0,
                       repeats: int = 3, k: int = 3, max_compare: int = 2000, max_reference: int = 5000,
                       classifier: str = "logistic", cnn_steps: int = 1500, device: str | torch.device = "cpu",
                       log: Callable[[str], None] = print) -> tuple[dict, dict]:
    """Run the protocol above. ``signals`` is the source :class:`SignalSet` (None: decoded latents
    stand in for the real signals). Returns ``(report, figure_sets)`` where figure_sets maps a
    set name to ``(signals (m, C, *spatial), labels (m,) | None)`` for :func:`plot_comparison`."""
    rng = np.random.default_rng(seed)
    train_rows = latent_set.split_indices("train")
    if len(train_rows) < 5:
        raise DataError(f"{latent_set.path} has fewer than 5 training latents")
    test_rows, held_name = held_out_rows(latent_set)
    y_train, y_test = single_labels(latent_set, train_rows), single_labels(latent_set, test_rows)
    conditional = generator.conditional and y_train is not None
    x_train, x_test = latent_set.rows(train_rows), latent_set.rows(test_rows)
    raw = signals is not None

    # -- feature network on real training signals --------------------------------------------------
    ref_rows = _subsample(np.arange(len(train_rows)), max_reference, rng)
    if raw:
        real_train = signals.get(np.asarray(latent_set.index[train_rows]))
        real_test = signals.get(np.asarray(latent_set.index[test_rows]))
    else:
        real_train = decode_latents(model, x_train)
        real_test = None
    multilabel = latent_set.task == "multi-label, binary-class" and latent_set.labels is not None
    cnn_labels = (np.asarray(latent_set.labels[train_rows]) if multilabel else y_train)
    net, net_info = train_feature_net(real_train, cnn_labels, multilabel=multilabel, max_steps=cnn_steps,
                                      seed=seed, device=device, log=log)
    feat_ref = embed(net, real_train[ref_rows], device=device)
    # memorisation compares decoded samples with decoded training latents (copies are then exact)
    feat_train_decoded = feat_ref if not raw else embed(net, decode_latents(model, x_train[ref_rows]), device=device)

    # -- the compared sets ---------------------------------------------------------------------------
    cmp_rows = _subsample(np.arange(len(test_rows)), max_compare, rng)
    labels_cmp = None if y_test is None else y_test[cmp_rows]
    gen_labels = labels_cmp if conditional else None
    norm = (generator.mean_, generator.scale_)
    z_train = (x_train - norm[0]) / norm[1]
    z_held = (x_test[cmp_rows] - norm[0]) / norm[1]
    gauss = ClassGaussian(seed).fit(x_train, y_train if conditional else None)

    def score(name: str, sig: np.ndarray, labels: np.ndarray | None, latents: np.ndarray | None) -> dict:
        feats = embed(net, sig, device=device)
        fd = frechet_distance(feat_ref, feats)
        prec, rec = precision_recall(feat_ref, feats, k)
        out = {"fd": fd, "precision": prec, "recall": rec}
        if labels is not None and net_info["trained"] and not multilabel:
            out["label_agreement"] = float((predict(net, sig, device=device) == labels).mean())
        if latents is not None:
            out["memorisation_latent"] = memorisation((latents - norm[0]) / norm[1], z_held, z_train)
            out["memorisation_feature"] = memorisation(feats, feat_held, feat_train_decoded)
        return out

    feat_held = embed(net, decode_latents(model, x_test[cmp_rows]), device=device)
    results: dict[str, dict] = {}
    figure_sets: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    if raw:
        held_sig = real_test[cmp_rows]
        results["held_out_real"] = score("held_out_real", held_sig, labels_cmp, None)
        figure_sets["real"] = (held_sig, labels_cmp)
    recon = decode_latents(model, x_test[cmp_rows])
    results["held_out_decoded"] = score("held_out_decoded", recon, labels_cmp, None)
    if not raw:
        figure_sets["real (decoded)"] = (recon, labels_cmp)
    for name, source in (("generated", generator), ("gaussian", gauss)):
        runs = []
        for r in range(repeats):
            z, lab = source.sample(len(cmp_rows), labels=gen_labels, guidance=guidance, seed=seed + r)
            sig = decode_latents(model, z)
            runs.append(score(name, sig, lab, z))
            if r == 0:
                figure_sets[name] = (sig, lab)
        results[name] = _aggregate(runs)
        log(f"{name}: FD {results[name]['fd']:.3f}, precision {results[name]['precision']:.3f}, "
            f"recall {results[name]['recall']:.3f}")

    # -- CAS -----------------------------------------------------------------------------------------
    cas = None
    if conditional and y_test is not None:
        cas = {"classifier": classifier, "trained_on": "latents", "tested_on": f"real {held_name} latents"}
        cas["real"] = classification_accuracy_score(x_train, y_train, x_test, y_test, classifier, seed)
        for name, source in (("generated", generator), ("gaussian", gauss)):
            z, lab = source.sample(len(train_rows), labels=y_train, guidance=guidance, seed=seed + 1000)
            cas[name] = classification_accuracy_score(z, lab, x_test, y_test, classifier, seed)
        cas["gap_points"] = 100 * (cas["real"]["accuracy"] - cas["generated"]["accuracy"])
        log(f"CAS ({classifier} on latents): real {cas['real']['accuracy']:.3f}, generated "
            f"{cas['generated']['accuracy']:.3f}, gaussian {cas['gaussian']['accuracy']:.3f}")

    if raw and not multilabel and y_test is not None and net_info["trained"]:
        net_info["held_out_accuracy"] = float((predict(net, real_test, device=device) == y_test).mean())
    report = {
        "reference": {"set": "train", "signals": "raw" if raw else "decoded latents", "count": int(len(ref_rows))},
        "held_out_split": held_name, "compared_count": int(len(cmp_rows)), "repeats": int(repeats),
        "guidance": float(guidance), "conditional": bool(conditional), "k": int(k), "seed": int(seed),
        "feature_net": net_info, "sets": results, "cas": cas,
    }
    return report, figure_sets


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
    """Rows of signals per set and class (real / generated / Gaussian side by side)."""
    import matplotlib.pyplot as plt

    from funcml.viz import _show

    rows: list[tuple[str, np.ndarray]] = []
    first = next(iter(sets.values()))[1]
    classes = [None] if first is None else list(np.unique(first))
    for c in classes:
        for name, (sig, lab) in sets.items():
            pick = np.arange(len(sig)) if c is None or lab is None else np.flatnonzero(lab == c)
            cname = "" if c is None else f" | {(label_names or {}).get(str(int(c)), int(c))}"
            rows.append((f"{name}{cname}", sig[pick[:per_row]]))
    fig, axes = plt.subplots(len(rows), per_row, figsize=(1.25 * per_row + 1.2, 1.3 * len(rows)), dpi=110,
                             squeeze=False)
    for r, (title, sig) in enumerate(rows):
        for i in range(per_row):
            ax = axes[r, i]
            if i < len(sig):
                _show(ax, sig[i])
            else:
                ax.axis("off")
        axes[r, 0].text(-0.1, 0.5, title, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
