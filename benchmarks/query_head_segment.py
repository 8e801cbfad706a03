"""Segmentation with the shared query head (class logits) against a pixel U-Net at equal compute.

On the test split of a segmentation folder (Kvasir-SEG, ISBI 2012) at ``--resolution``:

* ``funcml_head``: the query head reading the field's features, the latent and the image samples
  around each position with the features of a U-Net encoder of the image, ``--head-minutes`` of CPU time;
* ``head_conv_encoder``: the same with a dilated convolutional encoder of the image instead of the U-Net;
* ``head_field_only``: the head reading the field and the latent only (no image samples);
* ``unet_equal_time``: the U-Net trained for the CPU time of the field model (``--field-cpu-seconds``,
  measured when it was trained) plus the head;
* ``unet_converged``: the U-Net trained for ``--unet-epochs`` epochs.

All budgets are process CPU time on one thread (the field model's: its training command's user
time). Run: ``python benchmarks/query_head_segment.py --data DIR --model MODEL --latents LATENTS
--field-cpu-seconds S --name NAME``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_bench import fit_record, model_record  # noqa: E402
from results import table, write_result  # noqa: E402

from funcml.data import LoadOptions, load_signals  # noqa: E402
from funcml.encoders.model import FieldModel  # noqa: E402
from funcml.latents import LatentSet  # noqa: E402
from funcml.query.figures import plot_overlays  # noqa: E402
from funcml.tasks.segment.data import class_count, class_names, latents_from_set  # noqa: E402
from funcml.tasks.segment.metrics import segmentation_report  # noqa: E402
from funcml.tasks.segment.segmenter import QuerySegmenter  # noqa: E402
from funcml.tasks.segment.unet import UNetSegmenter  # noqa: E402

# name -> the head's architecture (:class:`funcml.query.head.QueryHeadConfig` fields)
HEADS = {"funcml_head": {"inputs": "features,latent,observed", "encoder": "unet", "encoder_width": 16,
                         "encoder_depth": 3},
         "head_conv_encoder": {"inputs": "features,latent,observed", "encoder_width": 32, "encoder_depth": 5,
                               "encoder_dilation": 2},
         "head_field_only": {"inputs": "features,latent"}}


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--latents", required=True, help="latent set of --data encoded with --model")
    p.add_argument("--field-cpu-seconds", type=float, required=True, help="CPU time the field model took to train")
    p.add_argument("--head-minutes", type=float, default=6.0)
    p.add_argument("--unet-epochs", type=int, default=30)
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--name", required=True)
    p.add_argument("--figure", default=None)
    return p.parse_args(argv)


def train_heads(model, z, x, masks, k, names, args) -> dict:
    heads = {}
    for name, arch in HEADS.items():
        est = QuerySegmenter(**arch, neighbours=3, steps=10 ** 6, coords_per_signal=512, max_minutes=args.head_minutes,
                             clock="process", progress=False)
        heads[name] = est.fit(model, z, masks, signals=x if "observed" in arch["inputs"] else None, n_classes=k,
                              class_names=names)
        print(name, fit_record(est), flush=True)
    return heads


def train_unets(x, masks, k, budget_s, args) -> dict:
    equal = UNetSegmenter(epochs=10 ** 4, max_minutes=budget_s / 60, clock="process", progress=False).fit(x, masks, k)
    converged = UNetSegmenter(epochs=args.unet_epochs, progress=False).fit(x, masks, k)
    return {"unet_equal_time": equal, "unet_converged": converged}


def _round(v, digits: int):
    return None if v is None else round(v, digits)


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(1)
    grid = (args.resolution, args.resolution)
    signals = load_signals(args.data, LoadOptions(resolution=grid))
    model = FieldModel.load(args.model)
    tr, te = signals.indices("train"), signals.indices("test")
    lat = LatentSet.open(args.latents)
    z_tr, z_te = latents_from_set(lat, signals, tr, model), latents_from_set(lat, signals, te, model)
    x_tr, m_tr, x_te, m_te = signals.get(tr), signals.get_masks(tr), signals.get(te), signals.get_masks(te)
    k = class_count(signals, m_tr)
    names = class_names(signals, k)
    heads = train_heads(model, z_tr, x_tr, m_tr, k, names, args)
    head_cpu = heads["funcml_head"].record_["cpu_seconds"]
    unets = train_unets(x_tr, m_tr, k, args.field_cpu_seconds + head_cpu, args)
    preds = {n: h.predict(z_te, grid, signals=x_te if h.needs_signals else None) for n, h in heads.items()}
    preds.update({n: u.predict(x_te) for n, u in unets.items()})
    reports = {n: segmentation_report(p, m_te, k, class_names=names) for n, p in preds.items()}
    records = {n: fit_record(e) for n, e in {**heads, **unets}.items()}
    rows = []
    for n, rep in reports.items():
        per = rep["per_class"]
        cpu = records[n]["cpu_seconds"] + (args.field_cpu_seconds if n in heads else 0)
        rows.append([n, *[_round(per[names[str(c)]]["dice"], 3) for c in range(k)], _round(rep["mean"]["dice"], 3),
                     _round(per[names[str(k - 1)]]["hd95"], 2), records[n]["steps"], round(cpu)])
        print(rows[-1], flush=True)
    if args.figure:
        plot_overlays(x_te[:6], preds["funcml_head"][:6], m_te[:6], args.figure,
                      title="query head: predicted (red), true (yellow, dashed)")
    write_result(args.name, {"reports": reports, "training": records, "field_cpu_seconds": args.field_cpu_seconds,
                             "model": model_record(model), "resolution": args.resolution,
                             "counts": {"train": int(len(tr)), "test": int(len(te))}},
                 task="query", tables=[table(
                     f"Segmentation {signals.name} at {args.resolution}x{args.resolution} (test split, {len(te)} images)",
                     ["method", *[f"Dice {names[str(c)]}" for c in range(k)], "mean Dice",
                      f"HD95 {names[str(k - 1)]}", "training steps", "training CPU s"], rows,
                     caption="training CPU s of the heads includes the field model's meta-training; "
                             "unet_equal_time trains for the same CPU time as field model + funcml_head")],
                 notes="2 cores shared with other jobs; budgets in process CPU time, one torch thread")


if __name__ == "__main__":
    main()
