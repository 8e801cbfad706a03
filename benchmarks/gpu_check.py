"""One check of the GPU path in at most about five minutes; prints one JSON object.

On a CUDA GPU (the default when there is one):

* ``equivalence``: the fused backend's meta-gradients and encodings against the reference (plain
  autograd) on the GPU, in float64 and float32 (TF32 off), largest relative difference;
* ``steps``: 40 meta-steps each of the paper presets ``image-64``, ``ecg`` and ``volume-32`` (synthetic
  smooth signals of their shapes) at fp32, tf32 and bf16: median step time (steps 6 on, each timed
  between two ``torch.cuda.synchronize``), ``max_memory_allocated``, and loss sanity (finite, not
  diverging, mean loss against the fp32 run);
* ``compile``: the same ``image-64`` tf32 steps with ``--compile`` (first-step compile time, then the
  median) against eager;
* ``encode``: ``encode_signal_set`` throughput on ``image-64`` signals at tf32 and fp32, and the
  host syncs per chunk;
* ``syncs``: host-device synchronisations per meta-step of ``MetaTrainer`` itself (``image-64``,
  tf32): those torch's ``set_sync_debug_mode("warn")`` reports plus explicit
  ``torch.cuda.synchronize`` calls, counted over 2 and 12 steps; the difference / 10 is the cost of
  one step (set-up and checkpoints cancel out).

Without a GPU (``--device cpu``, or no CUDA) it runs in a reduced mode: tiny configurations, a few
steps, no compile, syncs counted as the operations that would synchronise on a GPU
(:class:`funcml.syncs.HostSyncOps`); the test suite runs it so that it cannot rot. Everything runs the
``fused`` backend, the one that runs on a GPU (on a CPU: ATen's element-wise operations, not the cpu
backend's C loops).

Sections that would not fit in ``--budget`` seconds are skipped and listed. ``--write-result`` writes
``benchmarks/results/gpu_check.json`` (``gpu_check_reduced.json`` in reduced mode), task ``gpu``.

    python benchmarks/gpu_check.py --write-result
    python benchmarks/gpu_check.py --device cpu
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
BACKEND = "fused"  # the backend of a GPU (on a CPU: ATen's element-wise work, as on a GPU)
for path in (HERE, HERE.parent):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from funcml.data.base import ArraySignalSet  # noqa: E402
from funcml.devices import to_device  # noqa: E402
from funcml.backends import Execution  # noqa: E402
from funcml.backends import precision as precision_mod  # noqa: E402
from funcml.encoders.config import EncodeConfig, FieldConfig, TrainConfig  # noqa: E402
from funcml.encoders.coords import make_grid  # noqa: E402
from funcml.latents.encode import encode_signal_set  # noqa: E402
from funcml.encoders.fitting import fit_latents  # noqa: E402
from funcml.encoders.meta import accumulate_meta_gradient, draw_subsets  # noqa: E402
from funcml.encoders.model import FieldModel  # noqa: E402
from funcml.encoders.presets import get_preset  # noqa: E402
from funcml.encoders.siren import ModulatedSiren  # noqa: E402
from funcml.encoders.trainer import MetaTrainer, apply_meta_update, compute_meta_gradient, make_optimizer  # noqa: E402
from funcml.seeding import epoch_batch, generator  # noqa: E402
from funcml.syncs import HostSyncOps, cuda_syncs  # noqa: E402

PRECISIONS = ("fp32", "tf32", "bf16")
SHAPES = {"image-64": (1, 64, 64), "ecg": (1, 187), "volume-32": (1, 32, 32, 32)}
REDUCED_SHAPES = {"image-64": (1, 8, 8), "ecg": (1, 16), "volume-32": (1, 4, 4, 4)}
REDUCED_ARCH = dict(width=16, depth=3, latent_dim=8)
REDUCED_TRAIN = dict(batch_size=4, inner_steps=2)


def log(message: str) -> None:
    print(f"[gpu_check] {message}", file=sys.stderr, flush=True)


def smooth_signals(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """``(n, *shape)`` float32 in [0, 1]: sums of three low-frequency cosines per signal."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s, dtype=np.float32) for s in shape[1:]], indexing="ij")
    out = np.empty((n, *shape), np.float32)
    for i in range(n):
        v = sum(np.cos(np.pi * sum(f * g for f, g in zip(rng.uniform(0.5, 2, len(grids)), grids))
                       + rng.uniform(0, np.pi)) for _ in range(3))
        out[i] = 0.5 + 0.15 * v
    return np.clip(out, 0, 1)


