"""``funcml classify``: train a classifier on a latent set and report its test metrics."""

from __future__ import annotations

import click

from funcml.cli.common import device_option, emit_json, info, json_option, overwrite_option

MODELS = ("mlp", "xgboost", "logreg", "svm", "knn", "gnn", "fusion")


def format_metrics(name: str, m: dict) -> list[str]:
    """Human-readable lines: the headline metrics, then per-class sensitivity and precision."""
    def f(v):
        return "  n/a" if v is None or v != v else f"{v:.4f}"

    lines = [f"{name}: accuracy {f(m['accuracy'])}  AUC {f(m['auc'])}  macro-F1 {f(m['macro_f1'])}  "
             f"balanced accuracy {f(m['balanced_accuracy'])}  (n={m['count']})"]
    if "mae" in m:
        lines.append(f"      ordinal: MAE {f(m['mae'])}  quadratic kappa {f(m['qwk'])}")
    for cname, c in m["per_class"].items():
        lines.append(f"      {cname[:24]:>24}: sensitivity (Se) {f(c['sensitivity'])}  precision (+P) "
                     f"{f(c['precision'])}  F1 {f(c['f1'])}  support {c['support']}")
    if "j_index" in m:
        lines.append(f"      AAMI j-index (Se_S + +P_S + Se_V + +P_V, at most 4): {f(m['j_index'])}")
    return lines


@click.command("classify")
@click.option("--latents", "latents", required=True, type=click.Path(), help="Latent set with labels (from `funcml encode`).")
@click.option("--model", type=click.Choice(MODELS), default="mlp", show_default=True,
              help="Classifier (fusion: logistic regression on the auxiliary features, e.g. rr, fused with XGBoost "
                   "on all the features).")
@click.option("--out", default=None, type=click.Path(),
              help="Classifier directory: classifier.json + safetensors, predictions.csv, metrics.json, figures.")
@click.option("--test-latents", default=None, type=click.Path(),
              help="Report on this latent set (same field model) instead of the test split, e.g. other patients.")
@click.option("--test-split", type=click.Choice(["all", "train", "val", "test"]), default="all", show_default=True,
              help="Rows of --test-latents to report on.")
@click.option("--preset", default=None, help="Named parameters: 'paper' = the paper's MLP 2048-1024-512, dropout 0.3.")
@click.option("--param", "param", multiple=True, metavar="KEY=VALUE",
              help="Fix a hyper-parameter, e.g. C=0.1, n_neighbors=1, hidden_layer_sizes=256,128 (repeatable).")
@click.option("--search/--no-search", default=True, show_default=True,
              help="Search a small hyper-parameter grid on the validation split.")
@click.option("--select-metric", type=click.Choice(["auto", "accuracy", "auc", "macro_f1", "balanced_accuracy", "loss"]),
              default="auto", show_default=True, help="Validation metric of the search (auto: AUC for binary and "
              "multi-label tasks, macro-F1 otherwise).")
@click.option("--class-weight", type=click.Choice(["none", "balanced"]), default="none", show_default=True,
              help="Re-weight classes by inverse frequency (imbalanced data such as MIT-BIH beats).")
@click.option("--features", default="latent", show_default=True, metavar="GROUPS",
              help="Inputs of the classifier: latent, rr (a beat's RR-interval features, stored by `funcml encode` "
                   "of WFDB beats), qrs (its QRS width and area against the record's median beat, stored the "
                   "same way), latent_rec (the latents minus their record's median latent; needs RR "
                   "features) or a combination such as latent,rr or latent_rec,rr,qrs.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_option
@device_option
@json_option
def classify_command(latents, model, out, test_latents, test_split, preset, param, search, select_metric,
                     class_weight, features, seed, overwrite, device, as_json):
    """Train a classifier on the latent vectors of LATENTS (train split), select it on the val split,
    and report accuracy, AUC (as MedMNIST defines them), macro-F1, balanced accuracy and per-class
    sensitivity/precision/F1 on the test split (or on --test-latents); for heartbeats (AAMI classes)
    also the j-index."""
    from pathlib import Path

    from funcml.devices import resolve_device
    from funcml.errors import OutputExistsError
    from funcml.latents import LatentSet
    from funcml.tasks.classify.run import classify_latent_set, parse_param, write_outputs

    if out and Path(out).exists() and not overwrite:
        raise OutputExistsError(f"output path exists: {out} (pass --overwrite to replace it)")
    latent_set = LatentSet.open(latents)
    other = LatentSet.open(test_latents) if test_latents else None
    params = dict(parse_param(p) for p in param)
    dev = str(resolve_device(device)) if device != "cpu" else "cpu"
    info(f"classify {latent_set.path} ({len(latent_set)} latents, P={latent_set.latent_dim}, task "
         f"{latent_set.task!r}) with {model} on {dev}, features {features}")
    result = classify_latent_set(latent_set, model, test_latents=other, test_split=test_split, params=params,
                                 preset=preset, search=search, select_metric=select_metric,
                                 class_weight=None if class_weight == "none" else class_weight, device=dev, seed=seed,
                                 features=features, log=info)
    report = result.report
    chosen = report["selected"] if len(report["search"]) > 1 else "no search"
    info(f"selected {chosen} by val {report['select_metric']}; fit {report['fit_seconds']:.2f} s "
         f"(all candidates {report['search_seconds']:.2f} s)")
    for name in ("val", "test"):
        if name in report:
            for line in format_metrics(name if name == "val" else f"test ({report['eval_set']})", report[name]):
                info(line)
    if out:
        files = write_outputs(result, out, latent_set, overwrite=overwrite)
        report = {**report, "files": files}
        info(f"classifier, predictions and figures -> {out}")
    if as_json:
        emit_json(report)


def register(cli: click.Group) -> None:
    cli.add_command(classify_command)
