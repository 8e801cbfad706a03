"""Benchmark: heartbeat classes from latents, RR-interval features, or both (MIT-BIH DS1, AAMI metrics).

On the shared MIT-BIH DS1 records, record-level splits only (no patient in two splits), keeping
every ``--n-beat-stride``-th N beat of each training record (default 1: every beat) and every other
training beat (val and test records keep every beat):

1. the source's default split (train 16 records, val 122 and 220, test 108, 112, 201, 208): each
   model runs as ``funcml classify --latents L --model M --features F --class-weight balanced``
   does (train on the train records, hyper-parameter search and early stopping on the val records,
   report on the test records), for F in ``latent``, ``rr`` and ``latent,rr`` and, per model
   (:data:`MODEL_FEATURES`), ``latent_rec`` (the latents centred on their record's median) with or
   without ``rr``, and with ``qrs`` (the QRS width and area against the record's median beat) beside
   ``rr``; M in ``logreg``, ``xgboost`` and ``fusion`` (a logistic regression on the RR
   columns fused with XGBoost on all columns, nothing of it tuned on val; variants in :data:`VARIANTS`);
2. ``--cv-folds K`` record-level cross-validation: the 22 records in K seeded folds, each fold tested
   by a model trained on the other records (fixed hyper-parameters ``--cv-params``; for the models
   that stop early, XGBoost and the fusion's MLP, two of those records are drawn as val records,
   the other models train on them too), predictions pooled over the folds, so every DS1 beat is
   tested once;
3. the cross-validation of ``--spread-models`` again with the ``--spread-seeds`` (other records together
   in the folds, other val records, other model seeds): the spread of S Se, V Se and the j-index;
4. a linear code of the same beats: the cross-validation rows of :data:`PCA_ROWS` with as many principal
   components of the beat samples (fitted on each fold's training records) in place of the latents
   (``--no-pca`` leaves them out).

Reported: Se / +P of N, S, V, F and the j-index (Se_S + +P_S + Se_V + +P_V), beside the published
inter-patient (DS1 -> DS2) numbers of de Chazal et al. 2004, and the S and V beats found per test
record, and whether the aims hold (``aims``: S Se >= 0.60 and V Se >= 0.85 with latents and RR
features, and a j-index above both ``rr`` and ``latent`` alone). Class weights come from the training
records, choices from the val records; nothing is tuned on test records. Writes
``benchmarks/results/ecg_rr.json`` and a confusion-matrix figure::

    python -m funcml train $FUNCML_SHARED_DATA/ecg/mitdb-ds1 --preset cpu-ecg --steps 1500 --latent-dim 64 \
        --no-meta-sgd --no-tune-momentum --out ecg-model
    nice -n 5 python benchmarks/ecg_rr.py --model ecg-model --latents ds1-latents

``--model`` encodes DS1 into ``--latents`` first when that set does not exist (the RR features are
stored with the latents; latent sets of version 1 have none). Each finished row is kept in ``--work``
(a rerun continues from there; remove the folder to start over); ``--finished-only`` writes the result
from the rows finished so far.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classify_bench import thin_latent_rows  # noqa: E402
from results import REPO, shared_data, table, write_result  # noqa: E402

CLASSES = ("N", "S", "V", "F")
FEATURES = ("latent", "rr", "latent,rr")  # what the issue compares, per model where the model takes it
# Feature choices per model: latent_rec = the latents centred on their record's median (label-free);
# fusion = a logistic regression on the RR columns fused with XGBoost on all columns.
# qrs = the QRS width and area relative to the record's median beat (beside rr, read by the fusion's linear expert).
MODEL_FEATURES = {"logreg": FEATURES + ("latent_rec", "latent_rec,rr", "rr,qrs", "latent_rec,rr,qrs"),
                  "xgboost": FEATURES + ("latent_rec,rr", "latent_rec,rr,qrs"),
                  "fusion": ("latent,rr", "latent_rec,rr", "latent,rr,qrs", "latent_rec,rr,qrs"),
                  "fusion-300": ("latent_rec,rr",), "fusion-mlp": ("latent_rec,rr", "latent_rec,rr,qrs"),
                  "fusion-mlp-thirds": ("latent_rec,rr",)}
# Row names that run a model with other fixed parameters: (model, params). fusion-300: 300 tree rounds
# instead of 100, to show how much the fusion's result depends on that (untuned) choice.
# fusion-mlp: an MLP beside the trees (the RR expert weighs 1/2, trees and MLP 1/4 each); fusion-mlp-thirds:
# the three experts weigh 1/3 each.
VARIANTS = {"fusion-300": ("fusion", {"n_estimators": 300}),
            "fusion-mlp": ("fusion", {"experts": "xgboost,mlp"}),
            "fusion-mlp-thirds": ("fusion", {"experts": "xgboost,mlp", "weight": 1 / 3})}
# The rows the figure shows: the classic baseline, the latents, both in one model, and the fusion.
FIGURE_ROWS = (("logreg", "latent"), ("logreg", "rr"), ("logreg", "latent,rr"), ("fusion", "latent_rec,rr"),
               ("fusion-mlp", "latent_rec,rr"), ("fusion", "latent_rec,rr,qrs"))
# Rows run again with principal components of the beat samples in place of the latents (a linear code).
PCA_ROWS = (("logreg", "latent_rec,rr,qrs"), ("fusion", "latent_rec,rr"), ("fusion", "latent_rec,rr,qrs"))
# The RR intervals in seconds (and the record mean) beside the normalised ones: they identify a patient.
ABLATION = ("rr,rr_s",)
Q = 4  # the AAMI class Q (unclassifiable beats)
FINISHED_ONLY = False  # --finished-only: report the rows finished in --work, compute none
# Published inter-patient results (train DS1, test DS2), in %: de Chazal, O'Dwyer & Reilly,
# IEEE TBME 51(7) 2004, RR intervals + morphology, linear discriminants (Se / +P per class).
DE_CHAZAL_2004 = {"N": (86.9, 99.2), "S": (75.9, 38.5), "V": (77.7, 81.9)}


def ensure_latents(latents: Path, model: Path | None, batch_size: int) -> None:
    """Encode the shared DS1 records into ``latents`` with ``model`` unless the set exists."""
    if latents.exists():
        return
    if model is None:
        raise SystemExit(f"{latents} does not exist; pass --model to encode DS1 into it")
    import dataclasses

    from funcml.data import load_signals
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel

    fm = FieldModel.load(model)
    signals = load_signals(shared_data() / "ecg" / "mitdb-ds1")
    cfg = dataclasses.replace(fm.encode_defaults, batch_size=batch_size)
    print(f"encoding {len(signals)} beats into {latents}", flush=True)
    encode_signal_set(fm, signals, latents, cfg, model_dir=model, progress=True)


def aami_row(model: str, features: str, metrics: dict, seconds: float, **extra) -> dict:
    """The AAMI numbers of one report (per-class Se, +P, F1 of N S V F, j-index, confusion matrix)."""
    row = {"model": model, "features": features, "seconds": seconds, "j_index": metrics["j_index"],
           "macro_f1": metrics["macro_f1"], "confusion_matrix": metrics["confusion_matrix"],
           "per_class": {c: {k: metrics["per_class"][c][k] for k in ("sensitivity", "precision", "f1", "support")}
                         for c in CLASSES}, **extra}
    s, v = row["per_class"]["S"], row["per_class"]["V"]
    print(f"{model:8s} {features:10s} S Se {s['sensitivity']:.3f} +P {s['precision']:.3f}  V Se "
          f"{v['sensitivity']:.3f} +P {v['precision']:.3f}  j {row['j_index']:.3f}  ({seconds:.0f} s)", flush=True)
    return row


def found_per_record(records: np.ndarray, y: np.ndarray, pred: np.ndarray) -> dict:
    """``{record: {"S": [found, total], "V": [found, total]}}`` for records with S or V beats."""
    out = {}
    for rec in sorted(set(records.tolist())):
        m = records == rec
        counts = {c: [int(((y == k) & (pred == k) & m).sum()), int(((y == k) & m).sum())]
                  for k, c in ((1, "S"), (2, "V"))}
        if counts["S"][1] or counts["V"][1]:
            out[rec] = counts
    return out


def thinned(y: np.ndarray, codes: np.ndarray, records: np.ndarray, stride: int) -> np.ndarray:
    """Rows kept: every val/test row and non-N training row, every ``stride``-th N row of each training record;
    no Q row (8 beats in DS1: too few to learn, and a balanced weight of hundreds on them)."""
    keep = ((y != 0) | (codes != 0)) & (y != Q)
    for rec in np.unique(records[codes == 0]):
        keep[np.flatnonzero((records == rec) & (y == 0) & (codes == 0))[::stride]] = True
    return np.flatnonzero(keep)


def cached(work: Path, key: str, compute) -> dict | None:
    """The row stored as ``work/key.json``, else ``compute()`` stored there (a rerun continues); None for a
    row not finished when ``FINISHED_ONLY`` is set (``--finished-only``)."""
    path = work / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if FINISHED_ONLY:
        print(f"{key}: not finished, left out", flush=True)
        return None
    row = compute()
    work.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, allow_nan=True))
    return row


def subset(ls, rows: np.ndarray, codes: np.ndarray, out: Path):
    """The latent set of ``rows`` of ``ls`` with split codes ``codes`` (one per row), at ``out``."""
    from funcml.latents import LatentSet

    return LatentSet.open(thin_latent_rows(ls, np.asarray(ls.index)[rows], out, splits=codes), verify=False)


def model_and_params(name: str, params: dict) -> tuple[str, dict]:
    """``(model, fixed parameters)`` of a row name: a model of ``funcml classify`` or a :data:`VARIANTS` name."""
    model, extra = VARIANTS.get(name, (name, {}))
    return model, {**params.get(model, {}), **extra}


def default_split(ls, records: np.ndarray, models: list[str], stride: int, seed: int, work: Path) -> list[dict]:
    """Every model x feature choice on the set's own train/val/test records, as `funcml classify` runs it."""
    from funcml.tasks.classify import classify_latent_set
    from funcml.tasks.classify.metrics import predict_from_proba

    y, codes = np.asarray(ls.labels)[:, 0], np.asarray(ls.splits)
    keep = thinned(y, codes, records, stride)
    small = subset(ls, keep, codes[keep], work / "split-latents")

    def one(name: str, features: str) -> dict:
        t0 = time.perf_counter()
        model, fixed = model_and_params(name, {})
        res = classify_latent_set(small, model, features=features, class_weight="balanced", seed=seed,
                                  params=fixed, log=lambda s: print(s, flush=True))
        ev = res.eval_set
        return aami_row(name, features, res.report["test"], time.perf_counter() - t0,
                        selected=res.report["selected"], val=res.report.get("val", {}).get("per_class"),
                        found=found_per_record(records[keep][ev.rows], ev.y,
                                               predict_from_proba(res.proba, "multi-class")))
    rows = [cached(work, f"split-n{stride}-{m}-{f}", lambda m=m, f=f: one(m, f))
            for m in models for f in MODEL_FEATURES.get(m, FEATURES)]
    return [r for r in rows if r is not None]


