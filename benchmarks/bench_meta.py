"""funcml vs the official MedFuncta code, side by side: meta-step time, peak memory, encoding.

Every measurement runs in its own child process (so that peak RSS belongs to one implementation
and one phase); children of all implementations are interleaved round by round in one run, on
the same random data, the same initial weights (copied into the official model), the same context
subsets and the same seeds. Reported per configuration:

* meta-step: median wall time of ``--steps`` steps after ``--warmup`` (a full update: inner loop,
  outer loss, backward, clipping, AdamW), peak memory (CPU: peak RSS of the child, and its rise
  above the RSS before the first step; CUDA: ``max_memory_allocated``), the outer-loss trajectory
  (its largest relative deviation from the official one is printed: same math), counted FLOPs
  (``torch.utils.flop_counter`` on one extra step) and FLOP efficiency = FLOPs / time / the dense
  matmul rate measured in the same run with the same threads;
* encoding: signals per second for H test-time steps (official: ``inner_adapt_test_scale``;
  funcml: ``fit_latents``), and the largest deviation of the latents from the official ones.

Implementations: ``official``; ``autograd`` (funcml with its plain double-backward path, i.e. the
foundation's code); ``funcml`` (fused kernels, as shipped: automatic micro-batches on CPU) and
variants ``funcml+mbN`` (micro-batches of N), ``funcml+full`` (the whole batch in one pass),
``funcml+recompute``, ``funcml+compile``, ``funcml+bf16``, ``funcml+tf32``, ``funcml+noshared``
(the first inner step computed per signal instead of on one shared field), ``funcml+layers``
(the cpu backend with encoding and first-order loops layer by layer over cache-sized groups of
signals instead of its tiled pass, :mod:`funcml.backends.tiled`: ``FUNCML_TILED=0``) and
``funcml+atenloops`` (the ``fused`` backend: ATen's element-wise operations instead of the cpu
backend's C loops, :mod:`funcml.backends.native`, and no tiled pass: the shift added by
``baddbmm``, separate ``sin`` and ``cos``, separate product and sums); ``floor`` (encoding only):
just the matmuls and sine/cosine that the layer-by-layer encode cannot avoid, timed alone
(:func:`floor_encode`): an upper bound on the throughput of that path (``floor+atenloops``: with
ATen's ``sin`` and ``cos``). The tiled pass goes beyond it: its matmuls read their operands from the
core's cache instead of memory. ``autograd`` is the ``reference`` backend, ``funcml`` the default
(``auto``). A checkout from before :mod:`funcml.backends` (``bench_checkouts.py``) is run through its
own switches (``plain_autograd``, ``execution``, ``FUNCML_FUSED_LOOPS``).

Memory: *peak RSS* is the child's whole life (imports, warm-up, compilation included); *steady
peak* starts after the warm-up (meta-step: after ``--warmup`` steps; encoding: after the first
batch), i.e. what a long run needs once it is under way (CPU: VmHWM reset through
``/proc/self/clear_refs``; CUDA: ``reset_peak_memory_stats``).

Allocators (``--allocators``): ``default`` runs each implementation as shipped (official: glibc
malloc; funcml: glibc with :func:`funcml.allocator.tune_glibc_malloc`, as its trainer and encoder
do), ``glibc`` untuned for both, ``tuned`` the funcml tuning for both, ``tcmalloc`` preloaded for
both. ``--omp-wait-policy`` sets ``OMP_WAIT_POLICY`` of the children: ``default`` leaves the
environment as it is (unset: what a user gets), ``passive`` (threads sleep between parallel regions:
use it on a loaded, shared CPU, where a spinning thread waiting for a descheduled sibling made
2-thread steps up to 7x slower) or ``active``.

Prerequisites: the official code checked out outside the repository (never committed)::

    git clone https://github.com/pfriedri/medfuncta /tmp/medfuncta
    .venv/bin/pip install einops pyyaml      # the official code's imports; not funcml dependencies

then point ``--official`` (or ``MEDFUNCTA_DIR``) at it; without it only funcml runs. For the
tcmalloc columns install ``libtcmalloc-minimal4`` (Debian) and pass ``--allocators glibc,tcmalloc``.

The run ends with ``benchmarks/results/RESULT.json`` (``--result``, default ``bench-meta``; see
``results.py``), whose table the benchmarks page shows.

Example (the reference configuration)::

    nice -n 10 python benchmarks/bench_meta.py --configs ref-28 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TCMALLOC_CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4",
                       "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")

# name: (preset, spatial, batch override, encode batch, note)
CONFIGS = {
    "ref-28": (None, (28, 28), 32, 32, "issue's measurement: 28x28 grey, depth 8, width 128, P 256, G 3, gamma .25"),
    "ref-28-d6": (None, (28, 28), 32, 32, "ref-28 at depth 6 and omega 20-60 (the field of the first cpu-image preset): "
                                          "fixed, unlike the presets, so that older checkouts run the same network"),
    "cpu-image": ("cpu-image", (28, 28), None, 32, "CPU preset"),
    "cpu-ecg": ("cpu-ecg", (187,), None, 32, "CPU preset"),
    "cpu-volume": ("cpu-volume", (16, 16, 16), None, 4, "CPU preset"),
    "ecg": ("ecg", (187,), None, 64, "paper 1D preset"),
    "image-64": ("image-64", (64, 64), 2, 8, "paper 2D preset, batch 24 -> 2 on CPU"),
    "volume-32": ("volume-32", (32, 32, 32), 1, 1, "paper 3D preset, batch 4 -> 1 on CPU"),
}

# the fixed configurations' (preset None) depth and last omega; the rest as ref-28 (width 128, P 256)
FIXED_FIELDS = {"ref-28": {"depth": 8, "omega_last": 400.0}, "ref-28-d6": {"depth": 6, "omega_last": 60.0}}


def build_config(name: str):
    """``(FieldConfig, TrainConfig, spatial, encode_batch)`` of a benchmark configuration."""
    from funcml.encoders.config import FieldConfig, TrainConfig
    from funcml.encoders.presets import get_preset

    preset, spatial, batch, enc_batch, _ = CONFIGS[name]
    if preset is None:
        field = FieldConfig(dim_in=2, channels=1, width=128, latent_dim=256, omega_first=20.0, **FIXED_FIELDS[name])
        train = TrainConfig(batch_size=batch, inner_steps=3, inner_lr=1e-2, context_ratio=0.25, outer_lr=3e-6)
        return field, train, spatial, enc_batch
    p = get_preset(preset)
    field, train = p.build(len(spatial), 1, batch_size=batch)
    return field, train, spatial, enc_batch


def parse_impl(spec: str) -> dict:
    """``funcml+mb8+compile`` -> options."""
    parts = spec.split("+")
    opts = {"kind": parts[0], "micro": None, "recompute": False, "compile": False, "precision": "fp32",
            "shared_first": True, "aten_loops": False, "layers": False}
    if opts["kind"] not in ("official", "autograd", "funcml", "floor"):
        raise SystemExit(f"unknown implementation {spec!r}")
    for p in parts[1:]:
        if p.startswith("mb"):
            opts["micro"] = int(p[2:])
        elif p == "recompute":
            opts["recompute"] = True
        elif p == "compile":
            opts["compile"] = True
        elif p in ("bf16", "tf32"):
            opts["precision"] = p
        elif p == "noshared":
            opts["shared_first"] = False
        elif p == "full":
            opts["micro"] = -1  # the whole batch in one pass
        elif p == "atenloops":
            opts["aten_loops"] = True
        elif p == "layers":
            opts["layers"] = True
        else:
            raise SystemExit(f"unknown modifier {p!r} in {spec!r}")
    return opts


# -- child side ---------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_bytes(device) -> int:
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _reset_steady_peak(device) -> None:
    """Start the steady-state peak here (after warm-up and any compilation): CUDA's peak statistics,
    or the kernel's VmHWM of this process (``/proc/self/clear_refs``, Linux >= 4.0)."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _steady_peak_bytes(device) -> int | None:
    """Peak since :func:`_reset_steady_peak` (CPU: VmHWM), or None where the kernel has no VmHWM."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def execution_of(opts: dict, device):
    """``(context, config overrides)`` that run the implementation ``opts``: the backend, precision and
    compile fields of the configurations and CUDA's TF32 scope; for a checkout from before
    :mod:`funcml.backends`, its global switches."""
    import contextlib

    import funcml

    # an older checkout (bench_checkouts.py); not found by importing: an editable install of a newer
    # funcml would answer for a subpackage the checkout lacks
    if not (Path(funcml.__file__).parent / "backends").is_dir():
        from funcml.encoders import fused

        ctx = contextlib.ExitStack()
        if opts["kind"] == "autograd":
            ctx.enter_context(fused.plain_autograd())
        ctx.enter_context(fused.execution(compile=opts["compile"], precision=opts["precision"], device=device,
                                          shared_first=opts["shared_first"]))
        return ctx, {}
    from funcml.backends import precision

    backend = "reference" if opts["kind"] == "autograd" else "fused" if opts["aten_loops"] else "auto"
    return precision.scoped(opts["precision"], device), {"backend": backend, "precision": opts["precision"],
                                                         "compile": opts["compile"]}


def child(job: dict) -> dict:
    import torch

    torch.set_num_threads(job["threads"])
    if job["phase"] == "matmul":
        return matmul_rate(job)
    from funcml.encoders.coords import make_grid
    from funcml.encoders.siren import ModulatedSiren

    device = torch.device(job["device"])
    field, train, spatial, enc_batch = build_config(job["config"])
    opts = parse_impl(job["impl"])
    if opts["aten_loops"]:
        os.environ["FUNCML_FUSED_LOOPS"] = "0"  # older checkouts (now: the fused backend, see execution_of)
    if opts["layers"]:
        os.environ["FUNCML_TILED"] = "0"  # the default of funcml.backends.Execution.tiled
    if job["alloc"] == "tuned" or (job["alloc"] == "default" and opts["kind"] != "official"):
        from funcml.allocator import tune_glibc_malloc

        tune_glibc_malloc()  # what the funcml command does
    if opts["micro"]:
        import dataclasses

        micro = train.batch_size if opts["micro"] < 0 else opts["micro"]
        train = dataclasses.replace(train, micro_batch_size=micro)
    torch.manual_seed(0)
    net = ModulatedSiren(field, inner_lr=train.inner_lr).to(device)
    coords = make_grid(spatial, device=device)
    official = None
    if opts["kind"] == "official":
        sys.path.insert(0, str(HERE))
        from official import Official

        batch = train.batch_size if job["phase"] == "train" else enc_batch
        official = Official(Path(job["official"]), net, (1, *spatial), batch, train.inner_lr, train.inner_steps,
                            train.context_ratio, device=str(device))
    ctx, overrides = execution_of(opts, device)
    import funcml

    with ctx:
        if job["phase"] == "train":
            res = train_child(job, net, official, coords, train, spatial, device, opts, overrides)
        else:
            res = encode_child(job, net, official, train, spatial, enc_batch, device, overrides)
    return {**res, "funcml_file": funcml.__file__}


def train_child(job, net, official, coords, train, spatial, device, opts, overrides) -> dict:
    import torch

    from funcml.encoders.meta import draw_subsets
    from funcml.encoders.trainer import apply_meta_update, compute_meta_gradient
    from funcml.seeding import generator

    try:
        from funcml.encoders.trainer import make_optimizer
    except ImportError:  # a checkout from before it (bench_checkouts.py): the plain AdamW it trained with
        def make_optimizer(params, cfg):
            return torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay)

    cfg = train
    import dataclasses

    cfg = dataclasses.replace(cfg, recompute=opts["recompute"], **overrides)
    meta_gradient = compute_meta_gradient
    if overrides and not opts["shared_first"]:  # the trainer's step with the shared first step switched off
        meta_gradient = _without_shared_first_step(cfg)
    b = cfg.batch_size
    x = torch.rand(b, 1, *spatial, generator=torch.Generator().manual_seed(1)).to(device)
    n_coords = coords.shape[0]
    params = list(official.parameters()) if official else list(net.parameters())
    # each implementation's own optimizer: plain AdamW in the official train.py, funcml's fused one
    optimizer = (torch.optim.AdamW(params, lr=cfg.outer_lr, weight_decay=cfg.weight_decay) if official
                 else make_optimizer(params, cfg))

    def subsets_for(step):
        subs = draw_subsets(n_coords, cfg.context_ratio, cfg.inner_steps, generator(0, "context", step), device)
        if official:  # the official sampler always returns indices (all of them for gamma = 1)
            subs = [torch.arange(n_coords, device=device) if s is None else s for s in subs]
        return subs

    def step(k):
        subs = subsets_for(k)
        if official:
            return official.meta_step(x, subs, optimizer)
        stats = meta_gradient(net, optimizer, coords, x, subs, cfg)
        apply_meta_update(params, optimizer, cfg)
        return stats.means()["loss_outer"]

    base = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu, losses = [], [], []
    pre_peak = 0
    for k in range(job["warmup"] + job["steps"]):
        if k == job["warmup"]:
            pre_peak = _peak_bytes(device)
            _reset_steady_peak(device)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(step(k))
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    steady = _steady_peak_bytes(device)
    peak = max(pre_peak, _peak_bytes(device))
    flops = None
    if job.get("flops"):
        with MatmulFlops() as counter:
            step(job["warmup"] + job["steps"])
        flops = int(counter.total)
    timed = times[job["warmup"]:]
    dense = matmul_rate(job)["flops_per_s"]  # same process, same threads, right after the steps
    return {"median_s": statistics.median(timed), "times": timed, "losses": losses, "peak_bytes": peak,
            "steady_peak_bytes": steady, "base_bytes": base, "flops": flops, "dense_flops_per_s": dense,
            "cpu_s": statistics.median(cpu[job["warmup"]:])}


def _without_shared_first_step(cfg):
    """:func:`funcml.encoders.trainer.compute_meta_gradient` with ``Execution.shared_first`` off."""
    import dataclasses

    from funcml.backends import Execution
    from funcml.encoders.meta import accumulate_meta_gradient
    from funcml.encoders.trainer import auto_micro_batch

    def meta_gradient(net, optimizer, coords, x, subsets, cfg):
        optimizer.zero_grad(set_to_none=True)
        micro = cfg.micro_batch_size or auto_micro_batch(net.config, cfg, coords.shape[0], x.shape[0], x.device)
        execution = dataclasses.replace(Execution.of(cfg, x.device), shared_first=False)
        return accumulate_meta_gradient(net, coords, x, subsets, cfg.inner_lr, first_order=cfg.first_order,
                                        loss_scale=1.0 / cfg.batch_size, micro_batch_size=micro,
                                        recompute=cfg.recompute, execution=execution)
    return meta_gradient


def MatmulFlops():
    """A dispatch mode that adds up the FLOPs of every matmul (torch.utils.flop_counter's formulas;
    its FlopCounterMode cannot follow ``autograd.grad`` through double backward)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    inplace = {torch.ops.aten.addmm_: torch.ops.aten.mm, torch.ops.aten.baddbmm_: torch.ops.aten.bmm}

    class _Mode(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            packet = func._overloadpacket
            if packet in inplace:
                self.total += flop_registry[inplace[packet]](args[1], args[2], out_val=out)
            elif packet in flop_registry:
                self.total += flop_registry[packet](*args, **kwargs, out_val=out)
            return out

    return _Mode()


def encode_child(job, net, official, train, spatial, batch, device, overrides) -> dict:
    import numpy as np
    import torch

    from funcml.encoders.config import EncodeConfig
    from funcml.encoders.coords import sample_context
    from funcml.encoders.fitting import fit_latents
    from funcml.seeding import generator

    steps = job["encode_steps"]
    n_batches = job["encode_batches"]
    x = torch.rand(n_batches * batch, 1, *spatial, generator=torch.Generator().manual_seed(2)).to(device)
    cfg = EncodeConfig(steps=steps, inner_lr=train.inner_lr, context_ratio=train.context_ratio, grad_rescale=True,
                       batch_size=batch, **overrides)
    n_coords = int(np.prod(spatial))
    base = _rss_bytes()
    times, cpu, first, pre_peak = [], [], None, 0
    for k in range(n_batches):
        xb = x[k * batch:(k + 1) * batch]
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        if k == 1:
            pre_peak = _peak_bytes(device)
            _reset_steady_peak(device)
        if job["impl"].startswith("floor"):
            phi = floor_encode(net, xb, steps, device, fused_sincos=not parse_impl(job["impl"])["aten_loops"])
        elif official:
            g = generator(0, "encode", k)
            subs = [sample_context(n_coords, cfg.context_ratio, g, device) for _ in range(steps)]
            subs = [torch.arange(n_coords, device=device) if s is None else s for s in subs]
            phi = official.encode(xb, subs, steps)
        else:
            phi = fit_latents(net, xb, cfg, generator=generator(0, "encode", k))
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if k == 0 and phi is not None:
            first = phi.detach().cpu()
    timed = times[1:] if len(times) > 1 else times
    cpu = cpu[1:] if len(cpu) > 1 else cpu
    out = None
    if first is not None:
        out = Path(job["scratch"]) / f"latents-{job['config']}-{job['impl']}-{job['alloc']}.pt"
        torch.save(first, out)
    return {"signals_per_s": batch * len(timed) / sum(timed), "cpu_signals_per_s": batch * len(cpu) / sum(cpu),
            "times": timed, "steady_peak_bytes": _steady_peak_bytes(device),
            "peak_bytes": max(pre_peak, _peak_bytes(device)),
            "base_bytes": base, "latents_file": None if out is None else str(out)}


def floor_encode(net, signals, steps: int, device, fused_sincos: bool = True) -> None:
    """The work an exact float32 encode of ``signals`` cannot avoid with these kernels, timed alone.

    Per test-time step (but the first where funcml runs it once on a field shared by the batch, see
    :meth:`funcml.backends.FusedBackend.shared_first_grads`): each sine layer's sine and cosine of its
    pre-activations (the forward needs one, the latent gradient the other) and each hidden layer's
    two matmuls (forward, and the backward to the previous layer), in the same cache-sized passes of
    signals as the layer-by-layer path of :meth:`funcml.backends.FusedBackend.latent_grads`, on the
    network's real pre-activations at phi = 0; nothing else (no shifts, residual sums, loss,
    reductions, projections or output layer). Its throughput is an upper bound for any exact
    closed-form float32 encode that runs layer by layer on ATen's matmuls with funcml's one-pass sine
    and cosine (:mod:`funcml.backends.native`; ``fused_sincos=False``: ATen's separate ``sin``
    and ``cos``, the ``floor+atenloops`` row) on this machine; the tiled pass
    (:mod:`funcml.backends.tiled`) is not bound by it."""
    import torch

    from funcml.backends import Execution, backend_for, kernels, native
    from funcml.backends.backend import cache_chunk
    from funcml.backends.fused import flat_params
    from funcml.backends.ops import AtenOps
    from funcml.encoders.coords import make_grid

    aten = AtenOps()
    ops = native.NativeOps(lib=native.library()) if fused_sincos and native.available() else aten

    b, spatial = signals.shape[0], tuple(signals.shape[2:])
    params = tuple(flat_params(net))
    omegas = tuple(net.omegas[:net.num_sine_layers])
    with torch.no_grad():
        coords = make_grid(spatial, device=device)
        n, width = coords.shape[0], net.config.width
        chunk = cache_chunk(b, n, width, device)
        h, sigma, wps, _ = kernels.prepare(params, omegas, coords, signals.new_zeros(1, net.config.latent_dim))
        pre, x = [], None
        for k in range(len(omegas)):
            u = (h.unsqueeze(0) + sigma[:, 0:1]) if k == 0 else aten.linear_shift(x, wps[k].t(), sigma[:, k:k + 1])
            pre.append(u.expand(chunk, n, width).reshape(chunk * n, width).contiguous())
            x = torch.sin(u) if x is None else x + torch.sin(u)
        sbuf, cbuf, mbuf = (torch.empty(chunk * n, width, device=device) for _ in range(3))
        wts = [None] + [w.t().contiguous() for w in wps[1:]]
        full_steps = steps - 1 if backend_for(Execution(), device).shared_first_grads(net, b, n) else steps
        for _ in range(full_steps):
            for start in range(0, b, chunk):
                rows = min(chunk, b - start) * n
                s, c, m = sbuf[:rows], cbuf[:rows], mbuf[:rows]
                for k in range(len(omegas)):
                    ops.sin_cos_into(pre[k][:rows], s, c)
                    if k + 1 < len(omegas):
                        torch.mm(s, wts[k + 1], out=m)
                for k in range(len(omegas) - 1, 0, -1):
                    torch.mm(c, wps[k], out=m)
    _sync(device)
    return None


def matmul_rate(job: dict) -> dict:
    """Dense float32 matmul rate (FLOP/s): 2048^3 products, median of 7."""
    import torch

    device = torch.device(job["device"])
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    torch.mm(a, b)
    rates = []
    for _ in range(7):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        rates.append(2 * 2048 ** 3 / (time.perf_counter() - t0))
    return {"flops_per_s": statistics.median(rates)}


# -- parent side --------------------------------------------------------------------------------------
def run_child(job: dict, alloc: str, timeout: float) -> dict:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(job["threads"])
    policy = job.get("omp_wait_policy", "default")
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy.upper()
    env["FUNCML_MALLOC_TUNE"] = "1" if alloc in ("default", "tuned") else "0"
    if job.get("pythonpath"):  # import funcml from another checkout (benchmarks/bench_checkouts.py)
        env["PYTHONPATH"] = job["pythonpath"]
    if alloc == "tcmalloc":
        lib = next((p for p in TCMALLOC_CANDIDATES if Path(p).exists()), None)
        if lib is None:
            return {"error": "libtcmalloc_minimal.so.4 not found"}
        env["LD_PRELOAD"] = lib
    try:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                              capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {proc.returncode}: {' | '.join(tail)}"}
    return json.loads(lines[-1])


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", default="ref-28", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--impls", default="official,autograd,funcml", help="comma list (see the module docstring)")
    ap.add_argument("--phases", default="train,encode")
    ap.add_argument("--allocators", default="default",
                    help="comma list of: default (as shipped: official with glibc malloc, funcml with its "
                         "glibc tuning), glibc (untuned for both), tuned (funcml's tuning for both), tcmalloc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of every child")
    ap.add_argument("--steps", type=int, default=5, help="timed meta-steps per child")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--encode-steps", type=int, default=20, help="H")
    ap.add_argument("--encode-batches", type=int, default=3, help="batches per child (the first is warm-up)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--omp-wait-policy", choices=("default", "passive", "active"), default="default",
                    help="OMP_WAIT_POLICY of the children (default: the environment's; passive on a shared, loaded CPU)")
    ap.add_argument("--official", default=None, help="official checkout (default $MEDFUNCTA_DIR or /tmp/medfuncta)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per child")
    ap.add_argument("--json", default=None, help="write all results here")
    ap.add_argument("--result", default="bench-meta", help="name of the result file in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))), flush=True)
        return 0

    sys.path.insert(0, str(HERE))
    from official import find_official

    root = find_official(args.official)
    impls = [s for s in args.impls.split(",") if s]
    if root is None and "official" in impls:
        print("official MedFuncta code not found (--official / MEDFUNCTA_DIR): running funcml only", file=sys.stderr)
        impls = [s for s in impls if s != "official"]
    allocs = args.allocators.split(",")
    scratch = tempfile.mkdtemp(prefix="funcml-bench-")
    base_job = {"threads": args.threads, "device": args.device, "official": str(root) if root else None,
                "steps": args.steps, "warmup": args.warmup, "encode_steps": args.encode_steps,
                "encode_batches": args.encode_batches, "scratch": scratch, "omp_wait_policy": args.omp_wait_policy}
    results: dict = {"machine": machine_info(args), "rows": []}
    mm = run_child({**base_job, "phase": "matmul", "impl": "funcml", "config": "ref-28", "alloc": allocs[0]},
                   allocs[0], 300)
    dense = mm.get("flops_per_s")
    results["dense_matmul_flops_per_s"] = dense
    print(f"dense float32 matmul (2048^3, {args.threads} threads): {dense / 1e9:.1f} GFLOP/s", file=sys.stderr)
    for config in args.configs.split(","):
        for phase in args.phases.split(","):
            runs: dict = {}
            for r in range(args.rounds):
                for alloc in allocs:
                    for impl in impls:
                        if impl.startswith("floor") and phase != "encode":
                            continue  # the floor is defined for encoding only
                        job = {**base_job, "config": config, "phase": phase, "impl": impl, "alloc": alloc,
                               "flops": r == 0 and phase == "train"}
                        t0 = time.time()
                        res = run_child(job, alloc, args.timeout)
                        runs.setdefault((impl, alloc), []).append(res)
                        print(f"  {config} {phase} {impl} {alloc} round {r + 1}: "
                              f"{res.get('error') or _short(res, phase)} ({time.time() - t0:.0f} s)", file=sys.stderr)
            results["rows"] += summarize(config, phase, runs)
    print_table(results["rows"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    from results import table, write_result

    title = f"{' and '.join(args.phases.split(','))} against the official code ({args.threads} threads)"
    import torch

    torch.set_num_threads(args.threads)  # the children's thread count, for the result's environment
    write_result(args.result, {k: v for k, v in results.items() if k != "rows"} | {"rows": [
        {k: v for k, v in r.items() if k not in ("losses", "latents_file")} for r in results["rows"]]},
                 task="performance", notes=args.notes, tables=[table(title, TABLE_COLUMNS, table_rows(results["rows"]))])
    return 0


def _short(res: dict, phase: str) -> str:
    if phase == "train":
        return f"{res['median_s']:.3f} s/step, peak {res['peak_bytes'] / 2**20:.0f} MB"
    return f"{res['signals_per_s']:.3g} signals/s, peak {res['peak_bytes'] / 2**20:.0f} MB"


def summarize(config: str, phase: str, runs: dict) -> list[dict]:
    import torch

    rows = []
    for (impl, alloc), rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        row = {"config": config, "phase": phase, "impl": impl, "alloc": alloc, "runs": len(ok),
               "error": rs[0].get("error") if not ok else None}
        if ok:
            row["peak_mb"] = _median([r["peak_bytes"] for r in ok]) / 2**20
            steady = _median([r.get("steady_peak_bytes") for r in ok])
            row["steady_mb"] = None if steady is None else steady / 2**20
            row["rise_mb"] = _median([r["peak_bytes"] - r["base_bytes"] for r in ok]) / 2**20
            if phase == "train":
                row["step_s"] = _median([r["median_s"] for r in ok])
                row["cpu_s"] = _median([r["cpu_s"] for r in ok])
                row["losses"] = ok[0]["losses"]
                flops = next((r["flops"] for r in ok if r.get("flops")), None)
                row["gflop_per_step"] = flops / 1e9 if flops else None
                row["dense_gflops"] = _median([r["dense_flops_per_s"] for r in ok]) / 1e9
                # counted FLOPs per second over the dense matmul rate measured in the same children
                row["flop_efficiency"] = (_median([flops / r["median_s"] / r["dense_flops_per_s"] for r in ok])
                                          if flops else None)
            else:
                row["signals_per_s"] = _median([r["signals_per_s"] for r in ok])
                row["cpu_signals_per_s"] = _median([r["cpu_signals_per_s"] for r in ok])
                row["latents_file"] = ok[0]["latents_file"]
        rows.append(row)
    ref = {r["alloc"]: r for r in rows if r["impl"] == "official" and not r["error"]}
    for row in rows:
        o = ref.get(row["alloc"])
        if row["error"] or o is None:
            continue
        row["peak_ratio"] = row["peak_mb"] / o["peak_mb"]
        if row.get("steady_mb") and o.get("steady_mb"):
            row["steady_ratio"] = row["steady_mb"] / o["steady_mb"]
        row["rise_ratio"] = row["rise_mb"] / o["rise_mb"]
        if phase == "train":
            row["time_ratio"] = row["step_s"] / o["step_s"]
            row["cpu_ratio"] = row["cpu_s"] / o["cpu_s"]
            row["loss_dev"] = max(abs(a - b) / abs(b) for a, b in zip(row["losses"], o["losses"]))
        else:
            row["throughput_ratio"] = row["signals_per_s"] / o["signals_per_s"]
            row["cpu_ratio"] = row["cpu_signals_per_s"] / o["cpu_signals_per_s"]
            if row["latents_file"] and o["latents_file"]:
                a, b = torch.load(row["latents_file"]), torch.load(o["latents_file"])
                row["latent_dev"] = float((a - b).abs().max() / b.abs().max())
    return rows


TABLE_COLUMNS = ["config", "phase", "implementation", "allocator", "wall time", "x official", "CPU x official",
                 "peak RSS MB", "x official", "steady peak MB", "x official", "rise MB", "x official", "deviation",
                 "GFLOP/step", "dense GFLOP/s", "FLOP eff."]


def table_rows(rows: list[dict]) -> list[list[str]]:
    """The summary rows as the cells of :data:`TABLE_COLUMNS`."""
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    cells = []
    for r in rows:
        if r["error"]:
            cells.append([r["config"], r["phase"], r["impl"], r["alloc"], r["error"]] + [""] * 12)
            continue
        if r["phase"] == "train":
            t, tr, dev = f"{r['step_s']:.3f} s/step", r.get("time_ratio"), r.get("loss_dev")
        else:
            t, tr, dev = f"{r['signals_per_s']:.3g} signals/s", r.get("throughput_ratio"), r.get("latent_dev")
        cells.append([r["config"], r["phase"], r["impl"], r["alloc"], t, fmt(tr, ".2f"), fmt(r.get("cpu_ratio"), ".2f"),
                      f"{r['peak_mb']:.0f}", fmt(r.get("peak_ratio"), ".2f"), fmt(r.get("steady_mb"), ".0f"),
                      fmt(r.get("steady_ratio"), ".2f"), f"{r['rise_mb']:.0f}", fmt(r.get("rise_ratio"), ".2f"),
                      fmt(dev, ".1e"), fmt(r.get("gflop_per_step"), ".1f"), fmt(r.get("dense_gflops"), ".0f"),
                      fmt(r.get("flop_efficiency"), ".0%")])
    return cells


def print_table(rows: list[dict]) -> None:
    print("| " + " | ".join(TABLE_COLUMNS) + " |")
    print("|" + "---|" * len(TABLE_COLUMNS))
    for cells in table_rows(rows):
        print("| " + " | ".join(cells) + " |")


def machine_info(args) -> dict:
    import platform

    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
            "device": args.device, "load_average": os.getloadavg()}


if __name__ == "__main__":
    sys.exit(main())
