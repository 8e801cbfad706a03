"""The ``classification`` stage of ``funcml demo``: classifiers on the demo's latents.

The MLP is written to ``ctx.out / "classifier"`` (a full ``funcml classify --out`` directory, so
later stages can explain it); logistic regression and k-NN are reported beside it.
"""

from __future__ import annotations

from funcml.demo.context import DemoContext


def classification_stage(ctx: DemoContext) -> dict:
    from funcml.tasks.classify.run import classify_latent_set, write_outputs

    device = str(ctx.device)
    runs = {"mlp": {"params": {"max_epochs": 40} if ctx.quick else {}},
            "logreg": {"search": not ctx.quick},
            "knn": {"search": not ctx.quick}}
    report: dict = {}
    for name, opts in runs.items():
        result = classify_latent_set(ctx.latent_set, name, params=opts.get("params"), search=opts.get("search", True),
                                     device=device)
        test = result.report["test"]
        report[name] = {"accuracy": test["accuracy"], "auc": test["auc"], "macro_f1": test["macro_f1"],
                        "balanced_accuracy": test["balanced_accuracy"], "fit_seconds": result.report["fit_seconds"],
                        "search_seconds": result.report["search_seconds"]}
        ctx.log(f"      classification {name:>6}: test accuracy {test['accuracy']:.3f}, AUC {test['auc']:.3f} "
                f"({result.report['search_seconds']:.1f} s)")
        if name == "mlp":
            files = write_outputs(result, ctx.out / "classifier", ctx.latent_set, overwrite=True)
            report["classifier"] = files["classifier"]
    return report
