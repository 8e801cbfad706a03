"""Explain a latent classifier on rows of a latent set (what ``funcml explain`` does).

:func:`explain_latent_set` computes, for the selected rows:

1. attributions over the latent dimensions (per signal, and averaged over the signals of each
   explained class), their completeness gap (``ig``), deletion/insertion curves against random
   orders, and the cascading model-randomisation check;
2. attributions in signal space through the differentiable encoder (signal -> H test-time steps
   from zero -> classifier), with the same checks (full randomisation of the classifier) and the
   fidelity of the re-encoding (do the re-encoded latents give the stored predictions?);
3. counterfactual latents (the classifier's gradient, until the prediction flips), decoded.

:func:`write_outputs` writes ``explain.json``, ``attributions.safetensors`` and the figures.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from funcml.errors import ArtifactError, ConfigError, DataError
from funcml.latents.selection import parse_indices as parse_row_indices
from funcml.tasks.explain.attribute import GRADIENT_METHODS, METHODS, attribute, check_method
from funcml.tasks.explain.counterfactual import latent_counterfactuals
from funcml.tasks.explain.quality import perturbation_curves, randomisation_summary
from funcml.tasks.explain.scores import (OUTPUTS, LatentScores, SignalScores, cascading_randomisations, frozen,
                                         randomised_copy)

SPACES = ("latent", "signal", "both")
LATENT_BASELINES = ("zero", "mean")
SIGNAL_BASELINES = ("blur", "mean", "zero")


@dataclass(frozen=True)
class ExplainConfig:
    """Settings of an explanation.

    Attributes:
        method: ``ig``, ``saliency``, ``gradshap`` or ``occlusion``.
        output: explained score, ``logodds`` (default) or ``proba`` of the target class.
        target: ``predicted``, ``true`` or a class (name or label value) explained for every signal.
        space: ``latent``, ``signal`` or ``both``.
        ig_steps: integration points of ``ig``. shap_samples: draws per input of ``gradshap``.
        window: occlusion window in signal space (default about 1/8 of each side, 1/4 in 3D).
        encode_steps: H of the encoder in signal space (default: the model's own).
        latent_baseline: ``zero`` (the encoder's starting point) or ``mean`` (training latents).
        signal_baseline: ``blur`` (Gaussian, sigma 1/10 of each side), ``mean`` (the signal's own
            mean per channel) or ``zero``: the reference of ``ig``/``occlusion`` and the value that
            deleted samples take in the deletion/insertion curves.
        quality: compute deletion/insertion curves. curve_points, random_orders: their fractions
            and random orders in latent space; signal_curve_points, signal_random_orders: the same
            in signal space (each point re-encodes every signal).
        sanity: the model-randomisation check (differentiable classifiers).
        counterfactual: counterfactual latents (differentiable classifiers); cf_step (standardised
            units), cf_max_steps, cf_confidence (probability the other decision must reach).
        batch_size: signals per encoder call in signal space.
        seed: seeds the context subsets of the encoder, random orders and randomised weights.
    """

    method: str = "ig"
    output: str = "logodds"
    target: str = "predicted"
    space: str = "both"
    ig_steps: int = 16
    shap_samples: int = 8
    window: tuple[int, ...] | None = None
    encode_steps: int | None = None
    latent_baseline: str = "zero"
    signal_baseline: str = "blur"
    quality: bool = True
    curve_points: int = 21
    random_orders: int = 5
    signal_curve_points: int = 9
    signal_random_orders: int = 1
    sanity: bool = True
    counterfactual: bool = True
    cf_step: float = 0.1
    cf_max_steps: int = 500
    cf_confidence: float = 0.5
    batch_size: int = 8
    seed: int = 0

    def validate(self) -> "ExplainConfig":
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        check(self.method in METHODS, f"--method must be one of {', '.join(METHODS)}; got {self.method!r}")
        check(self.output in OUTPUTS, f"--output must be one of {', '.join(OUTPUTS)}; got {self.output!r}")
        check(self.space in SPACES, f"--space must be one of {', '.join(SPACES)}; got {self.space!r}")
        check(self.latent_baseline in LATENT_BASELINES, f"--latent-baseline must be one of {LATENT_BASELINES}")
        check(self.signal_baseline in SIGNAL_BASELINES, f"--signal-baseline must be one of {SIGNAL_BASELINES}")
        check(self.ig_steps >= 1, f"--ig-steps must be >= 1; got {self.ig_steps}")
        check(self.shap_samples >= 1, f"--shap-samples must be >= 1; got {self.shap_samples}")
        check(self.encode_steps is None or self.encode_steps >= 1, f"--encode-steps must be >= 1; got {self.encode_steps}")
        check(self.curve_points >= 2 and self.signal_curve_points >= 2, "--curve-points must be >= 2")
        check(self.random_orders >= 0 and self.signal_random_orders >= 0, "--random-orders must be >= 0")
        check(self.cf_step > 0 and math.isfinite(self.cf_step), f"--cf-step must be > 0; got {self.cf_step}")
        check(self.cf_max_steps >= 1, f"--cf-max-steps must be >= 1; got {self.cf_max_steps}")
        check(0.5 <= self.cf_confidence < 1, f"--cf-confidence must be in [0.5, 1); got {self.cf_confidence}")
        check(self.batch_size >= 1, f"--batch-size must be >= 1; got {self.batch_size}")
        check(self.window is None or all(w >= 1 for w in self.window), f"--window sizes must be >= 1; got {self.window}")
        return self


@dataclass
class ExplainResult:
    """The report (JSON-able) and the arrays written to ``attributions.safetensors``."""

    report: dict
    arrays: dict[str, np.ndarray]
    class_names: list[str]
    titles: list[str] = field(default_factory=list)


# -- inputs -------------------------------------------------------------------------------------------
def parse_indices(text: str | None, n: int) -> np.ndarray | None:
    """``"0-15"``, ``"3,7,10-12"`` -> sorted unique rows; None for None (see :func:`funcml.latents.selection.parse_indices`)."""
    return parse_row_indices(text, n, unique=True)


def check_compatible(latent_set, classifier, model=None) -> None:
    """Raise :class:`ArtifactError` unless the classifier, the latent set and the model belong together."""
    features = getattr(classifier, "features_", ["latent"])
    if list(features) != ["latent"]:
        raise ArtifactError(f"the classifier takes the features {','.join(features)}; explanations need one "
                            f"trained on the latents alone (funcml classify --features latent)")
    if classifier.latent_dim != latent_set.latent_dim:
        raise ArtifactError(f"the classifier takes latents of dimension {classifier.latent_dim}, but {latent_set.path} "
                            f"has dimension {latent_set.latent_dim}: they do not belong together")
    if classifier.model_id and latent_set.model_id and classifier.model_id != latent_set.model_id:
        raise ArtifactError(f"the classifier was trained on latents of model {classifier.model_id[:12]}, but "
                            f"{latent_set.path} was encoded with model {latent_set.model_id[:12]}")
    if latent_set.task != classifier.task_:
        raise DataError(f"{latent_set.path} has task {latent_set.task!r}, the classifier {classifier.task_!r}")
    if model is not None:
        latent_set.check_model(model)


def resolve_targets(target: str, proba: np.ndarray, labels: np.ndarray | None, classifier,
                    names: list[str]) -> np.ndarray:
    """Output columns ``(n,)`` to explain: ``predicted`` (the most probable class, or label for
    multi-label tasks), ``true`` (the label; single-label tasks) or one class by name or value."""
    classes = np.asarray(classifier.classes_)
    multilabel = classifier.output_activation == "sigmoid"
    if target == "predicted":
        return np.argmax(proba, axis=1).astype(np.int64)
    if target == "true":
        if multilabel:
            raise ConfigError("--target true is ambiguous for multi-label tasks; name the label to explain")
        if labels is None:
            raise DataError("--target true needs labels, but the latent set has none")
        y = np.asarray(labels).reshape(len(labels), -1)[:, 0]
        pos = np.searchsorted(classes, y).clip(0, len(classes) - 1)
        if not (classes[pos] == y).all():
            missing = sorted(set(y.tolist()) - set(classes.tolist()))
            raise DataError(f"labels {missing} are classes the classifier never saw; use --target predicted")
        return pos.astype(np.int64)
    if target in names:
        return np.full(len(proba), names.index(target), dtype=np.int64)
    try:
        value = int(target)
    except ValueError:
        value = None
    if value is not None and value in classes.tolist():
        return np.full(len(proba), classes.tolist().index(value), dtype=np.int64)
    raise ConfigError(f"--target must be predicted, true, or one of the classes {names}; got {target!r}")


def signal_baseline(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Reference signals ``(n, C, *spatial)``: Gaussian blur (sigma = side / 10), per-channel mean, or zeros."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.flatten(2).mean(dim=2).view(*x.shape[:2], *([1] * (x.dim() - 2))).expand_as(x).clone()
    from scipy.ndimage import gaussian_filter

    sigma = (0, 0, *[max(1.0, s / 10) for s in x.shape[2:]])
    return torch.from_numpy(gaussian_filter(x.numpy().astype(np.float64), sigma=sigma, mode="nearest").astype(np.float32))


def _completeness(gaps: torch.Tensor | None, f_x: np.ndarray, f_b: np.ndarray) -> dict | None:
    if gaps is None:
        return None
    change = np.abs(f_x - f_b)
    g = np.abs(gaps.double().numpy())
    return {"gap_mean_abs": float(g.mean()), "output_change_mean_abs": float(change.mean()),
            "relative_gap": float(g.mean() / max(change.mean(), 1e-12)), "gap_per_input": gaps.double().tolist()}


def _target_scores(fn, x: torch.Tensor, targets: torch.Tensor, batch_size: int) -> np.ndarray:
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch_size):
            out.append(fn(x[s:s + batch_size]).gather(1, targets[s:s + batch_size, None])[:, 0].double().numpy())
    return np.concatenate(out)


# -- the explanation ------------------------------------------------------------------------------------
def explain_latent_set(latent_set, classifier, model=None, signals=None, rows: np.ndarray | None = None,
                       config: ExplainConfig | None = None, *, log: Callable[[str], None] = lambda s: None,
                       progress: bool = False) -> ExplainResult:
    """Explain ``classifier`` on ``rows`` of ``latent_set`` (default: the first 16 test rows, else the first 16).

    Args:
        latent_set: an opened :class:`~funcml.latents.LatentSet`.
        classifier: a loaded latent classifier (:func:`~funcml.tasks.classify.load_classifier`).
        model: the set's :class:`~funcml.encoders.model.FieldModel` (decoding, the encoder in signal space).
        signals: the :class:`~funcml.data.SignalSet` the latents were encoded from (signal space).
        config: :class:`ExplainConfig`.
    """
    from funcml.tasks.classify.targets import class_names as make_names

    cfg = (config or ExplainConfig()).validate()
    check_compatible(latent_set, classifier, model)
    scores = LatentScores(classifier, cfg.output)
    check_method(cfg.method, scores.differentiable, _kind(classifier))
    spaces = ("latent", "signal") if cfg.space == "both" else (cfg.space,)
    if "signal" in spaces:
        _check_signal_inputs(latent_set, model, signals)
    rows = _rows_to_explain(latent_set, rows)
    names = list(getattr(classifier, "class_names_", None) or make_names(latent_set.label_names, len(classifier.classes_)))
    z = torch.from_numpy(latent_set.rows(rows))
    with torch.no_grad():
        proba = scores.proba(z).double().numpy()
    labels = None if latent_set.labels is None else np.asarray(latent_set.labels[rows])
    targets_np = resolve_targets(cfg.target, proba, labels, classifier, names)
    targets, predicted = torch.from_numpy(targets_np), np.argmax(proba, axis=1)
    multilabel = scores.activation == "sigmoid"
    report, arrays = _header(latent_set, classifier, scores, cfg, names, rows, targets_np, predicted, proba, labels)
    kind = _kind(classifier)
    report["latent"] = _explain_latents(latent_set, scores, z, targets_np, cfg, names, kind, arrays, log)
    if cfg.counterfactual:
        cls = targets_np if multilabel else predicted
        report["counterfactual"] = _counterfactuals(latent_set, model, scores, z, cls, names, kind, cfg, arrays, log)
    if "signal" in spaces:
        report["signal"] = _explain_signals(latent_set, model, signals, scores, z, rows, targets, predicted, proba,
                                            cfg, arrays, multilabel, log, progress)
    return ExplainResult(report=report, arrays=arrays, class_names=names, titles=_titles(report, classifier, names))


def _kind(classifier) -> str:
    return f"a {getattr(classifier, 'kind', type(classifier).__name__)} classifier"


def _check_signal_inputs(latent_set, model, signals) -> None:
    """Signal-space attributions need the model and the very data the set was encoded from."""
    if model is None or signals is None:
        raise ConfigError("signal-space attributions need the model and the source data (--space latent skips them)")
    if tuple(signals.signal_shape) != tuple(latent_set.signal_shape):
        raise DataError(f"the data's signals {tuple(signals.signal_shape)} differ from the encoded ones "
                        f"{tuple(latent_set.signal_shape)}; pass the same DATA and --resolution as for encoding")
    fp = latent_set.manifest["source"].get("fingerprint")
    if fp is not None and fp != signals.fingerprint:
        raise DataError("the data is not what this latent set was encoded from (fingerprints differ)")


def _rows_to_explain(latent_set, rows: np.ndarray | None) -> np.ndarray:
    """``rows`` as int64, or the first 16 test rows (the first 16 rows when there is no test split)."""
    if rows is None:
        test = latent_set.split_indices("test")
        rows = (test if len(test) else np.arange(len(latent_set)))[:16]
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise DataError(f"{latent_set.path}: no rows to explain")
    return rows


def _header(latent_set, classifier, scores: LatentScores, cfg: ExplainConfig, names: list[str], rows: np.ndarray,
            targets: np.ndarray, predicted: np.ndarray, proba: np.ndarray,
            labels: np.ndarray | None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The report's description of what is explained, and the arrays that go with it."""
    index = np.asarray(latent_set.index[rows])
    report: dict[str, Any] = {
        "latents": str(latent_set.path), "model_id": latent_set.model_id, "task": latent_set.task,
        "classifier": getattr(classifier, "kind", type(classifier).__name__), "differentiable": scores.differentiable,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()},
        "classes": names, "rows": rows.tolist(), "index": index.tolist(), "targets": targets.tolist(),
        "target_names": [names[t] for t in targets], "predicted": predicted.tolist(),
        "proba_target": proba[np.arange(len(rows)), targets].tolist(),
    }
    if labels is not None and scores.activation != "sigmoid":
        report["labels"] = labels.reshape(len(rows), -1)[:, 0].tolist()
    return report, {"rows": rows, "index": index, "targets": targets, "proba": proba}


def _explain_latents(latent_set, scores: LatentScores, z: torch.Tensor, targets_np: np.ndarray, cfg: ExplainConfig,
                     names: list[str], kind: str, arrays: dict, log: Callable[[str], None],
                     batch_size: int = 4096) -> dict[str, Any]:
    """Attributions on the latents ``z`` ``(n, P)``, their completeness, quality and sanity checks."""
    t0 = time.perf_counter()
    targets = torch.from_numpy(targets_np)
    if cfg.latent_baseline == "zero":
        zb = torch.zeros_like(z)
    else:
        zb = torch.from_numpy(_train_mean(latent_set)).expand_as(z).clone()
    reference = torch.from_numpy(_train_sample(latent_set, 64, cfg.seed))
    lat_kwargs = dict(baselines=zb, reference=reference, n_steps=cfg.ig_steps, n_samples=cfg.shap_samples,
                      batch_size=batch_size, seed=cfg.seed)
    a_lat, gaps = attribute(scores, z, targets, cfg.method, **lat_kwargs)
    lat: dict[str, Any] = {"baseline": cfg.latent_baseline}
    lat["completeness"] = _completeness(gaps, _target_scores(scores, z, targets, batch_size),
                                        _target_scores(scores, zb, targets, batch_size))
    k = len(names)
    by_class = np.full((k, z.shape[1]), np.nan)
    for c in range(k):
        sel = targets_np == c
        if sel.any():
            by_class[c] = a_lat[torch.from_numpy(sel)].double().mean(dim=0).numpy()
    arrays["latent_attributions"] = a_lat.numpy()
    arrays["latent_attributions_by_class"] = by_class
    lat["by_class_count"] = {names[c]: int((targets_np == c).sum()) for c in range(k)}
    if cfg.quality:
        lat["quality"] = perturbation_curves(scores.proba, z, zb, a_lat, targets, points=cfg.curve_points,
                                             random_orders=cfg.random_orders, seed=cfg.seed, batch_size=batch_size)
    if cfg.sanity:
        lat["randomisation"] = _randomisation(scores, z, targets, cfg, a_lat, lat_kwargs, kind, arrays)
    lat["seconds"] = time.perf_counter() - t0
    log(f"latent space: {cfg.method} attributions for {len(z)} signals ({lat['seconds']:.1f} s)")
    return lat


def _randomisation(scores: LatentScores, z: torch.Tensor, targets: torch.Tensor, cfg: ExplainConfig,
                   a_lat: torch.Tensor, lat_kwargs: dict, kind: str, arrays: dict) -> dict[str, Any]:
    """The model-randomisation sanity check: attributions as the classifier's layers are randomised."""
    if not scores.differentiable:
        return {"skipped": f"{kind} has no weights to randomise"}
    cascade = []
    for layer, module in cascading_randomisations(scores.module, cfg.seed):
        a_r, _ = attribute(scores.with_module(module), z, targets, cfg.method, **lat_kwargs)
        cascade.append({"layer": layer, **randomisation_summary(a_lat, a_r)})
    arrays["latent_attributions_randomised"] = a_r.numpy()
    return {"cascading": cascade, "full": cascade[-1]}


def _counterfactuals(latent_set, model, scores: LatentScores, z: torch.Tensor, cls: np.ndarray, names: list[str],
                     kind: str, cfg: ExplainConfig, arrays: dict, log: Callable[[str], None]) -> dict[str, Any]:
    """Smallest latent changes that flip the classifier away from ``cls`` ``(n,)``, decoded when possible."""
    if not scores.differentiable:
        return {"skipped": f"counterfactuals follow gradients; {kind} has none"}
    cf = latent_counterfactuals(scores, z.numpy(), cls, step=cfg.cf_step, max_steps=cfg.cf_max_steps,
                                confidence=cfg.cf_confidence)
    cf_report = {"from_class": [names[c] for c in cls], **cf.summary()}
    arrays["counterfactual_latents"] = cf.latents
    arrays["counterfactual_proba"] = cf.proba_after
    if model is not None:
        spatial = tuple(latent_set.signal_shape[1:])
        dec = model.decode(z.to(model.device), spatial).cpu().numpy()
        dec_cf = model.decode(torch.from_numpy(cf.latents).to(model.device), spatial).cpu().numpy()
        arrays["decoded"], arrays["counterfactual_decoded"] = dec, dec_cf
        change = np.abs(dec_cf - dec).reshape(len(z), -1)
        cf_report["change_mean_abs"] = float(change.mean())
        cf_report["change_max_abs"] = float(change.max())
    log(f"counterfactuals: {cf_report['flipped']:.0%} of predictions flipped")
    return cf_report


def _titles(report: dict, classifier, names: list[str]) -> list[str]:
    """One figure title per explained row: the explained class, its probability, the true class."""
    titles = [f"row {r}: {names[t]} (p {p:.2f})" for r, t, p in zip(report["rows"], report["targets"],
                                                                     report["proba_target"])]
    if "labels" in report:
        classes = list(np.asarray(classifier.classes_).tolist())
        titles = [f"{title}; true {names[classes.index(y)] if y in classes else y}"
                  for title, y in zip(titles, report["labels"])]
    return titles


def _explain_signals(latent_set, model, signals, scores: LatentScores, z: torch.Tensor, rows: np.ndarray,
                     targets: torch.Tensor, predicted: np.ndarray, proba: np.ndarray, cfg: ExplainConfig,
                     arrays: dict, multilabel: bool, log, progress: bool) -> dict:
    t0 = time.perf_counter()
    enc = model.encode_defaults.at_steps(cfg.encode_steps)
    x = torch.from_numpy(signals.get(np.asarray(latent_set.index[rows]))).to(model.device)
    xb = signal_baseline(x.cpu(), cfg.signal_baseline).to(model.device)
    sig_scores = SignalScores(model.net, enc, scores, seed=cfg.seed)
    bs = cfg.batch_size
    out: dict[str, Any] = {"encode_steps": int(enc.steps), "model_encode_steps": int(model.encode_defaults.steps),
                           "baseline": cfg.signal_baseline}
    with frozen(model.net):
        # fidelity: the re-encoded signals against the stored latents
        z_re = torch.cat([sig_scores.encode(x[s:s + bs]).detach().cpu() for s in range(0, len(x), bs)])
        with torch.no_grad():
            p_re = scores.proba(z_re).double().numpy()
        pred_re = (p_re > 0.5) if multilabel else np.argmax(p_re, axis=1)
        pred_st = (proba > 0.5) if multilabel else predicted
        cos = torch.nn.functional.cosine_similarity(z_re, z.cpu(), dim=1)
        t_idx = targets.numpy()
        same = (pred_re == pred_st).all(axis=1) if multilabel else pred_re == pred_st
        out["fidelity"] = {
            "prediction_agreement": float(np.mean(same)),
            "proba_target_mean_abs_diff": float(np.abs(p_re[np.arange(len(rows)), t_idx]
                                                       - proba[np.arange(len(rows)), t_idx]).mean()),
            "latent_cosine_mean": float(cos.mean()),
        }
        shap_ref = None
        if cfg.method == "gradshap":
            train = latent_set.split_indices("train")
            pick = np.random.default_rng(cfg.seed).choice(train if len(train) else np.arange(len(latent_set)),
                                                          size=min(16, max(1, len(train))), replace=False)
            shap_ref = torch.from_numpy(signals.get(np.asarray(latent_set.index[np.sort(pick)]))).to(model.device)
        kwargs = dict(baselines=xb, reference=shap_ref, n_steps=cfg.ig_steps, n_samples=cfg.shap_samples,
                      window=cfg.window, batch_size=bs, seed=cfg.seed, progress=progress)
        a_sig, gaps = attribute(sig_scores, x, targets, cfg.method, desc="signal attributions", **kwargs)
        arrays["signals"] = x.cpu().numpy()
        arrays["signal_attributions"] = a_sig.cpu().numpy()
        if gaps is not None:
            out["completeness"] = _completeness(gaps, _target_scores(sig_scores, x, targets, bs),
                                                _target_scores(sig_scores, xb, targets, bs))
        log(f"signal space: {cfg.method} through the encoder (H = {enc.steps}) for {len(rows)} signals "
            f"({time.perf_counter() - t0:.1f} s)")
        if cfg.quality:
            out["quality"] = perturbation_curves(sig_scores.proba, x, xb, a_sig, targets,
                                                 points=cfg.signal_curve_points, random_orders=cfg.signal_random_orders,
                                                 seed=cfg.seed, batch_size=max(bs, 32), progress=progress,
                                                 desc="signal deletion/insertion")
        if cfg.sanity:
            if scores.differentiable:
                rand = sig_scores.with_scores(scores.with_module(randomised_copy(scores.module, seed=cfg.seed)))
                a_r, _ = attribute(rand, x, targets, cfg.method, desc="randomised classifier", **kwargs)
                out["randomisation"] = {"full": randomisation_summary(a_sig.cpu(), a_r.cpu())}
                arrays["signal_attributions_randomised"] = a_r.cpu().numpy()
            else:
                out["randomisation"] = {"skipped": "the classifier has no weights to randomise"}
    out["seconds"] = time.perf_counter() - t0
    return out


def _train_mean(latent_set) -> np.ndarray:
    rows = latent_set.split_indices("train")
    rows = rows if len(rows) else np.arange(len(latent_set))
    total = np.zeros(latent_set.latent_dim)
    for s in range(0, len(rows), 65536):
        total += latent_set.rows(rows[s:s + 65536]).astype(np.float64).sum(axis=0)
    return (total / len(rows)).astype(np.float32)


def _train_sample(latent_set, n: int, seed: int) -> np.ndarray:
    rows = latent_set.split_indices("train")
    rows = rows if len(rows) else np.arange(len(latent_set))
    pick = np.sort(np.random.default_rng(seed).choice(rows, size=min(n, len(rows)), replace=False))
    return latent_set.rows(pick)


# -- output -------------------------------------------------------------------------------------------
def write_outputs(result: ExplainResult, out: str | Path, *, overwrite: bool = False) -> dict[str, str]:
    """Write ``explain.json``, ``attributions.safetensors`` and the PNG figures into ``out`` (atomically)."""
    from funcml.io import atomic_dir, atomic_write_json, save_tensors
    from funcml.tasks.classify.metrics import json_safe
    from funcml.tasks.explain import figures

    a, rep = result.arrays, result.report
    files: dict[str, str] = {}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        save_tensors(tmp / "attributions.safetensors",
                     {k: np.ascontiguousarray(v, dtype=np.int64 if v.dtype.kind in "iub" else np.float32)
                      for k, v in a.items()}, metadata={"format": "funcml.explanation"})
        files["attributions"] = "attributions.safetensors"
        figures.plot_latent_attributions(a["latent_attributions"], a["latent_attributions_by_class"],
                                         result.class_names, tmp / "latent_attributions.png", titles=result.titles)
        files["latent_figure"] = "latent_attributions.png"
        if "signal_attributions" in a:
            figures.plot_signal_attributions(a["signals"], a["signal_attributions"], tmp / "signal_attributions.png",
                                             titles=result.titles, randomised=a.get("signal_attributions_randomised"),
                                             heading=f"{rep['config']['method']} through the encoder "
                                                     f"(H = {rep['signal']['encode_steps']}); red: for the explained "
                                                     f"class, blue: against")
            files["signal_figure"] = "signal_attributions.png"
        if "counterfactual_decoded" in a:
            cf_titles = [f"row {r}: from {c}" for r, c in zip(rep["rows"], rep["counterfactual"]["from_class"])]
            figures.plot_counterfactuals(a["decoded"], a["counterfactual_decoded"], tmp / "counterfactuals.png",
                                         titles=cf_titles)
            files["counterfactual_figure"] = "counterfactuals.png"
        curves = {s: rep[s].get("quality") for s in ("latent", "signal") if s in rep and rep[s].get("quality")}
        if curves:
            figures.plot_quality(curves, tmp / "deletion_insertion.png")
            files["quality_figure"] = "deletion_insertion.png"
        files = {k: str(Path(out) / v) for k, v in files.items()}
        files["report"] = str(Path(out) / "explain.json")
        rep["files"] = files
        atomic_write_json(tmp / "explain.json", json_safe(rep))
    return files


__all__ = ["ExplainConfig", "ExplainResult", "explain_latent_set", "write_outputs", "parse_indices",
           "check_compatible", "resolve_targets", "signal_baseline", "GRADIENT_METHODS"]