def signal_set(n: int, shape: tuple[int, ...]) -> ArraySignalSet:
    return ArraySignalSet(smooth_signals(n, shape), name="synthetic", spec=f"synthetic:{shape}",
                          splits=np.zeros(n, np.uint8), labels=None, task="none", label_names=None,
                          fingerprint=f"synthetic-{n}-{shape}")


def config(name: str, reduced: bool) -> tuple[FieldConfig, TrainConfig, tuple[int, ...]]:
    """A preset's field and train configuration (shrunk in reduced mode) and its signal shape."""
    shape = (REDUCED_SHAPES if reduced else SHAPES)[name]
    overrides = {**REDUCED_ARCH, **REDUCED_TRAIN} if reduced else {}
    field, train = get_preset(name).build(len(shape) - 1, shape[0], backend=BACKEND, **overrides)
    return field, train, shape


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_bytes(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


# -- equivalence -------------------------------------------------------------------------------------
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))


def equivalence(device: torch.device) -> dict:
    """Largest relative difference, fused against plain autograd: meta-gradient and encoded latents."""
    out = {}
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-3)):
        torch.manual_seed(0)
        cfg = FieldConfig(dim_in=2, channels=1, width=32, depth=5, latent_dim=16, omega_first=10.0, omega_last=60.0)
        net = ModulatedSiren(cfg, inner_lr=1e-2).to(device=device, dtype=dtype)
        x = torch.from_numpy(smooth_signals(6, (1, 16, 16), seed=1)).to(device=device, dtype=dtype)
        coords = make_grid((16, 16), device=device, dtype=dtype)
        subsets = draw_subsets(256, 0.25, 3, torch.Generator().manual_seed(5), device)
        enc = EncodeConfig(steps=5, inner_lr=1e-2, context_ratio=0.25)
        grads, latents = [], []
        with precision_mod.scoped("fp32", device):
            for backend in ("reference", BACKEND):
                net.zero_grad()
                accumulate_meta_gradient(net, coords, x, subsets, 1e-2, first_order=False, loss_scale=1 / 6,
                                         execution=Execution(backend=backend))
                latents.append(fit_latents(net, x, dataclasses.replace(enc, backend=backend, precision="fp32"),
                                           generator=torch.Generator().manual_seed(2)))
                grads.append([p.grad.detach().clone() for p in net.parameters()])
        grad_err = max(_rel(a, b) for a, b in zip(*grads))
        latent_err = _rel(*latents)
        out[str(dtype).replace("torch.", "")] = {"meta_gradient_rel_err": grad_err, "latents_rel_err": latent_err,
                                                 "tolerance": tol, "ok": grad_err < tol and latent_err < tol}
    return out


# -- meta-steps ----------------------------------------------------------------------------------------
def timed_steps(name: str, precision: str, steps: int, device: torch.device, reduced: bool,
                compile: bool = False) -> dict:
    """``steps`` meta-steps of the trainer's pieces (batch, subsets, meta-gradient, AdamW), each timed
    between two device synchronisations."""
    field, train, shape = config(name, reduced)
    train = dataclasses.replace(train, precision=precision, compile=compile)
    x_all = torch.from_numpy(smooth_signals(max(2 * train.batch_size, 8), shape)).to(device)
    torch.manual_seed(0)
    net = ModulatedSiren(field, inner_lr=train.inner_lr).to(device)
    params = list(net.parameters())
    optimizer = make_optimizer(params, train)
    coords = make_grid(shape[1:], device=device)
    times, losses = [], []
    peak_reset(device)
    with precision_mod.scoped(precision, device):
        for step in range(steps):
            sync(device)
            t0 = time.perf_counter()
            batch = x_all[to_device(epoch_batch(step, len(x_all), train.batch_size, 0), device)]
            subsets = draw_subsets(coords.shape[0], train.context_ratio, train.inner_steps,
                                   generator(0, "context", step), device)
            stats = compute_meta_gradient(net, optimizer, coords, batch, subsets, train)
            apply_meta_update(params, optimizer, train)
            sync(device)
            times.append(time.perf_counter() - t0)
            losses.append(float(stats.means()["loss_outer"]))
    timed = times[5:] if len(times) > 8 else times[1:] or times
    first, last = losses[:10], losses[-10:]
    return {"config": name, "precision": precision, "compile": compile, "steps": steps,
            "median_step_seconds": statistics.median(timed), "first_step_seconds": times[0],
            "max_memory_allocated": peak_bytes(device), "loss_first": statistics.mean(first),
            "loss_last": statistics.mean(last), "finite": all(math.isfinite(v) for v in losses),
            "not_diverging": statistics.mean(last) <= 1.05 * statistics.mean(first)}


