"""Two checkouts of funcml side by side: meta-step time and peak memory, interleaved round by round.

For a change whose effect is smaller than this machine's drift (a few percent), comparing a branch
with ``main`` in one run is the only honest measurement: every child process imports funcml from
one checkout (``PYTHONPATH``), runs one warm-up meta-step and ``--steps`` timed ones of a
``bench_meta.py`` configuration on the same random data with the same seeds, and reports its
median step time, its peak RSS and its outer losses. Children alternate A, B, A, B, ... for
``--rounds`` rounds; the medians over rounds and the ratio B / A are printed, together with the
largest relative difference of the two loss trajectories (same math: float rounding only).

Example (an experiment branch against main)::

    git worktree add /tmp/exp exp/reverse-pass-loops
    .venv/bin/python benchmarks/bench_checkouts.py . /tmp/exp --configs ref-28,cpu-volume --rounds 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CHILD = r"""
import json, resource, statistics, sys, time
import torch
sys.path.insert(0, sys.argv[4])
from bench_meta import build_config
import funcml
from funcml.allocator import tune_glibc_malloc
from funcml.encoders.coords import make_grid
from funcml.encoders.meta import draw_subsets
from funcml.encoders.siren import ModulatedSiren
from funcml.encoders.trainer import apply_meta_update, compute_meta_gradient
from funcml.seeding import generator

tune_glibc_malloc()
torch.set_num_threads(int(sys.argv[3]))
field, cfg, spatial, _ = build_config(sys.argv[1])
torch.manual_seed(0)
net = ModulatedSiren(field, inner_lr=cfg.inner_lr)
coords = make_grid(spatial)
x = torch.rand(cfg.batch_size, 1, *spatial, generator=torch.Generator().manual_seed(1))
params = list(net.parameters())
opt = torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
losses, times = [], []
for k in range(1 + int(sys.argv[2])):
    subs = draw_subsets(coords.shape[0], cfg.context_ratio, cfg.inner_steps, generator(0, "context", k), "cpu")
    t = time.perf_counter()
    stats = compute_meta_gradient(net, opt, coords, x, subs, cfg)
    apply_meta_update(params, opt, cfg)
    if k:
        times.append(time.perf_counter() - t)
    losses.append(stats.means()["loss_outer"])
print(json.dumps({"funcml": funcml.__file__, "median_s": statistics.median(times), "losses": losses,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(checkout: Path, config: str, steps: int, threads: int) -> dict:
    """One child importing funcml from ``checkout``; its JSON result."""
    env = dict(os.environ, PYTHONPATH=str(checkout), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", _CHILD, config, str(steps), str(threads), str(HERE)], env=env,
                         capture_output=True, text=True, cwd=checkout)
    if out.returncode != 0:
        raise SystemExit(f"child for {checkout} ({config}) failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not Path(result["funcml"]).resolve().is_relative_to(checkout.resolve()):
        raise SystemExit(f"the child imported {result['funcml']}, not the checkout {checkout}")
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="checkout A (the baseline, e.g. .)")
    ap.add_argument("b", type=Path, help="checkout B (the change)")
    ap.add_argument("--configs", default="ref-28", help="comma list of bench_meta.py configurations")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=6, help="timed meta-steps per child (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    for path in (args.a, args.b):
        if not (path / "funcml" / "__init__.py").is_file():
            raise SystemExit(f"{path} is not a funcml checkout (no funcml/__init__.py)")
    for config in args.configs.split(","):
        runs: dict[str, list[dict]] = {"A": [], "B": []}
        for r in range(args.rounds):
            for name, path in (("A", args.a), ("B", args.b)):
                res = run_child(path, config, args.steps, args.threads)
                runs[name].append(res)
                print(f"  {config} {name} round {r + 1}: {res['median_s']:.4f} s/step, peak {res['peak_mb']:.0f} MB",
                      flush=True)
        med = {k: statistics.median(x["median_s"] for x in v) for k, v in runs.items()}
        peak = {k: statistics.median(x["peak_mb"] for x in v) for k, v in runs.items()}
        dev = max(abs(a - b) / max(abs(a), 1e-30) for a, b in zip(runs["A"][0]["losses"], runs["B"][0]["losses"]))
        print(f"{config}: A {med['A']:.4f} s/step, B {med['B']:.4f} s/step, B/A {med['B'] / med['A']:.3f}; "
              f"peak RSS A {peak['A']:.0f} MB, B {peak['B']:.0f} MB, B/A {peak['B'] / peak['A']:.3f}; "
              f"loss deviation {dev:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
