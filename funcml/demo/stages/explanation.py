"""The ``explanation`` stage of ``funcml demo``: explain the demo's MLP classifier.

It reads the classifier the ``classification`` stage wrote to ``ctx.out / "classifier"`` and
explains 4 test images (2 with --quick) with integrated gradients, in latent space and through the
differentiable encoder (H reduced to 5 steps to keep the stage within ~30 s on 2 cores), writing
``ctx.out / "explanation"`` (what ``funcml explain --out`` writes).
"""

from __future__ import annotations

from funcml.demo.context import DemoContext


def explanation_stage(ctx: DemoContext) -> dict:
    import numpy as np

    from funcml.tasks.classify import load_classifier
    from funcml.tasks.explain.run import ExplainConfig, explain_latent_set, write_outputs

    clf_dir = ctx.out / "classifier"
    if not (clf_dir / "classifier.json").is_file():
        return {"skipped": "no classifier (the classification stage did not run)"}
    classifier = load_classifier(clf_dir)
    test = ctx.latent_set.split_indices("test")
    rows = (test if len(test) else np.arange(len(ctx.latent_set)))[:2 if ctx.quick else 4]
    cfg = ExplainConfig(method="ig", ig_steps=8, encode_steps=5, signal_curve_points=5, signal_random_orders=1,
                        curve_points=11, random_orders=3)
    result = explain_latent_set(ctx.latent_set, classifier, model=ctx.model, signals=ctx.signals, rows=rows,
                                config=cfg)
    write_outputs(result, ctx.out / "explanation", overwrite=True)
    rep = result.report
    out: dict = {"rows": len(rows), "encode_steps": rep["signal"]["encode_steps"]}
    for space in ("latent", "signal"):
        s = rep[space]
        out[space] = {"deletion_auc": s["quality"]["deletion"]["auc"],
                      "deletion_auc_random": s["quality"]["deletion"]["auc_random"],
                      "insertion_auc": s["quality"]["insertion"]["auc"],
                      "insertion_auc_random": s["quality"]["insertion"]["auc_random"],
                      "randomisation_spearman_abs": s["randomisation"]["full"]["spearman_abs"],
                      "seconds": s["seconds"]}
    out["counterfactual_flipped"] = rep["counterfactual"].get("flipped")
    ctx.log(f"      explanation: signal-space deletion AUC {out['signal']['deletion_auc']:.3f} "
            f"(random {out['signal']['deletion_auc_random']:.3f}), randomisation Spearman "
            f"{out['signal']['randomisation_spearman_abs']:.2f} ({out['signal']['seconds']:.1f} s)")
    return out