def fold_codes(records: np.ndarray, folds: int, seed: int, val: bool = True) -> list[np.ndarray]:
    """Per fold, split codes of every row: the fold's records test (2), two other records val (1), the rest train;
    ``val=False``: those two records train too (the same test records and draws)."""
    names = sorted(set(records.tolist()))
    rng = np.random.default_rng(seed)
    order = [names[j] for j in rng.permutation(len(names))]
    out = []
    for k in range(folds):
        test = order[k::folds]
        rest = [n for n in order if n not in test]
        drawn = [rest[j] for j in rng.permutation(len(rest))[:2]]  # drawn either way: the same later draws
        in_val = np.isin(records, drawn) & val
        out.append(np.where(np.isin(records, test), 2, np.where(in_val, 1, 0)).astype(np.uint8))
    return out


def fold_sets(ls, records: np.ndarray, folds: int, stride: int, seed: int, work: Path,
              val: bool = True) -> list[tuple]:
    """Per fold, ``(rows of ls kept, the latent set of those rows with the fold's split codes)``
    (:func:`fold_codes`; ``val=False``: without val records)."""
    y = np.asarray(ls.labels)[:, 0]
    out = []
    for k, codes in enumerate(fold_codes(records, folds, seed, val)):
        keep = thinned(y, codes, records, stride)
        out.append((keep, subset(ls, keep, codes[keep], work / f"fold{k}{_tag(val)}-latents")))
    return out


