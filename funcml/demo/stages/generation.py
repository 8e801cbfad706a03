"""The ``generate`` stage of ``funcml demo``: a small flow-matching generator on the demo latents,
a sample grid, an interpolation strip and the evaluation against the ceiling and the floor."""

from __future__ import annotations

import time

import numpy as np

from funcml.demo.context import DemoContext


def generate_stage(ctx: DemoContext) -> dict:
    from funcml.tasks.generate.evaluate import decode_latents, evaluate_generator, plot_comparison, single_labels
    from funcml.tasks.generate.generator import LatentGenerator
    from funcml.tasks.generate.interpolation import interpolate, plot_strip

    t0 = time.perf_counter()
    ls = ctx.latent_set
    train_rows = ls.split_indices("train")
    x, y = ls.rows(train_rows), single_labels(ls, train_rows)
    steps = 60 if ctx.quick else 400
    gen = LatentGenerator(method="flow", steps=steps, sample_steps=8 if ctx.quick else 20,
                          device=str(ctx.device)).fit(x, y)
    fit_seconds = time.perf_counter() - t0
    ctx.log(f"      generator: {steps} flow-matching steps in {fit_seconds:.0f} s")
    z, labels = gen.sample(16, labels=None if y is None else np.repeat(gen.classes_, 8)[:16], seed=0)
    plot_comparison({"generated": (decode_latents(ctx.model, z), labels)}, ctx.out / "generated_samples.png",
                    ls.label_names)
    test = ls.split_indices("test")
    a, b = ls.rows(test[:1])[0], ls.rows(test[1:2])[0]
    strip = {m: decode_latents(ctx.model, interpolate(a, b, 8, m, gen.mean_, gen.scale_))
             for m in ("linear", "spherical")}
    plot_strip(strip, ctx.out / "interpolation.png")
    report, sets = evaluate_generator(gen, ls, ctx.model, signals=ctx.signals, repeats=1,
                                      cnn_steps=30 if ctx.quick else 120, device=ctx.device, log=lambda m: None)
    plot_comparison(sets, ctx.out / "generation_comparison.png", ls.label_names)
    s = report["sets"]
    out = {"method": "flow", "steps": steps, "fit_seconds": fit_seconds,
           "fd": {k: v["fd"] for k, v in s.items()},
           "precision": {k: v["precision"] for k, v in s.items()},
           "recall": {k: v["recall"] for k, v in s.items()},
           "memorisation_ratio": s["generated"]["memorisation_latent"]["ratio"],
           "cas": None if report["cas"] is None else {k: report["cas"][k]["accuracy"]
                                                      for k in ("real", "generated", "gaussian")},
           "figures": ["generated_samples.png", "interpolation.png", "generation_comparison.png"],
           "seconds": time.perf_counter() - t0}
    fd = out["fd"]
    held = fd.get("held_out_real", float("nan"))
    ctx.log(f"      generation: FD generated {fd['generated']:.2f} (held-out {held:.2f}, "
            f"gaussian {fd['gaussian']:.2f}); CAS {out['cas']} ({out['seconds']:.0f} s)")
    return out
