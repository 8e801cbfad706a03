"""Demo stages for querying fields: rendering at 2x, super-resolution 14 -> 28 and imputation.

The embedded BreastMNIST data has no higher-resolution copy, so the super-resolution stage makes
its own real pair: the test images are area-downsampled to 14 x 14, encoded, rendered at 28 x 28
and compared with the real 28 x 28 images, next to bicubic interpolation of the same 14 x 14 inputs.
Both stages also train a query head self-supervised on training images (downsampled 2x, or with
random pixels hidden) for :data:`HEAD_SECONDS` and report it beside the field and the baselines.
"""

from __future__ import annotations

import time

import numpy as np

from funcml.demo.context import DemoContext

HEAD_SECONDS = 30  # wall time of each demo head (quick: 20 steps)


def _test_rows(ctx: DemoContext, n: int) -> np.ndarray:
    idx = ctx.signals.indices("test")
    return (idx if len(idx) else ctx.signals.indices())[:n]


def _train_rows(ctx: DemoContext, n: int) -> np.ndarray:
    idx = ctx.signals.indices("train")
    return (idx if len(idx) else ctx.signals.indices())[:n]


def _demo_head(ctx: DemoContext, task: str, make_pairs, grid) -> object:
    """A small query head for ``task`` trained on the pairs ``make_pairs(model, x_train)`` builds."""
    from funcml.query.estimator import QueryRegressor

    pairs = make_pairs(ctx.model, ctx.signals.get(_train_rows(ctx, 64 if ctx.quick else 128)))
    head = QueryRegressor(task, steps=20 if ctx.quick else 2000, max_minutes=None if ctx.quick else HEAD_SECONDS / 60,
                          batch_size=8, coords_per_signal=256, lr=2e-3, progress=False)
    return head.fit(ctx.model, pairs, grid=grid)


def render_stage(ctx: DemoContext) -> dict:
    """Render test latents at twice the resolution and in a 4x zoomed window."""
    import torch

    from funcml.query.figures import plot_method_grid
    from funcml.query.render import render_latents

    t0 = time.perf_counter()
    rows = ctx.latent_set.split_indices("test")[:6]
    z = torch.from_numpy(ctx.latent_set.rows(rows)).to(ctx.model.device)
    field = tuple(ctx.latent_set.signal_shape[1:])
    double = tuple(2 * s for s in field)
    x2 = render_latents(ctx.model.net, z, field, double).cpu().numpy()
    zoom = render_latents(ctx.model.net, z, field, field, roi=[(0.25, 0.75)]).cpu().numpy()
    native = render_latents(ctx.model.net, z, field, field).cpu().numpy()
    plot_method_grid({f"{field[0]}x{field[1]}": native, f"{double[0]}x{double[1]}": x2, "zoom 2x (centre)": zoom},
                     ctx.out / "render.png")
    ctx.log(f"      render: {len(rows)} fields at {double} and a zoomed window -> render.png")
    return {"rendered": int(len(rows)), "grid": list(double), "figure": "render.png",
            "seconds": time.perf_counter() - t0}


def superres_stage(ctx: DemoContext) -> dict:
    """Super-resolution 14 -> 28 on the test split against bicubic interpolation."""
    from funcml.data.base import ArraySignalSet
    from funcml.data.transforms import resize_signals
    from funcml.query.figures import plot_method_grid
    from funcml.query.pairs import downsampled_pairs
    from funcml.query.superres import superres_evaluate

    t0 = time.perf_counter()
    rows = _test_rows(ctx, 24 if ctx.quick else 64)
    high_x = ctx.signals.get(rows)
    spatial = high_x.shape[2:]
    low_x = resize_signals(high_x, tuple(s // 2 for s in spatial))
    common = dict(splits=np.full(len(rows), 2, np.uint8), labels=None, task="none", label_names=None)
    low = ArraySignalSet(low_x, name="demo-low", spec="demo (downsampled 2x)", fingerprint="demo-low", **common)
    high = ArraySignalSet(high_x, name="demo", spec="demo", fingerprint="demo-high", **common)
    head = _demo_head(ctx, "superres", lambda m, x: downsampled_pairs(m, x, scales=(2.0, 2.0), repeats=1,
                                                                      progress=False), low_x.shape[2:])
    metrics, ex = superres_evaluate(ctx.model, low, high, split="test", progress=False, heads={"funcml_head": head})
    plot_method_grid({"14x14 input": ex["low"], "bicubic": ex["bicubic"], "funcml": ex["funcml"],
                      "query head": ex["funcml_head"], "28x28 truth": ex["high"]}, ctx.out / "superres.png")
    m = {k: f"{metrics[k]['psnr']:.2f} dB / SSIM {metrics[k]['ssim']:.3f}" for k in ("funcml", "funcml_head", "bicubic")}
    ctx.log(f"      superres 14->28: funcml {m['funcml']}, query head {m['funcml_head']} "
            f"({head.record_['steps']} steps, self-supervised), bicubic {m['bicubic']} -> superres.png")
    keep = ("count", "funcml", "funcml_head", "bicubic", "bilinear", "nearest", "gain_over_classic",
            "low_reconstruction_psnr")
    return {**{k: metrics[k] for k in keep}, "figure": "superres.png", "seconds": time.perf_counter() - t0}


def impute_stage(ctx: DemoContext) -> dict:
    """Fit half of the pixels (random), render the whole image, score the hidden half."""
    from funcml.data.base import ArraySignalSet
    from funcml.query.figures import plot_method_grid
    from funcml.query.impute import impute_evaluate
    from funcml.query.observed import parse_observed
    from funcml.query.pairs import masked_pairs, parse_hide

    t0 = time.perf_counter()
    rows = _test_rows(ctx, 24 if ctx.quick else 48)
    x = ctx.signals.get(rows)
    data = ArraySignalSet(x, name="demo", spec="demo", splits=np.full(len(rows), 2, np.uint8), labels=None,
                          task="none", label_names=None, fingerprint="demo-test")
    masks = parse_observed("random:0.5", data.spatial_shape, len(data))
    hide = parse_hide("random:0.3-0.7")
    head = _demo_head(ctx, "impute", lambda m, x: masked_pairs(m, x, hide=hide, repeats=1, progress=False), None)
    metrics, ex = impute_evaluate(ctx.model, data, masks, split="test", baselines=("linear", "biharmonic"),
                                  progress=False, heads={"funcml_head": head})
    plot_method_grid({"observed": ex["observed"], "funcml": ex["funcml"], "query head": ex["funcml_head"],
                      "biharmonic": ex["biharmonic"], "truth": ex["truth"]}, ctx.out / "impute.png", masks=ex["_mask"],
                     masked_rows=("observed",))
    ctx.log(f"      impute (50% random pixels hidden): funcml {metrics['funcml']['psnr_hidden']:.2f} dB, "
            f"query head {metrics['funcml_head']['psnr_hidden']:.2f} dB ({head.record_['steps']} steps), "
            f"biharmonic {metrics['biharmonic']['psnr_hidden']:.2f} dB on the hidden pixels -> impute.png")
    keep = ("count", "hidden_fraction", "funcml", "funcml_head", "linear", "biharmonic")
    return {**{k: metrics[k] for k in keep}, "figure": "impute.png", "seconds": time.perf_counter() - t0}