def _tag(val: bool) -> str:
    """The name part of folds (and their rows) trained on the val records too."""
    return "" if val else "-trainval"


def fold_maker(ls, records: np.ndarray, folds: int, stride: int, seed: int, work: Path) -> Callable[[bool], list]:
    """``folds(val)``: the :func:`fold_sets` with or without val records, each made once, on first use."""
    return functools.cache(lambda val: fold_sets(ls, records, folds, stride, seed, work, val))


def uses_val(name: str, params: dict) -> bool:
    """Whether a row's model reads the val records: a search of hyper-parameters that ``params`` leave open, or
    early stopping (XGBoost, the MLP, the GNN, the fusion's MLP expert). The others train on the val records too."""
    from funcml.tasks.classify.run import SEARCH_GRIDS

    model, fixed = model_and_params(name, params)
    searched = any(k not in fixed for g in SEARCH_GRIDS.get(model, [{}]) for k in g)
    return searched or model in ("xgboost", "mlp", "gnn") or "mlp" in str(fixed.get("experts", ""))


def pooled_row(ls, records: np.ndarray, sets: list[tuple], name: str, features: str, params: dict, seed: int,
               label: str | None = None) -> dict:
    """One model x feature choice over the folds ``sets``, predictions pooled (every kept row tested once)."""
    from funcml.tasks.classify import classify_latent_set
    from funcml.tasks.classify.metrics import classification_metrics, predict_from_proba

    y = np.asarray(ls.labels)[:, 0]
    t0, proba = time.perf_counter(), np.zeros((len(y), len(ls.label_names)))
    model, fixed = model_and_params(name, params)
    for k, (keep, fold) in enumerate(sets):
        res = classify_latent_set(fold, model, features=features, params=fixed, class_weight="balanced", seed=seed)
        proba[keep[res.eval_set.rows]] = res.proba
        print(f"  {name} {label or features} fold {k + 1}/{len(sets)} done", flush=True)
    m = y != Q  # the Q rows are in no fold
    metrics = classification_metrics(y[m], proba[m], "multi-class", list(ls.label_names.values()))
    return aami_row(name, label or features, metrics, time.perf_counter() - t0,
                    found=found_per_record(records[m], y[m], predict_from_proba(proba[m], "multi-class")))


