"""Two checkouts of funcml side by side: meta-step time, encoding throughput and peak memory.

For a change whose effect is smaller than this machine's drift (a few percent), comparing a branch
with ``main`` in one run is the only honest measurement. Each measurement is one child of
``bench_meta.py`` (implementation ``funcml``, the same random data, weights, context subsets and
seeds) that imports funcml from one checkout (``PYTHONPATH``); children alternate A, B, A, B, ...
for ``--rounds`` rounds. Printed per configuration and phase: the medians over rounds of the
meta-step time (or the encoding throughput) and of the peak RSS, the ratios B / A (of the medians,
and the median and range of the ratios of the two children of each round, which cancel slow drifts
of a shared machine's load; rounds alternate A, B and B, A), the same per-round ratios of CPU time
(process time of the child's steps: on a loaded machine less disturbed by the other jobs than the
wall time, with ``--omp-wait-policy passive`` nearly the work itself), and the largest relative difference
between the two checkouts' outer-loss trajectories (or latents): float rounding only, if the change
keeps the math. Both checkouts must provide the funcml API that
``bench_meta.py`` of the checkout running this script uses.

Ends with ``benchmarks/results/RESULT.json`` (``--result``, default ``bench-checkouts``; see
``results.py``).

Example (an experiment branch against the current checkout)::

    git worktree add /tmp/exp exp/some-branch
    python benchmarks/bench_checkouts.py . /tmp/exp --configs ref-28,cpu-volume --rounds 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_meta import CONFIGS, run_child  # noqa: E402
from results import table, write_result  # noqa: E402


def _deviation(a: dict, b: dict, phase: str) -> float:
    """Largest relative difference of B's losses (train) or latents (encode) from A's."""
    if phase == "train":
        return max(abs(x - y) / max(abs(x), 1e-30) for x, y in zip(a["losses"], b["losses"]))
    import torch

    la = torch.load(a["latents_file"], weights_only=True)
    lb = torch.load(b["latents_file"], weights_only=True)
    return float(((la - lb).abs().max() / la.abs().max().clamp_min(1e-30)).item())


def _paired(runs: dict, key: str) -> str:
    """``median (min-max)`` of the ratios B / A of ``key`` within each round."""
    ratios = sorted(b[key] / a[key] for a, b in zip(runs["A"], runs["B"]))
    return f"{statistics.median(ratios):.3f} ({ratios[0]:.3f}-{ratios[-1]:.3f})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="checkout A (the baseline, e.g. .)")
    ap.add_argument("b", type=Path, help="checkout B (the change)")
    ap.add_argument("--configs", default="ref-28", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--phases", default="train", help="comma list of train, encode")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="timed meta-steps per child")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--encode-steps", type=int, default=20)
    ap.add_argument("--encode-batches", type=int, default=3, help="encoding batches per child (the first is warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--omp-wait-policy", choices=("default", "passive", "active"), default="default",
                    help="OMP_WAIT_POLICY of the children (passive on a shared, loaded CPU; see bench_meta.py)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child")
    ap.add_argument("--result", default="bench-checkouts", help="name of the result file in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)
    checkouts = {"A": args.a.resolve(), "B": args.b.resolve()}
    for path in checkouts.values():
        if not (path / "funcml" / "__init__.py").is_file():
            raise SystemExit(f"{path} is not a funcml checkout (no funcml/__init__.py)")
    base = {"threads": args.threads, "device": "cpu", "official": None, "steps": args.steps, "warmup": args.warmup,
            "encode_steps": args.encode_steps, "encode_batches": args.encode_batches, "impl": "funcml",
            "alloc": "default", "omp_wait_policy": args.omp_wait_policy, "flops": False}
    scratch = {name: tempfile.mkdtemp(prefix=f"funcml-checkout-{name}-") for name in checkouts}
    rows = []
    for config in args.configs.split(","):
        for phase in args.phases.split(","):
            runs: dict[str, list[dict]] = {"A": [], "B": []}
            for r in range(args.rounds):
                for name, path in sorted(checkouts.items(), reverse=r % 2 == 1):  # A B, B A, A B, ...
                    job = {**base, "config": config, "phase": phase, "pythonpath": str(path),
                           "scratch": scratch[name]}
                    res = run_child(job, "default", args.timeout)
                    if "error" in res:
                        raise SystemExit(f"{config} {phase} child of {path} failed: {res['error']}")
                    if not Path(res["funcml_file"]).resolve().is_relative_to(path):
                        raise SystemExit(f"the child imported {res['funcml_file']}, not the checkout {path}")
                    runs[name].append(res)
                    value = (f"{res['median_s']:.4f} s/step" if phase == "train"
                             else f"{res['signals_per_s']:.2f} signals/s")
                    print(f"  {config} {phase} {name} round {r + 1}: {value}, peak {res['peak_bytes'] / 2**20:.0f} MB",
                          flush=True)
            key = "median_s" if phase == "train" else "signals_per_s"
            med = {k: statistics.median(x[key] for x in v) for k, v in runs.items()}
            peak = {k: statistics.median(x["peak_bytes"] / 2**20 for x in v) for k, v in runs.items()}
            unit = "s/step" if phase == "train" else "signals/s"
            dev = _deviation(runs["A"][0], runs["B"][0], phase)
            spread = _paired(runs, key)
            cpu = _paired(runs, "cpu_s" if phase == "train" else "cpu_signals_per_s")
            print(f"{config} {phase}: A {med['A']:.4f} {unit}, B {med['B']:.4f} {unit}, B/A {med['B'] / med['A']:.3f}, "
                  f"per round {spread}, CPU time per round {cpu}; peak RSS A {peak['A']:.0f} MB, B {peak['B']:.0f} MB, "
                  f"B/A {peak['B'] / peak['A']:.3f}; deviation {dev:.1e}")
            rows.append([config, phase, f"{med['A']:.4g} -> {med['B']:.4g} {unit}", round(med["B"] / med["A"], 3),
                         spread, cpu, f"{peak['A']:.0f} -> {peak['B']:.0f} MB", round(peak["B"] / peak["A"], 3),
                         f"{dev:.1e}"])
    columns = ["config", "phase", "A -> B", "B / A", "B / A per round: median (range)",
               "CPU-time B / A per round: median (range)", "peak RSS A -> B", "B / A", "deviation"]
    import torch

    torch.set_num_threads(args.threads)  # the children's thread count, for the result's environment
    write_result(args.result, {"a": str(args.a), "b": str(args.b), "rounds": args.rounds, "rows": rows},
                 task="performance", notes=args.notes,
                 tables=[table(f"Two checkouts side by side: A = {args.a}, B = {args.b}", columns, rows)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
