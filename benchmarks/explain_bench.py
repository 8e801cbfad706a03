"""Benchmark: attribution quality of ``funcml explain`` on a real latent set.

One dataset per run; exactly what ``funcml explain`` computes (same code path), on the first
``--count`` test rows (or ``--per-class K`` rows of each class), for each ``--methods`` entry:

    nice -n 10 python benchmarks/explain_bench.py --name breastmnist-28 \\
        --latents breastmnist28-latents --classifier runs/explain-bench/breast28-mlp \\
        --count 16 --encode-steps 5 --methods ig,saliency --figures docs/figures/explain-breastmnist28

When ``--classifier`` does not exist yet, an MLP is trained first exactly as
``funcml classify --latents LATENTS --model mlp --out CLF`` does (train split, search on val).
The data is the source recorded in the latent set (``--data`` overrides it). Prints a Markdown
table: deletion/insertion AUC with the random-order AUC in brackets (latent and signal space),
the model-randomisation Spearman correlation (|attributions| of the trained vs the fully
randomised classifier), the IG completeness gap relative to the output change, the fraction of
counterfactuals that flipped the prediction, and the seconds of each space. ``--figures PREFIX``
copies the figures of the first method to ``PREFIX-<figure>.png``. The table goes to
``benchmarks/results/explain-NAME.json`` (``--result`` names another file).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import torch


def _f(v) -> str:
    return "n/a" if v is None or v != v else f"{v:.3f}"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--latents", required=True)
    ap.add_argument("--classifier", required=True, help="classifier directory (an MLP is trained there if absent)")
    ap.add_argument("--data", default=None, help="source data (default: the one recorded in the latent set)")
    ap.add_argument("--count", type=int, default=16, help="test rows explained")
    ap.add_argument("--per-class", type=int, default=0,
                    help="explain up to this many test rows of each true class instead (imbalanced data)")
    ap.add_argument("--methods", default="ig,saliency")
    ap.add_argument("--encode-steps", type=int, default=5, help="H of the differentiable encoder in signal space")
    ap.add_argument("--ig-steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/explain-bench", help="folder for the full outputs of each run")
    ap.add_argument("--figures", default=None, help="copy the figures of the first method to PREFIX-<name>.png")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--result", default=None, help="result file name in benchmarks/results/ (default: explain-NAME)")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from funcml.data import load_signals
    from funcml.latents import LatentSet
    from funcml.tasks.classify import classify_latent_set, load_classifier
    from funcml.tasks.classify import write_outputs as write_classifier
    from funcml.tasks.explain import ExplainConfig, explain_latent_set, write_outputs

    ls = LatentSet.open(args.latents)
    if not (Path(args.classifier) / "classifier.json").is_file():
        print(f"training an MLP on {ls.path} -> {args.classifier}", flush=True)
        write_classifier(classify_latent_set(ls, "mlp"), args.classifier, ls)
    clf = load_classifier(args.classifier)
    test = ls.split_indices("test")
    test = test if len(test) else np.arange(len(ls))
    if args.per_class:
        y = np.asarray(ls.labels[test]).reshape(len(test), -1)[:, 0]
        groups = [test[y == c][:args.per_class] for c in np.unique(y)]  # round robin: figures show every class
        rows = np.asarray([g[k] for k in range(args.per_class) for g in groups if k < len(g)], dtype=np.int64)
    else:
        rows = test[:args.count]
    model = ls.load_model()
    signals = load_signals(args.data or ls.manifest["source"]["spec"])
    results = {"name": args.name, "latents": str(ls.path), "classifier": str(args.classifier),
               "classifier_kind": clf.kind, "rows": rows.tolist(), "encode_steps": args.encode_steps,
               "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}", "runs": {}}
    columns = ["dataset", "method", "H", "latent deletion AUC (random)", "latent insertion AUC (random)",
               "signal deletion AUC (random)", "signal insertion AUC (random)", "randomisation Spearman latent / signal",
               "IG gap / change latent / signal", "counterfactuals flipped", "seconds latent / signal"]
    table_rows = []
    for i, method in enumerate(args.methods.split(",")):
        cfg = ExplainConfig(method=method, encode_steps=args.encode_steps, ig_steps=args.ig_steps,
                            counterfactual=i == 0)
        res = explain_latent_set(ls, clf, model=model, signals=signals, rows=rows, config=cfg,
                                 log=lambda s: print(s, flush=True))
        out = Path(args.out) / f"{args.name}-{method}"
        write_outputs(res, out, overwrite=True)
        rep = res.report
        results["runs"][method] = {k: rep[k] for k in ("latent", "signal", "counterfactual") if k in rep}
        lat, sig = rep["latent"], rep["signal"]

        def q(s, mode):
            return f"{_f(s['quality'][mode]['auc'])} ({_f(s['quality'][mode]['auc_random'])})"

        def gap(s):
            return _f(s["completeness"]["relative_gap"]) if s.get("completeness") else "-"

        cf = rep.get("counterfactual", {})
        table_rows.append([args.name, method, str(args.encode_steps), q(lat, "deletion"), q(lat, "insertion"),
                           q(sig, "deletion"), q(sig, "insertion"),
                           f"{_f(lat['randomisation']['full']['spearman_abs'])} / "
                           f"{_f(sig['randomisation']['full']['spearman_abs'])}", f"{gap(lat)} / {gap(sig)}",
                           _f(cf.get("flipped")) if cf else "-", f"{lat['seconds']:.1f} / {sig['seconds']:.1f}"])
        if i == 0 and args.figures:
            Path(args.figures).parent.mkdir(parents=True, exist_ok=True)
            for png in sorted(out.glob("*.png")):
                shutil.copyfile(png, f"{args.figures}-{png.name}")
        fid = sig["fidelity"]
        print(f"{method}: re-encoding with H = {sig['encode_steps']} (model: {sig['model_encode_steps']}) keeps "
              f"{fid['prediction_agreement']:.0%} of predictions, latent cosine {fid['latent_cosine_mean']:.3f}",
              flush=True)
        results["fidelity"] = fid
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    print("\n".join("| " + " | ".join(row) + " |" for row in table_rows))
    results["table"] = table_rows
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1, default=float))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import table, write_result

    write_result(args.result or f"explain-{args.name}", json.loads(json.dumps(results, default=float)),
                 task="explanation", notes=args.notes,
                 tables=[table(f"{args.name}: attribution quality of funcml explain", columns, table_rows)])
    return results


if __name__ == "__main__":
    main()