def cv_key(folds: int, stride: int, seed: int, name: str, val: bool = True) -> str:
    """The file name of a finished cross-validation row (the seed in it unless it is 0, as before seeds;
    ``-trainval`` for a row trained on the val records too)."""
    return f"cv{folds}-n{stride}{f'-s{seed}' if seed else ''}{_tag(val)}-{name}"


def cv_row(ls, records: np.ndarray, sets: Callable[[bool], list], name: str, features: str, params: dict,
           folds: int, stride: int, seed: int, work: Path, prefix: str = "") -> dict | None:
    """The cached :func:`pooled_row` of ``name`` x ``features`` over ``sets(uses_val(name, params))``;
    ``prefix``: the code in place of the latents (``pca``: the rows read ``pca...`` for ``latent...``)."""
    val = uses_val(name, params)
    label = features.replace("latent", prefix) if prefix else None
    return cached(work, cv_key(folds, stride, seed, f"{prefix + '-' if prefix else ''}{name}-{features}", val),
                  lambda: pooled_row(ls, records, sets(val), name, features, params, seed, label))


def cross_validation(ls, records: np.ndarray, models: list[str], params: dict, folds: int, stride: int,
                     seed: int, work: Path, ablation_models: tuple[str, ...] = ("logreg",),
                     sets: Callable[[bool], list] | None = None) -> list[dict]:
    """Record-level K-fold cross-validation with pooled predictions (see the module docstring); ``sets``: the
    :func:`fold_maker` of these arguments when already made. A row's folds have val records only when its
    model reads them (:func:`uses_val`)."""
    sets = fold_maker(ls, records, folds, stride, seed, work) if sets is None else sets
    rows = [cv_row(ls, records, sets, m, f, params, folds, stride, seed, work) for m in models
            for f in MODEL_FEATURES.get(m, FEATURES) + (ABLATION if m in ablation_models else ())]
    return [r for r in rows if r is not None]


