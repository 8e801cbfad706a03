"""What lower-precision matmuls (TF32, bfloat16) do to MedFuncta meta-learning, measured on a CPU.

``funcml train --precision tf32|bf16`` runs the per-coordinate matmuls with TF32 inputs (CUDA
tensor cores) or bfloat16 inputs with float32 results; everything else stays float32. On a CPU
TF32 is emulated (inputs rounded to 10 mantissa bits), so its *effect on the numbers* can be
measured here even though its speed cannot. Reported per precision:

* the relative error of one meta-gradient against float32 (same weights, data, subsets), for the
  preset's omega schedule and for a low-frequency one (omega 5 -> 10);
* the train and validation PSNR after ``--steps`` meta-steps of the ``cpu-image`` preset on the
  embedded BreastMNIST (same seed).

The table goes to ``benchmarks/results/RESULT.json`` (``--result``, default ``performance-precision``).
Example::

    nice -n 10 python benchmarks/bench_precision.py --steps 150
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path


def gradient_error(precision: str, omega_first: float, omega_last: float) -> float:
    import torch

    from funcml.backends import Execution
    from funcml.data import load_signals
    from funcml.encoders.coords import make_grid
    from funcml.encoders.meta import accumulate_meta_gradient, draw_subsets
    from funcml.encoders.presets import get_preset
    from funcml.encoders.siren import ModulatedSiren

    signals = load_signals("demo")
    field, train = get_preset("cpu-image").build(2, 1, omega_first=omega_first, omega_last=omega_last)
    torch.manual_seed(0)
    net = ModulatedSiren(field)
    x = torch.from_numpy(signals.get(range(16)))
    coords = make_grid(signals.spatial_shape)
    subsets = draw_subsets(coords.shape[0], train.context_ratio, train.inner_steps, torch.Generator().manual_seed(1))

    def grads(execution):
        net.zero_grad()
        accumulate_meta_gradient(net, coords, x, subsets, train.inner_lr, first_order=False, loss_scale=1 / 16,
                                 execution=execution)
        return torch.cat([p.grad.flatten() for p in net.parameters()])

    ref = grads(Execution())
    low = grads(Execution(precision=precision))
    return float((low - ref).norm() / ref.norm())


def train_psnr(precision: str, steps: int) -> dict:
    from funcml.data import load_signals
    from funcml.encoders.presets import get_preset
    from funcml.encoders.trainer import MetaTrainer

    signals = load_signals("demo")
    field, train = get_preset("cpu-image").build(2, 1, steps=steps, precision=precision, val_every=0,
                                                  val_signals=64)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = MetaTrainer(field, dataclasses.replace(train, checkpoint_every=10 ** 6), signals, f"{tmp}/m",
                             progress=False).run()
    return {"train_psnr": result.last_train_psnr, "val_psnr": result.best_val_psnr,
            "minutes": (time.perf_counter() - t0) / 60}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=150, help="meta-steps of the cpu-image preset per precision")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,tf32,bf16", help="comma list of fp32, tf32, bf16")
    ap.add_argument("--result", default="performance-precision", help="name of the result file in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import table, write_result

    torch.set_num_threads(args.threads)
    print("| precision | grad. error (omega 20->400) | grad. error (omega 5->10) | train PSNR dB | val PSNR dB |")
    print("|---|---|---|---|---|")
    rows = []
    for precision in args.precisions.split(","):
        hi = gradient_error(precision, 20.0, 400.0)
        lo = gradient_error(precision, 5.0, 10.0)
        res = train_psnr(precision, args.steps)
        rows.append([precision, f"{hi:.1e}", f"{lo:.1e}", f"{res['train_psnr']:.2f}", f"{res['val_psnr']:.2f}"])
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    columns = ["precision", "grad. error (omega 20->400)", "grad. error (omega 5->10)", "train PSNR dB", "val PSNR dB"]
    write_result(args.result, {"steps": args.steps, "rows": rows}, task="performance", notes=args.notes, order=60,
                 tables=[table("Lower-precision matmul inputs (cpu-image preset, embedded BreastMNIST)", columns, rows,
                               caption=f"Relative error of one meta-gradient against float32, and the PSNR after "
                                       f"{args.steps} meta-steps.")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
