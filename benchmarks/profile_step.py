"""Where a funcml meta-step spends its time: the share of matmuls against everything else.

Runs ``--warmup`` meta-steps of a ``bench_meta.py`` configuration (same random data and context
subsets as there), then one under ``torch.profiler`` and prints the operators by self CPU time, the
matmuls' share of the step and their rate (counted matmul FLOPs / matmul time), next to this
machine's dense float32 matmul rate measured right after. When the matmuls already run near the
dense rate and take most of the step, a shorter step needs fewer FLOPs, not faster element-wise code.
``--shapes`` lists the operators by input shapes as well; ``--faults N`` instead times N steps with
their page faults (memory the allocator handed back to the kernel and faults in again), under
glibc settings given with ``--mallopt``. The profiler itself slows the large element-wise operators
of the paper presets (10-13 ms instead of about 1 ms per 8 MB operator at volume-32): for their
share of the step use ``time_kernels.py``, which times the kernels' calls with plain timers. The
summary goes to ``benchmarks/results/RESULT.json`` (``--result``, default ``profile-step-CONFIG``).

Examples::

    python benchmarks/profile_step.py --config image-64 --threads 2
    python benchmarks/profile_step.py --config volume-32 --faults 3 --mallopt=-1=-1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import CONFIGS, MatmulFlops, build_config, matmul_rate  # noqa: E402
from results import table, write_result  # noqa: E402

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::baddbmm", "aten::bmm")


def meta_step_runner(config: str, micro_batch_size: int | None = None):
    """``step(k)``: runs meta-step ``k`` of a ``bench_meta.py`` configuration (its random data, the
    context subsets of step ``k``) on one funcml model with its outer optimizer."""
    import dataclasses
    import math

    import torch

    from funcml.encoders.coords import make_grid
    from funcml.encoders.meta import draw_subsets
    from funcml.encoders.siren import ModulatedSiren
    from funcml.encoders.trainer import apply_meta_update, compute_meta_gradient, make_optimizer
    from funcml.seeding import generator

    field, cfg, spatial, _ = build_config(config)
    if micro_batch_size:
        cfg = dataclasses.replace(cfg, micro_batch_size=micro_batch_size)
    torch.manual_seed(0)
    net = ModulatedSiren(field, inner_lr=cfg.inner_lr)
    coords = make_grid(spatial)
    x = torch.rand(cfg.batch_size, 1, *spatial, generator=torch.Generator().manual_seed(1))
    params = list(net.parameters())
    optimizer = make_optimizer(params, cfg)

    def step(k: int) -> None:
        subsets = draw_subsets(math.prod(spatial), cfg.context_ratio, cfg.inner_steps,
                               generator(0, "context", k), None)
        compute_meta_gradient(net, optimizer, coords, x, subsets, cfg)
        apply_meta_update(params, optimizer, cfg)

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="image-64", choices=sorted(CONFIGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rows", type=int, default=15, help="operators printed")
    ap.add_argument("--micro-batch-size", type=int, default=None,
                    help="signals per pass (default: funcml's automatic choice)")
    ap.add_argument("--shapes", action="store_true", help="also list operators by input shapes")
    ap.add_argument("--faults", type=int, default=0, metavar="N",
                    help="only time N steps after the warm-up, each with its minor page faults, system time "
                         "and peak RSS (no profile)")
    ap.add_argument("--mallopt", action="append", default=[], metavar="PARAM=VALUE",
                    help="glibc mallopt after funcml's tuning, e.g. -1=-1 (M_TRIM_THRESHOLD: never trim) or "
                         "-4=0 (M_MMAP_MAX: no mmap blocks); repeatable")
    ap.add_argument("--result", default=None, help="result file name in benchmarks/results/ (default: profile-step-CONFIG)")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args()
    name = args.result or f"profile-step-{args.config}"

    import ctypes
    import resource

    import torch
    from torch.profiler import ProfilerActivity, profile

    from funcml.allocator import tune_glibc_malloc

    tune_glibc_malloc()
    for item in args.mallopt:
        param, value = (int(v) for v in item.split("="))
        ok = ctypes.CDLL("libc.so.6").mallopt(param, value)
        print(f"mallopt({param}, {value}) -> {ok}")
    torch.set_num_threads(args.threads)
    step = meta_step_runner(args.config, args.micro_batch_size)

    for k in range(args.warmup):
        step(k)
    if args.faults:
        rows = []
        for k in range(args.faults):
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            step(args.warmup + k)
            wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
            print(f"{args.config} step {k + 1}: {wall:.3f} s, {r1.ru_minflt - r0.ru_minflt} minor page faults, "
                  f"system time {r1.ru_stime - r0.ru_stime:.2f} s, peak RSS {r1.ru_maxrss // 1024} MB")
            rows.append([k + 1, round(wall, 3), r1.ru_minflt - r0.ru_minflt, round(r1.ru_stime - r0.ru_stime, 2),
                         r1.ru_maxrss // 1024])
        write_result(name, {"mallopt": args.mallopt, "rows": rows}, task="performance", notes=args.notes,
                     tables=[table(f"{args.config} meta-steps and their page faults",
                                   ["step", "seconds", "minor page faults", "system s", "peak RSS MB"], rows)])
        return
    t0 = time.perf_counter()
    step(args.warmup)
    wall = time.perf_counter() - t0
    with MatmulFlops() as counter:
        step(args.warmup + 1)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
        step(args.warmup + 2)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    if args.shapes:
        by_shape = prof.key_averages(group_by_input_shape=True)
        print(by_shape.table(sort_by="self_cpu_time_total", row_limit=2 * args.rows, max_name_column_width=20,
                             max_shapes_column_width=60))
    dense = matmul_rate({"threads": args.threads, "device": "cpu"})["flops_per_s"]
    flops = counter.total
    print(f"{args.config}: step {wall:.3f} s (unprofiled), {flops / 1e9:.1f} GFLOP of matmuls")
    print(f"matmuls: {100 * matmul / total:.1f}% of the profiled step's self CPU time, "
          f"{flops / (matmul / 1e6) / 1e9:.0f} GFLOP/s of matmul time; dense rate {dense / 1e9:.0f} GFLOP/s")
    print(f"step time if everything but the matmuls took no time and they ran at the dense rate: "
          f"{flops / dense:.3f} s")
    row = [args.config, round(wall, 3), round(flops / 1e9, 1), f"{100 * matmul / total:.1f}%",
           round(flops / (matmul / 1e6) / 1e9), round(dense / 1e9), round(flops / dense, 3)]
    write_result(name, {"row": row}, task="performance", notes=args.notes, tables=[table(
        f"{args.config}: the matmuls' share of a profiled meta-step",
        ["config", "step s (unprofiled)", "matmul GFLOP", "matmul share", "matmul GFLOP/s", "dense GFLOP/s",
         "matmuls at the dense rate, s"], [row])])


if __name__ == "__main__":
    main()
