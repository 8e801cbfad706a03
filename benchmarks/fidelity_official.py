"""Equal wall time: funcml against the official MedFuncta code, the same minutes, data and architecture.

The official code (github pfriedri/medfuncta; never part of funcml, see ``benchmarks/official.py`` for how
to extract it and what it needs) meta-trains its own ``LatentModulatedSIREN`` from the same initial
weights as funcml's, on the same batches and context subsets, with the architecture and inner-loop
settings of the funcml run it is compared with (K x L, P, omega, G, alpha, gamma, batch) and its own
training rule: AdamW at a constant learning rate (``--official-lr``: the funcml run's peak, and the
official default 3e-6 with ``--official-lr 3e-6``), gradient clipping at 1. Both then encode the test
split with H = 20 (official: ``inner_adapt_test_scale``, funcml: ``fit_latents``); the PSNR of the
official latents is measured on the official weights copied into a funcml network (the same function).

Equal minutes are equal step-time budgets, as in ``fidelity_budget.py``: the official code gets
``M * 60 / t`` steps, where ``t`` is its meta-step time measured side by side with funcml's ``base``
step in this process (ratio) times the fastest ``base`` step time seen on this machine.

    nice -n 5 python benchmarks/fidelity_official.py run --data breast28 --minutes 20 --funcml-run best-20m
    python benchmarks/fidelity_official.py report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fidelity_budget import WORK, build, load  # noqa: E402
from official import Official, find_official  # noqa: E402
from results import table, write_result  # noqa: E402


def funcml_from_official(model: torch.nn.Module, net) -> None:
    """The official per-layer weights copied into a funcml network (the inverse of official.copy_weights)."""
    L = net.config.width
    with torch.no_grad():
        for k, (dst, layer) in enumerate(zip([net.first, *net.hidden], model.layers)):
            dst.weight.copy_(layer.linear.weight)
            dst.bias.copy_(layer.linear.bias)
            net.shift.weight[k * L:(k + 1) * L] = layer.modulate_shift_layer.weight
            net.shift.bias[k * L:(k + 1) * L] = layer.modulate_shift_layer.bias
        net.out.weight.copy_(model.last_layer.linear.weight)
        net.out.bias.copy_(model.last_layer.linear.bias)


def make_official(root: Path, field, train, signals) -> tuple[Official, object]:
    from funcml.encoders.siren import ModulatedSiren
    from funcml.seeding import derive_seed

    torch.manual_seed(derive_seed(train.seed, "init"))
    net = ModulatedSiren(field, inner_lr=train.inner_lr)   # the initial weights funcml starts from
    off = Official(root, net, signals.signal_shape, train.batch_size, train.inner_lr, train.inner_steps,
                   train.context_ratio)
    return off, net


class OfficialTimer:
    """Official meta-steps on real batches, timed (same interface as fidelity_budget.StepTimer)."""

    def __init__(self, root: Path, field, train, signals, lr: float) -> None:
        self.off, _ = make_official(root, field, train, signals)
        self.opt = torch.optim.AdamW(self.off.parameters(), lr=lr)
        self.train, self.signals = train, signals
        self.n = int(torch.tensor(signals.spatial_shape).prod())
        self.idx = signals.indices("train")
        self.k = 0

    def times(self, steps: int, threads: int = 2) -> list[float]:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        out = []
        try:
            for _ in range(steps):
                x, subsets = _batch(self.signals, self.idx, self.train, self.k, self.n)
                t0 = time.perf_counter()
                self.off.meta_step(x, subsets, self.opt)
                out.append(time.perf_counter() - t0)
                self.k += 1
        finally:
            torch.set_num_threads(old)
        return out


def official_step_ratio(root: Path, data: str, signals, field, train, lr: float) -> float:
    """Official meta-step time / funcml ``base`` meta-step time (fastest of each, rounds interleaved)."""
    from fidelity_budget import StepTimer, fastest_steps

    base, official = fastest_steps([StepTimer(*build(data, "base", signals, 1), signals),
                                    OfficialTimer(root, field, train, signals, lr)], rounds=3, per_round=3)
    return official / base


def _batch(signals, idx, train, step: int, n: int):
    from funcml.encoders.meta import draw_subsets
    from funcml.seeding import epoch_batch, generator

    x = torch.from_numpy(signals.get(idx[epoch_batch(step, len(idx), train.batch_size, train.seed)]))
    subsets = draw_subsets(n, train.context_ratio, train.inner_steps, generator(train.seed, "context", step))
    return x, [torch.arange(n) if s is None else s for s in subsets]


def train_official(root: Path, signals, field, train, steps: int, lr: float) -> tuple[Official, list[dict]]:
    off, _ = make_official(root, field, train, signals)
    opt = torch.optim.AdamW(off.parameters(), lr=lr)
    n = int(torch.tensor(signals.spatial_shape).prod())
    idx = signals.indices("train")
    log, window = [], []
    for step in range(steps):
        x, subsets = _batch(signals, idx, train, step, n)
        window.append(off.meta_step(x, subsets, opt))
        if (step + 1) % 50 == 0:
            mse = sum(window) / len(window)
            log.append({"step": step + 1, "loss_outer": mse})
            print(f"official {step + 1}/{steps} outer loss {mse:.4g}", flush=True)
            window = []
    return off, log


def encode_official(off: Official, signals, field, train, h: int = 20) -> float:
    """Mean test PSNR of the official test-time encode (H steps, its gradient rescaling)."""
    from funcml.encoders.fitting import reconstruction_psnr
    from funcml.encoders.meta import draw_subsets
    from funcml.encoders.siren import ModulatedSiren
    from funcml.seeding import generator

    net = ModulatedSiren(field, inner_lr=train.inner_lr)
    funcml_from_official(off.wrapper.model, net)
    idx = signals.indices("test")
    n = int(torch.tensor(signals.spatial_shape).prod())
    total = 0.0
    for k, start in enumerate(range(0, len(idx), 64)):
        x = torch.from_numpy(signals.get(idx[start:start + 64]))
        subsets = draw_subsets(n, train.context_ratio, h, generator(train.seed, "encode", k))
        phi = off.encode(x, [torch.arange(n) if s is None else s for s in subsets], h)
        total += float(reconstruction_psnr(net, phi, x).sum())
    return total / len(idx)


def run(data: str, minutes: float, funcml_run: str, lr: float | None, root: Path, threads: int = 2) -> dict:
    rec = json.loads((WORK / data / funcml_run / "run.json").read_text())
    name = rec["config"]
    signals = load(data)
    field, train = build(data, name, signals, rec["steps"])
    field = dataclasses.replace(field, meta_sgd=False)     # the official code has no meta-SGD
    lr = train.outer_lr if lr is None else lr
    anchor = json.loads((WORK / "step_times.json").read_text())[data]
    ratio = official_step_ratio(root, data, signals, field, train, lr)
    steps = max(1, int(round(minutes * 60 / (anchor * ratio))))
    print(f"[official {data} {minutes:g} min] {ratio:.2f} x funcml base step -> {steps} steps at lr {lr:g}", flush=True)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    off, log = train_official(root, signals, field, train, steps, lr)
    wall = time.perf_counter() - t0
    psnr = encode_official(off, signals, field, train)
    out = {"data": data, "minutes": minutes, "funcml_run": funcml_run, "funcml_config": name,
           "funcml_steps": rec["steps"], "funcml_test_psnr": rec["test_psnr"], "official_lr": lr,
           "official_step_ratio_to_funcml_base": ratio, "official_steps": steps, "official_test_psnr": psnr,
           "official_wall_minutes_under_load": wall / 60, "threads": threads, "official_log": log, "field": dataclasses.asdict(field)}
    path = WORK / data / f"official-{funcml_run}-lr{lr:g}.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"[official {data}] test PSNR {psnr:.2f} dB (funcml {rec['test_psnr']:.2f} dB)", flush=True)
    return out


def context_ratio(r: dict) -> float:
    """gamma of the funcml run an official run was matched to (both used it)."""
    return json.loads((WORK / r["data"] / r["funcml_run"] / "run.json").read_text())["train"]["context_ratio"]


def report() -> None:
    files = (json.loads(p.read_text()) for p in WORK.glob("*/official-*.json"))
    gathered = sorted(((context_ratio(r), r) for r in files),
                      key=lambda gr: (gr[1]["data"], gr[1]["minutes"], gr[0], gr[1]["official_lr"]))
    runs = [r for _, r in gathered]
    rows = [[r["data"], r["minutes"], f"{r['field']['depth']} x {r['field']['width']}, P {r['field']['latent_dim']}, "
             f"gamma {gamma:g}",
             r["funcml_config"], r["funcml_steps"], round(r["funcml_test_psnr"], 2), r["official_lr"],
             r["official_steps"], round(r["official_test_psnr"], 2),
             round(r["funcml_test_psnr"] - r["official_test_psnr"], 2)] for gamma, r in gathered]
    inputs = [f"nice -n 5 python benchmarks/fidelity_official.py run --data {r['data']} --minutes {r['minutes']:g} "
              f"--funcml-run {r['funcml_run']} --official-lr {r['official_lr']:g} --threads {r['threads']}"
              for r in runs]
    write_result("fidelity_official", {"runs": runs}, task="fidelity", inputs=inputs,
                 tables=[table("Equal minutes: funcml against the official MedFuncta code (test split, H = 20)",
                               ["data", "minutes", "architecture", "funcml config", "funcml steps", "funcml PSNR dB",
                                "official lr", "official steps", "official PSNR dB", "funcml - official dB"], rows)],
                 notes="2 cores shared with other jobs: minutes are step counts at measured step times "
                       "(official / funcml step-time ratio measured side by side)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", required=True)
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--funcml-run", required=True, help="the fidelity_budget run to compare with (CONFIG-Mm)")
    r.add_argument("--official-lr", type=float, default=None)
    r.add_argument("--official", default=None, help="the extracted official checkout (default: $MEDFUNCTA_DIR)")
    r.add_argument("--threads", type=int, default=2, help="threads the official training runs with (not its step count)")
    sub.add_parser("report")
    a = ap.parse_args()
    if a.cmd == "report":
        report()
        return
    root = find_official(a.official)
    if root is None:
        sys.exit("the official code was not found: see benchmarks/official.py")
    run(a.data, a.minutes, a.funcml_run, a.official_lr, root, a.threads)


if __name__ == "__main__":
    main()