def meta_steps(device: torch.device, reduced: bool, steps: int, budget: "Budget") -> list[dict]:
    rows = []
    for name in SHAPES:
        for precision in PRECISIONS:
            if not budget.allows(f"steps {name} {precision}"):
                continue
            log(f"{steps} steps of {name} at {precision}")
            try:
                rows.append(timed_steps(name, precision, steps, device, reduced))
            except torch.cuda.OutOfMemoryError as exc:
                rows.append({"config": name, "precision": precision, "error": f"out of memory: {exc}"[:200]})
    for row in rows:   # the lower precisions' loss against fp32 of the same configuration
        ref = next((r for r in rows if r["config"] == row["config"] and r["precision"] == "fp32" and "error" not in r),
                   None)
        if ref is not None and "error" not in row:
            row["loss_vs_fp32"] = row["loss_last"] / ref["loss_last"] - 1.0
            row["speedup_vs_fp32"] = ref["median_step_seconds"] / row["median_step_seconds"]
    return rows


# -- encoding, syncs ---------------------------------------------------------------------------------
def encoding(device: torch.device, reduced: bool, budget: "Budget") -> list[dict]:
    """Encode throughput of an (untrained) ``image-64`` model: signals/s and host syncs per chunk."""
    field, train, shape = config("image-64", reduced)
    n, batch = (16, 4) if reduced else (512, 64)
    signals = signal_set(n, shape)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = FieldModel(ModulatedSiren(field, inner_lr=train.inner_lr), shape,
                           EncodeConfig(steps=train.test_steps, inner_lr=train.inner_lr,
                                        context_ratio=train.context_ratio, batch_size=batch, backend=BACKEND))
        model.save(Path(tmp) / "m")
        model = FieldModel.load(Path(tmp) / "m", device=device)
        for k, precision in enumerate(("auto", "fp32")):
            if not budget.allows(f"encode {precision}"):
                continue
            log(f"encoding {n} image-64 signals at {precision}")
            with count_syncs(device) as syncs:
                cfg = dataclasses.replace(model.encode_defaults, precision=precision)
                _, stats = encode_signal_set(model, signals, Path(tmp) / f"lat{k}", cfg, model_dir=Path(tmp) / "m",
                                             progress=False)
            rows.append({"precision": precision, "signals": n, "batch_size": batch, "steps_H": train.test_steps,
                         "signals_per_second": stats["signals_per_second"], "syncs": syncs.kinds,
                         "syncs_per_chunk": syncs.count / -(-n // batch), "psnr_mean": stats["psnr_mean"]})
    return rows


class count_syncs:
    """Host-device synchronisations in a block: on CUDA torch's sync warnings plus explicit
    ``torch.cuda.synchronize`` calls; on a CPU the operations that would synchronise on a GPU."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.count, self.kinds, self.sites = device, 0, {}, Counter()

    def __enter__(self) -> "count_syncs":
        if self.device.type == "cuda":
            self._explicit, self._real = [], torch.cuda.synchronize
            torch.cuda.synchronize = lambda *a, **k: (self._explicit.append(1), self._real(*a, **k))[1]
            self._ctx = cuda_syncs()
            self._found = self._ctx.__enter__()
        else:
            self._ops = HostSyncOps().__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self._ctx.__exit__(*exc)
            torch.cuda.synchronize = self._real
            self.kinds = {"sync_debug_warnings": len(self._found), "torch.cuda.synchronize": len(self._explicit)}
            self.sites = self._found.sites + Counter({"torch.cuda.synchronize": len(self._explicit)})
        else:
            self._ops.__exit__(*exc)
            self.kinds = dict(self._ops.counts)
        self.count = sum(self.kinds.values())


def trainer_syncs(device: torch.device, reduced: bool) -> dict:
    """Synchronisations of ``MetaTrainer`` per meta-step: (count over 12 steps - over 2) / 10."""
    field, train, shape = config("image-64", reduced)
    signals = signal_set(2 * train.batch_size, shape)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        for steps in (2, 12):
            cfg = dataclasses.replace(train, steps=steps, val_every=0, checkpoint_every=1000, log_every=10)
            with count_syncs(device) as syncs:
                MetaTrainer(field, cfg, signals, Path(tmp) / f"m{steps}", device, progress=False).run()
            counts[steps] = syncs
    per_step = (counts[12].count - counts[2].count) / 10
    sites = {site: n / 10 for site, n in (counts[12].sites - counts[2].sites).most_common(8)}
    return {"config": "image-64", "precision": "auto", "syncs_2_steps": counts[2].kinds,
            "syncs_12_steps": counts[12].kinds, "syncs_per_step": per_step, "sites_per_step": sites,
            "counted_as": "torch sync warnings + torch.cuda.synchronize" if device.type == "cuda"
            else "operations that synchronise on a GPU (reduced mode)"}


# -- the whole check -----------------------------------------------------------------------------------
class Budget:
    """Wall-time budget: a section runs only while the elapsed time is under the budget."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.t0, self.skipped = seconds, time.perf_counter(), []

    def allows(self, what: str) -> bool:
        if time.perf_counter() - self.t0 < self.seconds:
            return True
        self.skipped.append(what)
        return False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


def section(name: str, fn, *args):
    """``fn(*args)``, or ``{"error": ...}`` when it fails (one failing section keeps the others' numbers)."""
    log(name)
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported in the JSON, the check goes on
        log(f"{name} failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def compile_section(device: torch.device, reduced: bool, compile_steps: int, steps_rows) -> dict:
    compiled = timed_steps("image-64", "tf32", compile_steps, device, reduced, compile=True)
    eager = next((r for r in steps_rows if isinstance(r, dict) and r.get("config") == "image-64"
                  and r.get("precision") == "tf32" and "error" not in r), None) if isinstance(steps_rows, list) else None
    compiled["eager_median_step_seconds"] = eager["median_step_seconds"] if eager else None
    return compiled


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv")


def _self_time(event, device: torch.device) -> float:
    """An averaged profiler event's own time in microseconds, on the GPU (CPU in reduced mode)."""
    if device.type != "cuda":
        return float(event.self_cpu_time_total)
    return float(getattr(event, "self_device_time_total", None) or getattr(event, "self_cuda_time_total", 0.0))


def profile_section(device: torch.device, reduced: bool, steps: int = 4) -> dict:
    """Where a tf32 ``image-64`` meta-step spends its device time: per step the device time, the share of
    matrix products (``aten::mm`` and kin), the number of kernel launches, and the five operators that take
    most (on a CPU the same from the operators' CPU time)."""
    from torch.profiler import ProfilerActivity, profile

    timed_steps("image-64", "tf32", 2, device, reduced)  # warm-up: allocator, cuBLAS handles
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        timed_steps("image-64", "tf32", steps, device, reduced)
        wall = time.perf_counter() - t0
    ops = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(_self_time(e, device) for e in ops) or 1.0
    matmul = sum(_self_time(e, device) for e in ops if e.key in MATMUL_OPS)
    kernels = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    top = sorted(ops, key=lambda e: _self_time(e, device), reverse=True)[:5]
    return {"config": "image-64", "precision": "tf32", "steps": steps, "wall_ms_per_step": 1e3 * wall / steps,
            "busy_ms_per_step": total / 1e3 / steps, "matmul_share": matmul / total,
            "kernel_launches_per_step": sum(e.count for e in kernels) / steps if kernels else None,
            "top_ops": {e.key: round(_self_time(e, device) / total, 3) for e in top},
            "timed_on": "GPU kernels" if device.type == "cuda" else "CPU operators (reduced mode)"}


def run(device: torch.device, reduced: bool, steps: int, budget: Budget, compile_steps: int) -> dict:
    results: dict = {"device": str(device), "reduced": reduced, "gpu": torch.cuda.get_device_name(device)
                     if device.type == "cuda" else None}
    results["equivalence"] = section("fused against autograd", equivalence, device)
    if budget.allows("syncs"):
        results["syncs"] = section("syncs per meta-step of MetaTrainer", trainer_syncs, device, reduced)
    results["steps"] = section("meta-steps", meta_steps, device, reduced, steps, budget)
    results["encode"] = section("encoding", encoding, device, reduced, budget)
    if budget.allows("profile"):
        results["profile"] = section("profile of an image-64 tf32 meta-step", profile_section, device, reduced)
    if reduced:
        results["compile"] = {"skipped": "reduced mode (compiling takes minutes on a CPU)"}
    elif budget.allows("compile"):
        results["compile"] = section(f"{compile_steps} compiled steps of image-64 at tf32", compile_section, device,
                                     reduced, compile_steps, results["steps"])
    results["skipped"] = budget.skipped
    results["seconds"] = budget.elapsed
    return clean(results)


def clean(obj):
    """JSON-safe: non-finite floats become None."""
    if isinstance(obj, dict):
        return {k: clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def tables(results: dict) -> list:
    from results import table

    rows = results["steps"] if isinstance(results["steps"], list) else []
    steps = [[r["config"], r["precision"], round(r["median_step_seconds"], 4),
              round((r["max_memory_allocated"] or 0) / 2**30, 2), round(r.get("speedup_vs_fp32") or 1.0, 2),
              f"{r['loss_last']:.3g}", bool(r["finite"] and r["not_diverging"])]
             for r in rows if "error" not in r]
    enc = [[r["precision"], r["signals"], r["steps_H"], round(r["signals_per_second"], 1), r["syncs_per_chunk"]]
           for r in (results["encode"] if isinstance(results["encode"], list) else [])]
    prof, syncs = results.get("profile") or {}, results.get("syncs") or {}
    where = [["syncs per meta-step (MetaTrainer)", syncs.get("syncs_per_step")],
             *[[f"  at {site}", n] for site, n in (syncs.get("sites_per_step") or {}).items()],
             ["image-64 tf32: busy ms per step", _round(prof.get("busy_ms_per_step"))],
             ["image-64 tf32: wall ms per step (profiled)", _round(prof.get("wall_ms_per_step"))],
             ["image-64 tf32: share of matrix products", _round(prof.get("matmul_share"), 3)],
             ["image-64 tf32: kernel launches per step", _round(prof.get("kernel_launches_per_step"))]]
    return [table("Meta-steps (synthetic signals of the presets' shapes)",
                  ["config", "precision", "median s/step", "peak GB", "x fp32", "loss", "sane"], steps),
            table("Encoding (image-64, untrained model)", ["precision", "signals", "H", "signals/s", "syncs/chunk"],
                  enc),
            table("Where a meta-step waits and spends its time", ["measure", "value"], where)]


def _round(value, digits: int = 1):
    return None if value is None else round(float(value), digits)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="cuda, cpu (reduced mode) or auto")
    ap.add_argument("--steps", type=int, default=None, help="meta-steps per configuration (40; reduced: 4)")
    ap.add_argument("--compile-steps", type=int, default=15)
    ap.add_argument("--budget", type=float, default=270.0, help="seconds before remaining sections are skipped")
    ap.add_argument("--write-result", action="store_true", help="write benchmarks/results/gpu_check*.json")
    args = ap.parse_args(argv)
    name = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    reduced = device.type != "cuda"
    steps = args.steps or (4 if reduced else 40)
    results = run(device, reduced, steps, Budget(args.budget), args.compile_steps)
    print(json.dumps(results, sort_keys=True, default=float, allow_nan=False))
    if args.write_result:
        from results import write_result

        notes = ("reduced mode on a CPU: tiny configurations; timings mean nothing" if reduced else
                 "one GPU, synthetic smooth signals of the presets' shapes; step times between two synchronisations")
        write_result("gpu_check_reduced" if reduced else "gpu_check", results, task="gpu", tables=tables(results),
                     notes=notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
