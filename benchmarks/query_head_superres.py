"""Super-resolution BreastMNIST 28 -> 64 with the learned query head, next to interpolation and a pixel CNN.

Every learned method trains for the same compute (``--minutes`` of the process's CPU time on one
thread, so that other jobs on a shared machine do not change the budget) on the same training pairs and
is scored on the 156 test images (PSNR, SSIM against the real 64x64 images):

* real pairs: the query head reading everything (field features, latent, observed samples), the
  head without observed samples (field and latent only; with ``--ablation`` also the head without
  the field, observed samples only), and the residual CNN on the bicubic-upsampled input (SRCNN/VDSR style);
* self-supervised (no 64x64 data): the head and the CNN trained on the 28x28 training images
  downsampled by random factors in ``--scales``, asked for the 28x28 originals.

The field model is a ``funcml train`` model of breastmnist.npz (the command is in docs/querying.md).
Run: ``python benchmarks/query_head_superres.py --model MODEL [--minutes 3]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_bench import budget_head, fit_record, model_record  # noqa: E402
from results import shared_data, table, write_result  # noqa: E402

from funcml.data import LoadOptions, load_signals  # noqa: E402
from funcml.encoders.model import FieldModel  # noqa: E402
from funcml.query.figures import plot_zoom_grid  # noqa: E402
from funcml.query.pairs import downsampled_inputs, downsampled_pairs, paired_pairs  # noqa: E402
from funcml.query.pixel_sr import PixelSR  # noqa: E402
from funcml.query.superres import superres_evaluate  # noqa: E402

HEADS = {  # name -> head inputs
    "funcml_head": "features,latent,observed",
    "head_field_only": "features,latent",
}
ABLATION = {"head_observed_only": "observed"}  # with --ablation: the head without the field


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="field model of breastmnist.npz (funcml train)")
    p.add_argument("--minutes", type=float, default=6.0, help="CPU minutes (one thread) of each learned method")
    p.add_argument("--scales", default="1.5-4")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--ablation", action="store_true", help="also train the head on observed samples only")
    p.add_argument("--figure", default="docs/figures/query-head-superres-breastmnist.png")
    p.add_argument("--name", default="query_head_superres_breastmnist")
    return p.parse_args(argv)


def train_heads(model, low, high, args) -> tuple[dict, dict]:
    """Every head of HEADS on real pairs, the full head self-supervised; ``(heads, record)``."""
    tr, va = low.indices("train"), low.indices("val")
    t0 = time.perf_counter()
    real = paired_pairs(model, low.get(tr), high.get(tr), progress=False)
    real_val = paired_pairs(model, low.get(va), high.get(va), progress=False)
    scales = tuple(float(s) for s in args.scales.split("-"))
    selfsup = downsampled_pairs(model, low.get(tr), scales=scales, repeats=args.repeats, progress=False)
    selfsup_val = downsampled_pairs(model, low.get(va), scales=scales, repeats=1, seed=1, progress=False)
    record = {"encode_seconds": time.perf_counter() - t0, "real_pairs": len(real), "selfsup_pairs": len(selfsup)}
    heads = {}
    for name, inputs in {**HEADS, **(ABLATION if args.ablation else {})}.items():
        heads[name] = budget_head("superres", inputs, args.minutes).fit(model, real, grid=low.spatial_shape, val=real_val, log=print)
    heads["funcml_head_selfsup"] = budget_head("superres", HEADS["funcml_head"], args.minutes).fit(
        model, selfsup, grid=low.spatial_shape, val=selfsup_val, log=print)
    for name, est in heads.items():
        record[name] = {**fit_record(est), "inputs": {**HEADS, **ABLATION}.get(name, HEADS["funcml_head"])}
        print(name, record[name], flush=True)
    return heads, record


def train_cnns(low, high, args) -> tuple[dict, dict]:
    """The residual CNN on real pairs and self-supervised, same wall time."""
    tr = low.indices("train")
    x28, x64 = low.get(tr), high.get(tr)
    real = PixelSR(steps=10 ** 6, max_minutes=args.minutes, clock="process", progress=False).fit(x28, x64)
    scales = tuple(float(s) for s in args.scales.split("-"))
    groups = downsampled_inputs(x28, scales, args.repeats, seed=0)
    selfsup = PixelSR(steps=10 ** 6, max_minutes=args.minutes, clock="process", progress=False).fit(
        [g for _, g in groups], x28, rows=[r for r, _ in groups])
    cnns = {"cnn": real, "cnn_selfsup": selfsup}
    return cnns, {k: fit_record(v) for k, v in cnns.items()}


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(1)
    data = shared_data() / "medmnist"
    low = load_signals(str(data / "breastmnist.npz"), LoadOptions())
    high = load_signals(str(data / "breastmnist_64.npz"), LoadOptions())
    model = FieldModel.load(args.model)
    heads, record = train_heads(model, low, high, args)
    cnns, cnn_record = train_cnns(low, high, args)
    out_shape = high.spatial_shape
    extra = {k: (lambda x, est=v: est.predict(x, out_shape)) for k, v in cnns.items()}
    metrics, examples = superres_evaluate(model, low, high, split="test", heads=heads, extra=extra, progress=False,
                                          log=print)
    train = {**record, **cnn_record}
    rows = [[m, round(metrics[m]["psnr"], 2), round(metrics[m]["ssim"], 3), train.get(m, {}).get("steps"),
             round(train[m]["cpu_seconds"]) if m in train else None]
            for m in ("nearest", "bilinear", "bicubic", "funcml", "funcml_fit_bicubic", *heads, *cnns)]
    figure(examples, args.figure)
    write_result(args.name, {"metrics": metrics, "training": {**record, **cnn_record}, "minutes": args.minutes,
                             "model": model_record(model), "figure": args.figure},
                 task="query", tables=[table(
                     "Super-resolution BreastMNIST 28 -> 64 (test split, 156 images)",
                     ["method", "PSNR (dB)", "SSIM", "training steps", "training CPU s"], rows,
                     caption=f"every learned method trained for {args.minutes} CPU minutes on one thread; "
                             f"_selfsup: trained without 64x64 data")],
                 notes="2 cores shared with other jobs; budgets in process CPU time, one torch thread")


def figure(examples: dict, path: str) -> None:
    cols = {"28x28 input": examples["low"], "bicubic": examples["bicubic"], "funcml (field)": examples["funcml"],
            "query head": examples["funcml_head"], "head, self-sup.": examples["funcml_head_selfsup"],
            "residual CNN": examples["cnn"], "64x64 truth": examples["high"]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    plot_zoom_grid(cols, path, crop=(0.35, 0.65, 0.35, 0.65), max_items=3,
                   title="BreastMNIST 28 -> 64, test images (yellow box: zoomed below)")


if __name__ == "__main__":
    main()
