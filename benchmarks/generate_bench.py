"""Benchmark generation on latents: flow matching vs diffusion, guidance, sampler steps.

For one latent set (with its embedded field model) this trains a generator per method on the
train split, then scores every generator with ONE evaluation context (one feature CNN trained on
the real training signals, the same held-out sets and the same Gaussian floor), so all rows of a
table are directly comparable. Writes ``OUT/results.json``, comparison figures, an interpolation
strip and the saved generators (usable with ``funcml generate sample``), prints Markdown tables and
writes them to ``benchmarks/results/RESULT.json`` (``--result``, default ``generate-`` and the name of
the latent set).

Example (2-core CPU, nice'd):
    nice -n 10 python benchmarks/generate_bench.py --latents LATENTS --out runs/gen-bench/breast
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--latents", required=True)
    ap.add_argument("--data", default=None, help="source DATA (default: the latent set's own spec)")
    ap.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", required=True)
    ap.add_argument("--methods", default="flow,diffusion")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--guidance", default="0,1,2,4", help="guidance weights to score (first method only)")
    ap.add_argument("--sample-steps", default="10,25,50", help="sampler steps to score (each method)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cnn-steps", type=int, default=1000)
    ap.add_argument("--classifier", default="logistic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--result", default=None, help="result file name in benchmarks/results/ (default: generate-LATENTS)")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from funcml.cli.generate import load_real_signals
    from funcml.latents import LatentSet
    from funcml.tasks.generate.artifact import save_generator_dir
    from funcml.tasks.generate.evaluate import EvaluationContext, decode_latents, plot_comparison, single_labels
    from funcml.tasks.generate.generator import LatentGenerator
    from funcml.tasks.generate.interpolation import interpolate, plot_strip

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    ls = LatentSet.open(args.latents)
    model = ls.load_model()
    signals = load_real_signals(ls, args.data, None, None, 0, 0.1, 0.2, tuple(args.data_option))
    t0 = time.perf_counter()
    feature_net = load_feature_net(out, ls, args)
    ctx = EvaluationContext(ls, model, signals=signals, seed=args.seed, repeats=args.repeats,
                            cnn_steps=args.cnn_steps, classifier=args.classifier, log=log, feature_net=feature_net)
    save_feature_net(out, ctx, args)
    results: dict = {"latents": args.latents, "latent_dim": ls.latent_dim, "train": int(len(ctx.x_train)),
                     "held_out": int(len(ctx.x_test)), "context_seconds": time.perf_counter() - t0,
                     "feature_net": ctx.net_info, "held_out_sets": ctx.held_results, "methods": {}}
    previous = out / "results.json"
    if previous.is_file():  # methods benchmarked by earlier runs (same feature CNN) are kept
        old = json.loads(previous.read_text())
        if old.get("latents") == args.latents and old.get("feature_net") == results["feature_net"]:
            results["methods"] = old.get("methods", {})
    log(f"evaluation context ready in {results['context_seconds']:.0f} s: {ctx.net_info}")
    train_rows = ls.split_indices("train")
    x, y = ls.rows(train_rows), single_labels(ls, train_rows)
    methods = [m for m in args.methods.split(",") if m]
    for method in methods:
        t0 = time.perf_counter()
        gen = LatentGenerator(method=method, steps=args.steps, seed=args.seed, progress=True).fit(x, y)
        fit_s = time.perf_counter() - t0
        gdir = out / f"gen-{method}"
        shutil.rmtree(gdir, ignore_errors=True)
        save_generator_dir(gen, gdir, ls, ls.model_dir, model.id)
        t0 = time.perf_counter()
        report, sets = ctx.evaluate(gen, 1.0)
        eval_s = time.perf_counter() - t0
        plot_comparison(sets, out / f"comparison-{method}.png", ls.label_names)
        entry = {"fit_seconds": fit_s, "eval_seconds": eval_s, "params": sum(p.numel() for p in gen.net_.parameters()),
                 "final_loss": gen.training_["final_loss"], "report": report, "sample_steps": {}, "guidance": {}}
        for steps in parse_floats(args.sample_steps):
            gen.sample_steps = int(steps)
            t0 = time.perf_counter()
            z, _ = gen.sample(1000, seed=99)
            per_1000 = time.perf_counter() - t0
            rep, _ = ctx.evaluate(gen, 1.0)
            entry["sample_steps"][str(int(steps))] = {"seconds_per_1000": per_1000, **_row(rep)}
        gen.sample_steps = 50
        if method == methods[0] and y is not None:
            for w in parse_floats(args.guidance):
                rep, gsets = ctx.evaluate(gen, w)
                entry["guidance"][str(w)] = _row(rep)
                if w == max(parse_floats(args.guidance)):
                    plot_comparison(gsets, out / f"comparison-{method}-w{w:g}.png", ls.label_names)
        results["methods"][method] = entry
        atomic_results(out, results)
    # interpolation strip between the first test signal and the next one of another class
    test = ls.split_indices("test")
    a = test[0]
    lab = None if ls.labels is None else np.asarray(ls.labels)[:, 0]
    b = next((r for r in test[1:] if lab is None or lab[r] != lab[a]), test[1])
    strip = {m: decode_latents(model, interpolate(ls.rows(np.array([a]))[0], ls.rows(np.array([b]))[0], 8, m,
                                                  ctx.mean, ctx.scale)) for m in ("linear", "spherical")}
    plot_strip(strip, out / "interpolation.png", title=f"row {a} -> row {b}")
    atomic_results(out, results)
    print(markdown(results))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import tables_from_markdown, write_result

    name = args.result or "generate-" + Path(args.latents).name.removesuffix("-latents")
    write_result(name, json.loads(json.dumps(results, default=float)), task="generation", notes=args.notes,
                 tables=tables_from_markdown(markdown(results), Path(args.latents).name))
    return results


def _cnn_key(ls, args) -> str:
    return f"{ls.manifest['latent_checksum']}-{args.seed}-{args.cnn_steps}"


def load_feature_net(out: Path, ls, args):
    """The feature CNN of an earlier run on the same latents and settings (so methods benchmarked
    in separate runs share it), or None."""
    from funcml.io import load_tensors, read_json
    from funcml.tasks.generate.features import SignalCNN

    meta_path, weights = out / "feature_cnn.json", out / "feature_cnn.safetensors"
    if not (meta_path.is_file() and weights.is_file()):
        return None
    meta = read_json(meta_path)
    if meta.get("key") != _cnn_key(ls, args):
        return None
    net = SignalCNN(**meta["arch"])
    net.load_state_dict(load_tensors(weights))
    return net.eval(), meta["info"]


def save_feature_net(out: Path, ctx, args) -> None:
    from funcml.io import atomic_write_json, save_tensors

    net = ctx.net
    conv = net.body[0]
    arch = {"dim": conv.weight.dim() - 2, "channels": conv.in_channels, "n_outputs": net.head.out_features,
            "width": conv.out_channels, "feature_dim": net.head.in_features}
    save_tensors(out / "feature_cnn.safetensors", net.state_dict())
    atomic_write_json(out / "feature_cnn.json", {"key": _cnn_key(ctx.latent_set, args), "arch": arch,
                                                 "info": ctx.net_info})


def _row(report: dict) -> dict:
    g = report["sets"]["generated"]
    row = {k: g.get(k) for k in ("fd", "fd_std", "precision", "recall", "label_agreement")}
    row["memorisation_ratio"] = g["memorisation_latent"]["ratio"]
    row["cas"] = None if report["cas"] is None else report["cas"]["generated"]["accuracy"]
    row["cas_balanced"] = None if report["cas"] is None else report["cas"]["generated"]["balanced_accuracy"]
    return row


def atomic_results(out: Path, results: dict) -> None:
    from funcml.io import atomic_write_json

    atomic_write_json(out / "results.json", json.loads(json.dumps(results, default=float).replace("NaN", "null")))


def markdown(results: dict) -> str:
    def f(v, d=3):
        return "–" if v is None else f"{v:.{d}f}"

    lines = ["| set | FD ↓ | precision ↑ | recall ↑ | label agreement ↑ | NN-dist ratio (latent) | "
             "copies (< p5 held-out) | CAS acc | CAS bal. acc |", "|---|---|---|---|---|---|---|---|---|"]
    first = next(iter(results["methods"].values()))["report"]
    cas = first["cas"] or {}
    for name, r in first["sets"].items():
        if name.startswith("held_out"):
            c = cas.get("real", {}) if name == "held_out_real" or ("held_out_real" not in first["sets"]) else {}
            lines.append(f"| {name.replace('_', ' ')} | {f(r['fd'])} | {f(r['precision'])} | {f(r['recall'])} | "
                         f"{f(r.get('label_agreement'))} | – | – | {f(c.get('accuracy'))} | "
                         f"{f(c.get('balanced_accuracy'))} |")
    rows = [(m, e["report"]) for m, e in results["methods"].items()]
    rows.append(("gaussian (floor)", first))
    for name, rep in rows:
        key = "gaussian" if name.startswith("gaussian") else "generated"
        r = rep["sets"][key]
        c = (rep["cas"] or {}).get(key) or {}
        mem = r["memorisation_latent"]
        lines.append(f"| {name} | {f(r['fd'])} ± {f(r['fd_std'])} | {f(r['precision'])} | {f(r['recall'])} | "
                     f"{f(r.get('label_agreement'))} | {f(mem['ratio'], 2)} | {f(mem['fraction_closer'], 2)} | "
                     f"{f(c.get('accuracy'))} | {f(c.get('balanced_accuracy'))} |")
    for m, e in results["methods"].items():
        lines += ["", f"{m}: fit {e['fit_seconds']:.0f} s ({e['params']} parameters), sampler steps:",
                  "| steps | s / 1000 samples | FD | precision | recall | CAS |", "|---|---|---|---|---|---|"]
        for s, r in e["sample_steps"].items():
            lines.append(f"| {s} | {r['seconds_per_1000']:.1f} | {f(r['fd'])} | {f(r['precision'])} | "
                         f"{f(r['recall'])} | {f(r['cas'])} |")
        if e["guidance"]:
            lines += ["", f"{m}: guidance", "| w | FD | precision | recall | label agreement | CAS | CAS bal. |",
                      "|---|---|---|---|---|---|---|"]
            for w, r in e["guidance"].items():
                lines.append(f"| {w} | {f(r['fd'])} | {f(r['precision'])} | {f(r['recall'])} | "
                             f"{f(r['label_agreement'])} | {f(r['cas'])} | {f(r['cas_balanced'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
