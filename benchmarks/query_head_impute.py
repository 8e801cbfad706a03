"""Imputation BreastMNIST 28, half of the pixels hidden at random: the learned query head next to inpainting.

The head learns self-supervised from the 546 training images, each hidden ``--repeats`` times by
a random mask of ``--hide`` (no test mask is seen); the test images are hidden by ``random:0.5``
(as ``funcml impute --observed random:0.5``) and every method is scored on the hidden pixels:
the plain field fitted to the observed pixels (funcml), the head reading everything, the head
without observed samples (field and latent only), nearest / linear interpolation and biharmonic
inpainting. Each head trains for ``--minutes`` of CPU time on one thread.
Run: ``python benchmarks/query_head_impute.py --model MODEL [--minutes 6]``.
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
from funcml.query.figures import plot_method_grid  # noqa: E402
from funcml.query.impute import impute_evaluate  # noqa: E402
from funcml.query.observed import parse_observed  # noqa: E402
from funcml.query.pairs import masked_pairs, parse_hide  # noqa: E402

HEADS = {"funcml_head": "features,latent,observed", "head_field_only": "features,latent"}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="field model of breastmnist.npz (funcml train)")
    p.add_argument("--minutes", type=float, default=6.0, help="CPU minutes (one thread) of each head")
    p.add_argument("--hide", default="random:0.3-0.7", help="training masks (funcml impute train --hide)")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--share-masks", type=int, default=16, help="training signals per mask (1: a mask per signal)")
    p.add_argument("--observed", default="random:0.5", help="test masks (funcml impute --observed)")
    p.add_argument("--figure", default="docs/figures/query-head-impute-breastmnist.png")
    p.add_argument("--name", default="query_head_impute_breastmnist")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(1)
    signals = load_signals(str(shared_data() / "medmnist" / "breastmnist.npz"), LoadOptions())
    model = FieldModel.load(args.model)
    kinds = parse_hide(args.hide)
    tr, va = signals.indices("train"), signals.indices("val")
    t0 = time.perf_counter()
    pairs = masked_pairs(model, signals.get(tr), hide=kinds, repeats=args.repeats, share=args.share_masks,
                         progress=False)
    val = masked_pairs(model, signals.get(va), hide=kinds, repeats=1, seed=1, share=args.share_masks, progress=False)
    record = {"encode_seconds": time.perf_counter() - t0, "pairs": len(pairs), "share_masks": args.share_masks}
    heads = {name: budget_head("impute", inputs, args.minutes).fit(model, pairs, val=val, log=print)
             for name, inputs in HEADS.items()}
    record.update({name: {**fit_record(est), "inputs": HEADS[name]} for name, est in heads.items()})
    masks = parse_observed(args.observed, signals.spatial_shape, len(signals), seed=0)
    metrics, ex = impute_evaluate(model, signals, masks, split="test", heads=heads, progress=False, log=print)
    names = ("nearest", "linear", "biharmonic", "funcml", *heads)
    rows = [[m, round(metrics[m]["psnr_hidden"], 2), round(metrics[m]["psnr_all"], 2),
             round(metrics[m]["ssim_all"], 3), record.get(m, {}).get("steps"),
             round(record[m]["cpu_seconds"]) if m in record else None] for m in names]
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    plot_method_grid({"observed": ex["observed"], "biharmonic": ex["biharmonic"], "funcml (field)": ex["funcml"],
                      "query head": ex["funcml_head"], "truth": ex["truth"]}, args.figure, masks=ex["_mask"],
                     masked_rows=("observed",), max_items=6,
                     title=f"BreastMNIST 28, {args.observed} hidden (red): hidden-pixel PSNR head "
                           f"{metrics['funcml_head']['psnr_hidden']:.2f} dB, biharmonic "
                           f"{metrics['biharmonic']['psnr_hidden']:.2f} dB")
    write_result(args.name, {"metrics": metrics, "training": record, "minutes": args.minutes, "hide": args.hide,
                             "model": model_record(model), "figure": args.figure},
                 task="query", tables=[table(
                     f"Imputation BreastMNIST 28, {args.observed} hidden (test split, 156 images)",
                     ["method", "PSNR hidden pixels (dB)", "PSNR whole image (dB)", "SSIM whole image", "training steps",
                      "training CPU s"], rows,
                     caption=f"heads trained self-supervised on masks {args.hide} of the training images, "
                             f"{args.minutes} CPU minutes each on one thread")],
                 notes="2 cores shared with other jobs; budgets in process CPU time, one torch thread")


if __name__ == "__main__":
    main()