def pca_code_set(fold, beats: np.ndarray, out: Path):
    """``fold`` with its latents replaced by as many principal components of its beats ``(n, T)``, fitted on
    its training rows: a linear code of the same samples, at ``out``."""
    from sklearn.decomposition import PCA

    from funcml.latents import LatentSet, write_latent_set

    train = np.asarray(fold.splits) == 0
    codes = PCA(fold.latent_dim, random_state=0).fit(beats[train]).transform(beats)
    write_latent_set(out, codes, splits=np.asarray(fold.splits), labels=np.asarray(fold.labels),
                     index=np.asarray(fold.index), task=fold.task, label_names=fold.label_names,
                     signal_shape=fold.signal_shape, source=fold.manifest.get("source"), embed_model=False,
                     overwrite=True, aux=np.asarray(fold.aux), aux_names=tuple(fold.aux_names),
                     extra={"codes": f"the first {fold.latent_dim} principal components of the beat samples"})
    return LatentSet.open(out, verify=False)


def pca_baseline(ls, records: np.ndarray, beats: np.ndarray, sets: Callable[[bool], list], models: list[str],
                 params: dict, folds: int, stride: int, seed: int, work: Path) -> list[dict]:
    """The cross-validation of the :data:`PCA_ROWS` of ``models`` over the folds ``sets`` (:func:`fold_maker`)
    with principal components of the beats ``(N, T)`` (row for row with ``ls``) in place of the latents; the
    features read ``pca...`` instead of ``latent...``."""
    @functools.cache
    def pca_sets(val: bool) -> list[tuple]:
        out = []
        for k, (keep, fold) in enumerate(sets(val)):
            if not np.array_equal(np.asarray(fold.index), np.asarray(ls.index)[keep]):
                raise SystemExit(f"fold {k}: its rows are not the rows of {ls.path} kept (a repeated source index?)")
            out.append((keep, pca_code_set(fold, beats[keep], work / f"pca-fold{k}{_tag(val)}-latents")))
        return out

    rows = [cv_row(ls, records, pca_sets, m, f, params, folds, stride, seed, work, "pca")
            for m, f in PCA_ROWS if m in models]
    return [r for r in rows if r is not None]


