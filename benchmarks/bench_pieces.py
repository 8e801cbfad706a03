"""Two pieces of the meta-step in isolation, each against what it replaced, interleaved in one process.

- ``adamw``: one outer optimizer step over a configuration's parameters (``bench_meta.py``
  configurations), plain AdamW against ``trainer.make_optimizer`` (the fused kernel), with the
  largest difference of the parameters after the timed steps (same gradients for both).
- ``adjoint``: a sine layer's pre-activation adjoint and its coordinate sum, ATen's four passes
  (``cbar = qbar g``, ``c xbar``, ``- s cbar``, the sum) against the cpu backend's ``field_adjoint``,
  at the per-pass shapes ``(B, n, L)`` of the presets.

Medians over ``--rounds`` interleaved rounds; the numbers go to ``benchmarks/results/RESULT.json``
(``--result``, default ``performance-pieces``). Example::

    python benchmarks/bench_pieces.py --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta import build_config  # noqa: E402
from results import table, write_result  # noqa: E402

ADAMW_CONFIGS = ("volume-32", "image-64", "ref-28")
ADJOINT_SHAPES = ((1, 8192, 256), (1, 1024, 256), (16, 784, 128), (21, 187, 64))  # volume-32, image-64, cpu-image, ecg


def _median_ms(fns: dict, rounds: int, reps: int) -> dict:
    times: dict = {name: [] for name in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[name].append((time.perf_counter() - t0) / reps * 1e3)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_adamw(rounds: int) -> list[list]:
    import torch

    from funcml.encoders.siren import ModulatedSiren
    from funcml.encoders.trainer import make_optimizer

    rows = []
    for name in ADAMW_CONFIGS:
        field, cfg, _, _ = build_config(name)
        nets, opts = [], []
        for kind in ("plain", "fused"):
            torch.manual_seed(0)
            net = ModulatedSiren(field, inner_lr=cfg.inner_lr)
            params = list(net.parameters())
            g = torch.Generator().manual_seed(1)
            for p in params:
                p.grad = torch.randn(p.shape, generator=g) * 1e-3
            opts.append(torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)
                        if kind == "plain" else make_optimizer(params, cfg))
            nets.append(net)
        ms = _median_ms({"plain": opts[0].step, "fused": opts[1].step}, rounds, 3)
        diff = max((a - b).abs().max().item() for a, b in zip(nets[0].parameters(), nets[1].parameters()))
        n = sum(p.numel() for p in nets[0].parameters())
        print(f"adamw {name} ({n / 1e6:.1f}M parameters): plain {ms['plain']:.1f} ms, fused {ms['fused']:.1f} ms "
              f"({ms['fused'] / ms['plain']:.2f}x); largest parameter difference {diff:.1e}")
        rows.append(["outer AdamW, fused kernel vs plain", f"{name}: {n / 1e6:.1f}M parameters", round(ms["fused"], 3),
                     round(ms["plain"], 3)])
    return rows


def bench_adjoint(rounds: int) -> list[list]:
    import torch

    from funcml.backends import native

    loops = native.NativeOps(lib=native.library())

    rows = []
    for shape in ADJOINT_SHAPES:
        g = torch.Generator().manual_seed(0)
        c, xbar, s, gk, qbar = (torch.randn(*shape, generator=g) for _ in range(5))
        out = torch.empty(*shape)

        def aten():
            cbar = qbar * gk
            ubar = c * xbar
            ubar.addcmul_(s, cbar, value=-1.0)
            return ubar.sum(dim=1)

        def fused():
            return loops.field_adjoint(c, xbar, s, qbar, gk, out=out)

        ms = _median_ms({"aten": aten, "fused": fused}, rounds, 20)
        print(f"adjoint {shape}: ATen {ms['aten']:.3f} ms, one pass {ms['fused']:.3f} ms "
              f"({ms['fused'] / ms['aten']:.2f}x)")
        rows.append(["layer adjoint, one C pass vs four ATen passes", " x ".join(map(str, shape)),
                     round(ms["fused"], 4), round(ms["aten"], 4)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pieces", default="adamw,adjoint")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--result", default="performance-pieces", help="name of the result file in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args()

    import torch

    from funcml.allocator import tune_glibc_malloc

    tune_glibc_malloc()
    torch.set_num_threads(args.threads)
    rows = []
    for piece in args.pieces.split(","):
        rows += {"adamw": bench_adamw, "adjoint": bench_adjoint}[piece](args.rounds)
    write_result(args.result, {"rounds": args.rounds, "rows": rows}, task="performance", notes=args.notes, order=44,
                 tables=[table("Two pieces in isolation", ["piece", "shape", "funcml ms", "plain ms"], rows)])


if __name__ == "__main__":
    main()
