"""Where a funcml meta-step spends its time, by call site, with plain timers.

``torch.profiler`` and sampling profilers distort this step: under the profiler the 8 MB
element-wise operators of the 3D preset took 10-13 ms each instead of about 1 ms, and the step
14 s instead of 7.6. This script instead wraps the matmul primitives of the backend that runs
(``funcml.backends.ops.AtenOps``, or the cpu backend's ``NativeOps``), its element-wise loops, the
passes of ``funcml.backends.kernels`` that call them and the kernel entry points with
``time.perf_counter`` (a microsecond against calls of 0.1-10 ms),
runs ``--steps`` meta-steps of a ``bench_meta.py`` configuration after one warm-up step and prints,
per call site, the time per step, the calls per step and (for matmuls) the counted GFLOP/s.
Times of enclosing passes include those of the calls inside them. The summary and the call sites go
to ``benchmarks/results/RESULT.json`` (``--result``, default ``time-kernels-CONFIG``).

Example::

    python benchmarks/time_kernels.py --config volume-32 --steps 2
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import CONFIGS  # noqa: E402
from profile_step import meta_step_runner  # noqa: E402
from results import table, write_result  # noqa: E402

MATMULS = ("gemm", "gemm_add", "gemm_add_", "linear_shift")   # methods of the primitives
ELEMENTWISE = ("shifted_sin_cos", "mul_sum_", "field_adjoint")   # methods of the primitives
LOOPS = ("_mul_into", "layer_inputs", "field_forward", "reverse_field", "reverse_closed_grad", "closed_grad",
         "prepare", "param_grads")                             # functions of funcml.backends.kernels
ENTRY_POINTS = ("inner_forward", "inner_backward", "first_forward", "first_backward", "first_grads",
                "outer_forward", "outer_backward", "latent_grads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="volume-32", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--result", default=None, help="result file name in benchmarks/results/ (default: time-kernels-CONFIG)")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args()

    import torch

    from funcml.allocator import tune_glibc_malloc
    from funcml.backends import Execution, backend_for, kernels

    seconds: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    flops: collections.Counter = collections.Counter()

    def timed(fn, name: str, operands=None, by_caller: bool = True):
        """``fn`` timed under its call site; ``operands(args) -> (a, b)`` of a matmul ``a (.., k) @ b (k, n)``."""
        def wrapper(*a, **k):
            caller = sys._getframe(1)
            key = f"{name} <- {caller.f_code.co_name}:{caller.f_lineno}" if by_caller else name
            t0 = time.perf_counter()
            out = fn(*a, **k)
            seconds[key] += time.perf_counter() - t0
            calls[key] += 1
            if operands is not None:
                x, w = operands(a)
                flops[key] += 2 * x.numel() * w.shape[-1]
            return out
        return wrapper

    ops = type(backend_for(Execution(), "cpu").ops)  # the default backend's primitives on this machine
    for name in MATMULS:  # gemm(self, a, b), gemm_add(self, c, a, b), ..., linear_shift(self, x, w, shift)
        operands = (lambda a: (a[1], a[2])) if name == "linear_shift" else (lambda a: (a[-2], a[-1]))
        setattr(ops, name, timed(getattr(ops, name), name, operands))
    for name in ELEMENTWISE:
        setattr(ops, name, timed(getattr(ops, name), name))
    for name in LOOPS:
        setattr(kernels, name, timed(getattr(kernels, name), name))
    for name in ENTRY_POINTS:
        setattr(kernels, name, timed(getattr(kernels, name), f"kernel {name}", by_caller=False))

    tune_glibc_malloc()
    torch.set_num_threads(args.threads)
    step = meta_step_runner(args.config)

    step(0)
    seconds.clear(), calls.clear(), flops.clear()
    t0 = time.perf_counter()
    for k in range(args.steps):
        step(k + 1)
    wall = (time.perf_counter() - t0) / args.steps
    n = args.steps
    mm = sum(v for k, v in seconds.items() if k.split(" ")[0] in MATMULS) / n
    mm_flops = sum(flops.values()) / n
    print(f"{args.config}: {wall:.3f} s per meta-step; matmul helpers {mm:.3f} s "
          f"({mm_flops / 1e9:.1f} GFLOP counted, {mm_flops / max(mm, 1e-9) / 1e9:.0f} GFLOP/s), "
          f"everything else {wall - mm:.3f} s")
    print(f"{'ms/step':>9} {'calls':>6} {'GFLOP/s':>8}  call site")
    sites = []
    for key, v in sorted(seconds.items(), key=lambda kv: -kv[1]):
        rate = f"{flops[key] / v / 1e9:8.0f}" if flops[key] else " " * 8
        print(f"{v / n * 1e3:9.1f} {calls[key] // n:6d} {rate}  {key}")
        sites.append({"site": key, "ms_per_step": v / n * 1e3, "calls_per_step": calls[key] // n,
                      "gflops": flops[key] / v / 1e9 if flops[key] else None})
    row = [args.config, f"{wall:.3f} s", f"{mm:.3f} s ({mm_flops / 1e9:.1f} GFLOP)",
           f"{mm_flops / max(mm, 1e-9) / 1e9:.0f} GFLOP/s", f"{wall - mm:.3f} s"]
    write_result(args.result or f"time-kernels-{args.config}", {"steps": n, "sites": sites}, task="performance",
                 notes=args.notes, tables=[table(f"Where a {args.config} meta-step spends its time",
                                                 ["config", "meta-step", "matmuls", "matmul rate", "everything else"],
                                                 [row])])


if __name__ == "__main__":
    main()