def seed_spread(ls, records: np.ndarray, base_rows: list[dict], base_seed: int, seeds: list[int], models: list[str],
                params: dict, folds: int, stride: int, work: Path) -> list[dict]:
    """The cross-validation of ``models`` again with other seeds (other records in each fold, other model seeds):
    per row of ``base_rows`` (run with ``base_seed``), S Se, V Se and j-index over all the seeds."""
    runs = {base_seed: base_rows}
    for seed in (s for s in dict.fromkeys(seeds) if s != base_seed):
        runs[seed] = cross_validation(ls, records, models, params, folds, stride, seed, work / f"seed{seed}", ())
    metrics = {"S_se": lambda r: r["per_class"]["S"]["sensitivity"],
               "V_se": lambda r: r["per_class"]["V"]["sensitivity"], "j_index": lambda r: r["j_index"]}
    by_row = {s: {(r["model"], r["features"]): r for r in rows} for s, rows in runs.items()}
    out = []
    for row in (r for r in base_rows if r["model"] in models):
        key = (row["model"], row["features"])
        same = {s: rows[key] for s, rows in by_row.items() if key in rows}
        if len(same) < 2:  # a row the other seeds do not run (the ablation)
            continue
        values = {k: [f(r) for r in same.values()] for k, f in metrics.items()}
        out.append({"model": row["model"], "features": row["features"], "seeds": list(same),
                    **{k: {"values": v, "mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                       for k, v in values.items()}})
    return out


def _pair(d: dict) -> str:
    def f(x):
        return "n/a" if x is None or x != x else f"{x:.2f}"
    return f"{f(d['sensitivity'])} / {f(d['precision'])}"


def _published_row() -> list:
    chazal = [f"{se / 100:.2f} / {p / 100:.2f}" for se, p in DE_CHAZAL_2004.values()]
    j = sum(v / 100 for c in ("S", "V") for v in DE_CHAZAL_2004[c])
    return ["published: de Chazal et al. 2004, DS1 -> DS2", "RR + morphology", *chazal, "n/a", round(j, 3), "", ""]


def tables(split_rows: list[dict], cv_rows: list[dict], test_records: list[str], folds: int,
           stride: int, spread: list[dict] | None = None, val_records: dict[str, bool] | None = None) -> list[dict]:
    """The result's tables; ``val_records``: per cross-validation row name, whether its folds have val records."""
    columns = ["model", "features", "N", "S", "V", "F", "j-index", "macro-F1", "seconds"]

    def body(rows):
        return [[r["model"], r["features"], *(_pair(r["per_class"][c]) for c in CLASSES), round(r["j_index"], 3),
                 round(r["macro_f1"], 3), round(r["seconds"], 1)] for r in rows]
    out = [table("MIT-BIH DS1, default record split: Se / +P per AAMI class", columns,
                 body(split_rows) + [_published_row()],
                 caption=f"Test records {', '.join(test_records)} (every beat); trained on "
                         f"{'every beat' if stride == 1 else f'one in {stride} N beats and all S, V and F beats'} "
                         "of the train records, class weights balanced on them, "
                         "hyper-parameters and early stopping on the val records (122, 220; the fusion's MLP "
                         "stops early on them, nothing else of the fusion uses them). The published row is "
                         "inter-patient DS1 -> DS2 (22 other patients).")]
    if cv_rows:
        out.append(table(f"MIT-BIH DS1, {folds}-fold record-level cross-validation (every beat tested once)",
                         columns, body(cv_rows) + [_published_row()],
                         caption="Predictions pooled over the folds (every DS1 beat tested once, by a model that "
                                 f"never saw its record); fixed hyper-parameters; {_val_note(val_records or {})} "
                                 "rr: the RR intervals relative to the record's mean; rr,rr_s: with the intervals "
                                 "in seconds and the record mean beside them; latent_rec: the latents minus their "
                                 "record's median latent; fusion: logistic regression on rr fused with XGBoost "
                                 "(100 rounds; fusion-300: 300) on all the features (with qrs, the logistic "
                                 "regression reads rr and qrs); qrs: the log QRS width and area relative to the "
                                 "record's median beat; fusion-mlp: with an MLP beside the trees (weights 1/2, 1/4, "
                                 "1/4; -thirds: 1/3 each); pca_rec: in place of the latents, as many principal "
                                 "components of the beat samples (fitted on each fold's training records), centred "
                                 "on the record."))
    if spread:
        def cell(d):
            return f"{d['mean']:.3f} ({d['min']:.3f} - {d['max']:.3f})"
        seeds = sorted({s for r in spread for s in r["seeds"]})
        out.append(table(f"MIT-BIH DS1, {folds}-fold record-level cross-validation with {len(seeds)} seeds: "
                         "mean (min - max)", ["model", "features", "S Se", "V Se", "j-index"],
                         [[r["model"], r["features"], cell(r["S_se"]), cell(r["V_se"]), cell(r["j_index"])]
                          for r in spread],
                         caption=f"The cross-validation above run with the seeds {', '.join(map(str, seeds))}: each "
                                 "seed puts other records together in the folds, draws other val records (for the "
                                 "models that read them) and seeds the models."))
    return out


def _val_note(val_records: dict[str, bool]) -> str:
    """What the folds' val records serve, for the cross-validation table's caption."""
    read = [m for m, v in val_records.items() if v]
    train = [m for m, v in val_records.items() if not v]
    out = f"two of the training records as val for {', '.join(read)}" if read else ""
    if train:
        out += ("; " if out else "") + f"{', '.join(train)} read no val records and train on those records too"
    return (out or "no val records") + "."


def aims(rows: list[dict]) -> dict:
    """Per row with latents and RR features: S and V sensitivity, j-index, and whether it meets the aims
    (S Se >= 0.60, V Se >= 0.85, j-index above logreg on ``rr`` alone and on ``latent`` alone)."""
    ref = {r["features"]: r["j_index"] for r in rows if r["model"] == "logreg"}
    out = {}
    for r in rows:
        groups = r["features"].split(",")
        if "rr" not in groups or not any(g.startswith("latent") for g in groups):
            continue
        s, v = r["per_class"]["S"]["sensitivity"], r["per_class"]["V"]["sensitivity"]
        out[f"{r['model']} {r['features']}"] = {
            "S_sensitivity": s, "V_sensitivity": v, "j_index": r["j_index"], "S_se_at_least_0.60": s >= 0.60,
            "V_se_at_least_0.85": v >= 0.85, "j_above_rr": r["j_index"] > ref.get("rr", np.inf),
            "j_above_latent": r["j_index"] > ref.get("latent", np.inf)}
    return out


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Row-normalised test confusion matrices of the :data:`FIGURE_ROWS` (cells: rate and count)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = [r for m, f in FIGURE_ROWS for r in rows if (r["model"], r["features"]) == (m, f)]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.1 * len(chosen), 3.2), dpi=100)
    for ax, r in zip(np.atleast_1d(axes), chosen):
        cm = np.asarray(r["confusion_matrix"], dtype=float)[:4, :4]
        rate = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(rate, cmap="Blues", vmin=0, vmax=1)
        for i in range(4):
            for j in range(4):
                ax.text(j, i, f"{rate[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rate[i, j] > 0.6 else "black")
        ax.set_xticks(range(4), CLASSES)
        ax.set_yticks(range(4), CLASSES)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{r['model']}, {r['features']}\nj-index {r['j_index']:.2f}", fontsize=9)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def feature_medians(ls, names: tuple[str, ...] = ("rr.pre_norm", "rr.post_norm", "qrs.width_lognorm",
                                                    "qrs.area_lognorm")) -> dict:
    """Per AAMI class, the median of some auxiliary features over every beat of the set (what marks a class)."""
    y = np.asarray(ls.labels)[:, 0]
    aux = np.asarray(ls.aux, dtype=np.float64)
    cols = {n: ls.aux_names.index(n) for n in names if n in ls.aux_names}
    return {c: {n: float(np.nanmedian(aux[y == k, j])) for n, j in cols.items()}
            for k, c in enumerate(CLASSES) if (y == k).any()}


def records_and_beats(ls) -> tuple[np.ndarray, np.ndarray]:
    """The MIT-BIH record ``(N,)`` and the beat samples ``(N, T)`` of every row of ``ls`` (from the source,
    through the rows' ``index``)."""
    from funcml.data import load_signals

    signals = load_signals(ls.manifest["source"]["spec"])
    if signals.fingerprint != ls.manifest["source"].get("fingerprint"):
        raise SystemExit(f"{ls.path} was not encoded from {signals.spec} with the default options")
    index = np.asarray(ls.index)
    return signals.records[index], signals.get(index).reshape(len(index), -1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", required=True, type=Path, help="DS1 latent set (version 2, with RR features)")
    ap.add_argument("--model", type=Path, default=None, help="field model to encode DS1 with when --latents is absent")
    ap.add_argument("--models", default="logreg,xgboost,fusion,fusion-mlp", help="models on the default split")
    ap.add_argument("--cv-models", default="logreg,xgboost,fusion,fusion-300,fusion-mlp,fusion-mlp-thirds",
                    help="models of the cross-validation ('' for none; the fusion-* variants: see VARIANTS)")
    ap.add_argument("--cv-folds", type=int, default=5)
    ap.add_argument("--spread-seeds", default="1,2,3,4",
                    help="further seeds of the cross-validation, for the spread of the --spread-models rows ('' none)")
    ap.add_argument("--spread-models", default="logreg,fusion,fusion-mlp")
    ap.add_argument("--no-pca", action="store_true", help="leave out the rows with principal components of the beats")
    ap.add_argument("--ablation-models", default="logreg", help="CV models also run on the features rr,rr_s")
    ap.add_argument("--cv-params", default='{"logreg": {"C": 0.1}, "xgboost": {"max_depth": 4}, "fusion": {}}')
    ap.add_argument("--n-beat-stride", type=int, default=1,
                    help="keep every k-th N beat of each training record (1: every beat; latent_rec centres a "
                         "beat on the median of the beats kept of its record)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "funcml-ecg-rr",
                    help="finished rows and subset latent sets (a rerun continues from here)")
    ap.add_argument("--encode-batch-size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--finished-only", action="store_true", help="report the rows finished in --work, compute none")
    ap.add_argument("--name", default="ecg_rr")
    ap.add_argument("--figure", type=Path, default=REPO / "docs" / "figures" / "ecg-rr-confusion.png")
    args = ap.parse_args()
    global FINISHED_ONLY
    FINISHED_ONLY = args.finished_only

    from funcml.latents import LatentSet

    ensure_latents(args.latents, args.model, args.encode_batch_size)
    ls = LatentSet.open(args.latents)
    records, beats = records_and_beats(ls)
    cv_models = [m for m in args.cv_models.split(",") if m]
    cv_params = json.loads(args.cv_params)
    sets = fold_maker(ls, records, args.cv_folds, args.n_beat_stride, args.seed, args.work)
    cv_rows = cross_validation(ls, records, cv_models, cv_params, args.cv_folds,
                               args.n_beat_stride, args.seed, args.work,
                               tuple(args.ablation_models.split(",")), sets) if cv_models else []
    pca_rows = pca_baseline(ls, records, beats, sets, cv_models, cv_params, args.cv_folds,
                            args.n_beat_stride, args.seed, args.work) if cv_rows and not args.no_pca else []
    spread_seeds = [int(s) for s in args.spread_seeds.split(",") if s]
    spread_models = [m for m in args.spread_models.split(",") if m in cv_models]
    spread = seed_spread(ls, records, cv_rows, args.seed, spread_seeds, spread_models, cv_params,
                         args.cv_folds, args.n_beat_stride, args.work) if cv_rows and spread_seeds else []
    split_rows = default_split(ls, records, [m for m in args.models.split(",") if m], args.n_beat_stride, args.seed,
                               args.work)
    shown, protocol = (cv_rows, f"{args.cv_folds}-fold record-level cross-validation") if cv_rows else \
        (split_rows, "default record split")
    plot(shown, args.figure, f"MIT-BIH DS1, {protocol}: test beats (rows: true class)")
    split_records = ls.manifest.get("extra", {}).get("source_info", {}).get("records", {})
    results = {"default_split": split_rows, "cross_validation": cv_rows, "records": split_records,
               "cv": {"folds": args.cv_folds, "n_beat_stride": args.n_beat_stride, "params": cv_params,
                      "val_records": {m: uses_val(m, cv_params) for m in cv_models}},
               "latent_set": {"count": len(ls), "latent_dim": ls.latent_dim, "aux_features": ls.aux_names,
                              "psnr_mean": ls.manifest.get("metrics", {}).get("psnr_mean"), "model_id": ls.model_id},
               "figure": str(args.figure.resolve().relative_to(REPO)),
               "published": {"de_chazal_2004_percent": DE_CHAZAL_2004},
               "feature_medians": feature_medians(ls),
               "aims": {"default_split": aims(split_rows), "cross_validation": aims(cv_rows)},
               "seed_spread": spread, "pca_baseline": pca_rows}
    write_result(args.name, results, task="classification-ecg",
                 tables=tables(split_rows, cv_rows + pca_rows, split_records.get("test", []), args.cv_folds,
                              args.n_beat_stride, spread, results["cv"]["val_records"]),
                 notes="The 8 Q beats of DS1 are left out (too few to learn). 2 CPU cores shared with other jobs "
                       f"(load average {os.getloadavg()[1]:.1f} at the end); seconds include the validation search "
                       "and are upper bounds")


if __name__ == "__main__":
    main()
