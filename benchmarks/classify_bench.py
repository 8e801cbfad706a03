"""Benchmark: classifiers on latents next to a ResNet-18-style CNN on the raw signals, same splits.

One dataset per run, everything timed in the same process (ratios side by side):

    nice -n 10 python benchmarks/classify_bench.py --name breastmnist-28 \\
        --latents LATENTS --data $FUNCML_SHARED_DATA/medmnist/breastmnist.npz \\
        --baseline-epochs 30 --baseline-width 16 --threads 1 --json-out results.json

For MIT-BIH, ``--n-beat-stride 8`` keeps every beat of the S, V, F and Q classes but only every 8th
normal (N) beat of each training record (RBF SVMs and the CNN on all 37k training beats take too
long on a busy 2-core CPU); validation and test keep every beat. The rows of the same beats are
taken from LATENTS (written to ``--work``), so the latents and the CNN see the same beats. ``--encode-model MODEL`` encodes DATA
(after that selection) into ``--latents`` first when it does not exist yet.

Each latent model runs exactly as ``funcml classify --latents LATENTS --model M`` does (train split,
small search on val, test split). Prints a Markdown table: test accuracy, AUC, macro-F1, the
selected model's training time and the whole search time; the CNN row gives its training time
(all epochs, validation included). Pass ``--data-option KEY=VALUE`` for the same data options the
latents were encoded with (MIT-BIH record splits), ``--models`` to choose models. The tables go to
``benchmarks/results/classify-NAME.json`` (``--result`` names another file).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import table, write_result  # noqa: E402


def thinned_beats(signals, stride: int):
    """Indices ``(M,)`` of every val/test beat, every non-N training beat and every ``stride``-th N
    training beat of each record."""
    import numpy as np

    labels = signals.labels[:, 0]
    keep = (labels != 0) | (np.asarray(signals.splits) != 0)
    for rec in np.unique(signals.records):
        normal = np.flatnonzero((signals.records == rec) & (labels == 0) & (np.asarray(signals.splits) == 0))
        keep[normal[::stride]] = True
    return np.flatnonzero(keep)


def thin_normal_beats(signals, stride: int):
    """A copy of a beat set restricted to :func:`thinned_beats`."""
    from funcml.data.base import ArraySignalSet
    from funcml.io import sha256_bytes

    idx = thinned_beats(signals, stride)
    return ArraySignalSet(signals.get(idx), name=f"{signals.name}-n{stride}", spec=f"{signals.spec}#n{stride}",
                          splits=signals.splits[idx], labels=signals.labels[idx], task=signals.task,
                          label_names=signals.label_names, info={"thinned_from": signals.spec, "n_beat_stride": stride},
                          fingerprint=sha256_bytes(f"{signals.fingerprint}/n-stride-{stride}".encode()))


def thin_latent_rows(ls, keep, out: Path, splits=None) -> Path:
    """Write the rows of ``ls`` whose source index is in ``keep`` as a latent set at ``out`` (with their
    auxiliary features; ``splits``: new split codes of those rows, else their own)."""
    import numpy as np

    from funcml.latents import write_latent_set

    rows = np.flatnonzero(np.isin(ls.index, keep))
    m = ls.manifest
    write_latent_set(out, ls.rows(rows), splits=np.asarray(ls.splits)[rows] if splits is None else splits,
                     labels=np.asarray(ls.labels)[rows], psnr=np.asarray(ls.psnr)[rows],
                     index=np.asarray(ls.index)[rows], task=ls.task, label_names=ls.label_names,
                     signal_shape=ls.signal_shape, source=m.get("source"), encoding=m.get("encoding"),
                     model_id=ls.model_id, embed_model=False, overwrite=True,
                     aux=None if ls.aux is None else np.asarray(ls.aux)[rows], aux_names=tuple(ls.aux_names))
    print(f"thinned {len(ls)} latent rows to {len(rows)} -> {out}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--latents", required=True)
    ap.add_argument("--data", default=None, help="DATA for the pixel CNN (omit to skip it)")
    ap.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--resolution", default=None)
    ap.add_argument("--models", default="mlp,mlp-paper,xgboost,logreg,svm,knn,gnn")
    ap.add_argument("--class-weight", default=None, choices=[None, "balanced"])
    ap.add_argument("--baseline-epochs", type=int, default=30)
    ap.add_argument("--baseline-width", type=int, default=64)
    ap.add_argument("--baseline-batch-size", type=int, default=128)
    ap.add_argument("--baseline-max-minutes", type=float, default=8.0, help="bound on the CNN's training time")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--n-beat-stride", type=int, default=1, help="keep every k-th N training beat (MIT-BIH)")
    ap.add_argument("--encode-model", default=None, help="encode DATA into --latents first (if absent)")
    ap.add_argument("--work", default="/tmp/funcml-classify-bench", help="folder for thinned latent sets")
    ap.add_argument("--result", default=None, help="result file name in benchmarks/results/ (default: classify-NAME)")
    ap.add_argument("--task", default="classification", help="docs section of the result")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from funcml.cli.common import parse_key_values, parse_resolution
    from funcml.data import LoadOptions, load_signals
    from funcml.latents import LatentSet
    from funcml.tasks.baseline import train_pixel_baseline
    from funcml.tasks.classify.run import classify_latent_set

    signals = None
    if args.data:
        signals = load_signals(args.data, LoadOptions(resolution=parse_resolution(args.resolution),
                                                      extra=parse_key_values(tuple(args.data_option))))
        source_fingerprint = signals.fingerprint
        if args.n_beat_stride > 1:
            if Path(args.latents).exists():
                args.latents = str(thin_latent_rows(LatentSet.open(args.latents), thinned_beats(signals, args.n_beat_stride),
                                                    Path(args.work) / f"{args.name}-latents-n{args.n_beat_stride}"))
            signals = thin_normal_beats(signals, args.n_beat_stride)
    if args.encode_model and not Path(args.latents).exists():
        from funcml.latents.encode import encode_signal_set
        from funcml.encoders.model import FieldModel

        model = FieldModel.load(args.encode_model)
        t0 = time.perf_counter()
        encode_signal_set(model, signals, args.latents, model_dir=args.encode_model, progress=False)
        print(f"encoded {len(signals)} signals in {time.perf_counter() - t0:.0f} s", flush=True)
    ls = LatentSet.open(args.latents)
    rows, results = [], {"name": args.name, "latents": args.latents, "machine": platform.processor() or platform.machine(),
                         "threads": torch.get_num_threads(), "models": {}}
    for spec in args.models.split(","):
        model, _, preset = spec.partition("-")
        t0 = time.perf_counter()
        weight = args.class_weight if model != "knn" else None  # k-NN takes no class weights
        res = classify_latent_set(ls, model, preset=preset or None, class_weight=weight,
                                  log=lambda s: print(s, flush=True))
        r, test = res.report, res.report["test"]
        results["models"][spec] = {"test": test, "val": r.get("val"), "fit_seconds": r["fit_seconds"],
                                   "search_seconds": r["search_seconds"], "wall_seconds": time.perf_counter() - t0,
                                   "params": r["params"], "search": r["search"]}
        rows.append((f"{spec} on latents (P={ls.latent_dim})", test, r["fit_seconds"], r["search_seconds"]))
        print(f"{spec}: acc {test['accuracy']:.4f} auc {test['auc']:.4f} fit {r['fit_seconds']:.1f}s "
              f"search {r['search_seconds']:.1f}s", flush=True)
    if signals is not None:
        if source_fingerprint != ls.manifest["source"].get("fingerprint"):
            print("note: DATA's fingerprint differs from the latents' source (other loading options?)", flush=True)
        rep = train_pixel_baseline(signals, width=args.baseline_width, epochs=args.baseline_epochs,
                                   batch_size=args.baseline_batch_size, class_weight=args.class_weight,
                                   max_minutes=args.baseline_max_minutes,
                                   log=lambda s: print(s, flush=True), progress=False)
        results["baseline"] = {k: rep[k] for k in ("model", "width", "parameters", "epochs_done", "best_epoch",
                                                   "train_seconds", "seconds_per_epoch", "test", "val")}
        rows.append((f"{rep['model']} (width {args.baseline_width}) on pixels, {rep['epochs_done']} epochs",
                     rep["test"], rep["train_seconds"], rep["train_seconds"]))
    columns = [args.name, "test acc", "test AUC", "macro-F1", "train s (selected)", "train s (all)"]
    main_rows = [[name, f"{t['accuracy']:.3f}", f"{t['auc']:.3f}", f"{t['macro_f1']:.3f}", f"{fit:.1f}", f"{total:.1f}"]
                 for name, t, fit, total in rows]
    tables = [table(f"{args.name}: classifiers on latents against a pixel CNN", columns, main_rows)]
    if ls.task in ("multi-class", "ordinal-regression"):
        names = list(rows[0][1]["per_class"])
        per_class = []
        for name, t, _, _ in rows:
            cells = []
            for c in names:
                pc = t["per_class"][c]
                se, pp = pc["sensitivity"], pc["precision"]
                cells.append("n/a" if pc["support"] == 0 else f"{se:.2f} / " + ("n/a" if pp != pp else f"{pp:.2f}"))
            per_class.append([name, *cells])
        tables.append(table(f"{args.name}: per-class sensitivity / precision (Se / +P)", [args.name, *names], per_class))
    for tab in tables:
        print("\n| " + " | ".join(tab["columns"]) + " |\n|" + "---|" * len(tab["columns"]))
        for row in tab["rows"]:
            print("| " + " | ".join(row) + " |")
    from funcml.tasks.classify.metrics import json_safe

    write_result(args.result or f"classify-{args.name}", json_safe(results), task=args.task, tables=tables,
                 notes=args.notes)
    if args.json_out:
        from funcml.tasks.classify.metrics import json_safe

        with open(args.json_out, "w") as f:
            json.dump(json_safe(results), f, indent=1)


if __name__ == "__main__":
    main()
