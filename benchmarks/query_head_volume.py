"""Super-resolution of volumes AdrenalMNIST3D 14^3 -> 28^3 with the query head, self-supervised.

The test volumes (28^3) are downsampled to 14^3 (area averaging, as the data's own resizing does),
encoded with a field model trained at 14^3, and brought back to 28^3 by the head, by the plain
field and by trilinear / nearest interpolation; scored against the real 28^3 volumes (PSNR, SSIM
of the middle slices). The head learns from the training volumes alone: each 28^3 training volume
downsampled by random factors in ``--scales`` and asked for the original (no 14^3 -> 28^3 pair of
the test set is seen). ``--minutes``: CPU time of the head on one thread.
Run: ``python benchmarks/query_head_volume.py --model MODEL [--minutes 6]``.
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
from funcml.data.base import ArraySignalSet  # noqa: E402
from funcml.data.transforms import resize_signals  # noqa: E402
from funcml.encoders.model import FieldModel  # noqa: E402
from funcml.query.figures import plot_method_grid  # noqa: E402
from funcml.query.pairs import downsampled_pairs  # noqa: E402
from funcml.query.superres import superres_evaluate  # noqa: E402


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="field model of adrenalmnist3d.npz at 14^3 (funcml train)")
    p.add_argument("--minutes", type=float, default=6.0, help="CPU minutes (one thread) of the head")
    p.add_argument("--scales", default="1.5-4")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--low", type=int, default=14)
    p.add_argument("--figure", default="docs/figures/query-head-volume-adrenalmnist3d.png")
    p.add_argument("--name", default="query_head_volume_adrenalmnist3d")
    return p.parse_args(argv)


def test_pair(signals, low: int) -> tuple[ArraySignalSet, ArraySignalSet]:
    """The test split at its own grid and downsampled to ``low`` per axis (same rows, same order)."""
    te = signals.indices("test")
    high = signals.get(te)
    common = dict(splits=np.full(len(te), 2, np.uint8), labels=None, task="none", label_names=None)
    small = resize_signals(high, (low,) * 3)
    return (ArraySignalSet(small, name="adrenal-low", spec=f"test downsampled to {low}^3", fingerprint="low", **common),
            ArraySignalSet(high, name="adrenal", spec="test 28^3", fingerprint="high", **common))


def main(argv=None) -> None:
    args = parse(argv)
    torch.set_num_threads(1)
    signals = load_signals(str(shared_data() / "medmnist" / "adrenalmnist3d.npz"), LoadOptions())
    model = FieldModel.load(args.model)
    scales = tuple(float(s) for s in args.scales.split("-"))
    tr, va = signals.indices("train"), signals.indices("val")
    t0 = time.perf_counter()
    pairs = downsampled_pairs(model, signals.get(tr), scales=scales, repeats=args.repeats, progress=False)
    val = downsampled_pairs(model, signals.get(va), scales=scales, repeats=1, seed=1, progress=False)
    record = {"encode_seconds": time.perf_counter() - t0, "pairs": len(pairs)}
    head = budget_head("superres", "features,latent,observed", args.minutes, encoder_width=32, batch_size=8).fit(
        model, pairs, grid=(args.low,) * 3, val=val, log=print)
    record["funcml_head_selfsup"] = fit_record(head)
    low, high = test_pair(signals, args.low)
    metrics, ex = superres_evaluate(model, low, high, split="test", heads={"funcml_head_selfsup": head},
                                    progress=False, log=print)
    names = ("nearest", "trilinear", "funcml", "funcml_fit_trilinear", "funcml_head_selfsup")
    rows = [[m, round(metrics[m]["psnr"], 2), round(metrics[m]["ssim"], 3), record.get(m, {}).get("steps"),
             round(record[m]["cpu_seconds"]) if m in record else None] for m in names]
    Path(args.figure).parent.mkdir(parents=True, exist_ok=True)
    plot_method_grid({f"{args.low}^3 input": ex["low"], "trilinear": ex["trilinear"], "funcml (field)": ex["funcml"],
                      "query head": ex["funcml_head_selfsup"], "28^3 truth": ex["high"]}, args.figure, max_items=6,
                     title="AdrenalMNIST3D 14^3 -> 28^3, middle slices of test volumes")
    write_result(args.name, {"metrics": metrics, "training": record, "minutes": args.minutes,
                             "model": model_record(model), "figure": args.figure},
                 task="query", tables=[table(
                     f"Super-resolution AdrenalMNIST3D {args.low}^3 -> 28^3 (test split, {len(high)} volumes)",
                     ["method", "PSNR (dB)", "SSIM", "training steps", "training CPU s"], rows,
                     caption=f"head trained self-supervised on the 28^3 training volumes downsampled by "
                             f"{args.scales}, {args.minutes} CPU minutes on one thread")],
                 notes="2 cores shared with other jobs; budgets in process CPU time, one torch thread")


if __name__ == "__main__":
    main()
