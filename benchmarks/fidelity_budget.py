"""Fidelity per compute: test PSNR (and latent classification) that a CPU time budget buys, per configuration.

A budget of M minutes is expressed as a step count: ``steps = M * 60 / t_step``, where ``t_step`` is the
configuration's meta-step time with 2 threads on this 2-core machine: the fastest step of the data's
``base`` configuration measured so far (cached; the closest a shared machine gets to an idle one) times
the configuration's step-time ratio to ``base``, both timed side by side in the same process. Training then runs those steps with the
cosine schedule fitted to them, which is what ``funcml train --max-minutes M`` does on an idle machine,
so a result does not depend on the load while it ran; the load's wall time is recorded next to it.

Each run trains with :class:`funcml.encoders.trainer.MetaTrainer`, encodes the test split with the
model's H (``funcml encode``), and with ``--classify`` encodes every split and fits the latent
classifiers of ``funcml classify`` (MLP, the paper's MLP, RBF SVM; test accuracy and AUC). A run
writes ``WORK/DATA/CONFIG-Mm/run.json`` and is skipped when that exists (rerun to resume a search);
``report`` gathers the runs into ``benchmarks/results/fidelity_budget.json`` and the figure.

    nice -n 5 python benchmarks/fidelity_budget.py run --data breast28 --minutes 3 --configs base,msgd
    nice -n 5 python benchmarks/fidelity_budget.py run --data breast28 --minutes 20 --configs best --classify
    nice -n 5 python benchmarks/fidelity_budget.py classify --data breast28 --runs base-2m,msgd-p392-2m
    python benchmarks/fidelity_budget.py report
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

# threads that sleep between parallel regions: on a shared machine a spinning thread waiting for a
# descheduled sibling makes 2-thread steps several times slower (benchmarks/bench_meta.py)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import REPO, shared_data, table, write_result  # noqa: E402

# name -> (path under the shared data folder, resolution, preset)
DATA = {
    "breast28": ("medmnist/breastmnist.npz", None, "cpu-image"),
    "breast64": ("medmnist/breastmnist_64.npz", None, "cpu-image"),
    "pneumonia28": ("medmnist/pneumoniamnist_28_partial.npz", None, "cpu-image"),
    "mitbih": ("ecg/mitdb-ds1", (187,), "cpu-ecg"),
    "adrenal16": ("medmnist/adrenalmnist3d.npz", (16, 16, 16), "cpu-volume"),
    "adrenal28": ("medmnist/adrenalmnist3d.npz", (28, 28, 28), "cpu-volume"),
}

# The CPU presets as they were before this search (the runs' ``base``); CONFIGS change them.
PRESET_BEFORE: dict[str, dict] = {
    "cpu-image": {"latent_dim": 256, "meta_sgd": False, "omega_lr": False, "context_ratio": 0.25},
    "cpu-ecg": {"latent_dim": 64, "meta_sgd": False, "omega_lr": False},
}

# meta-SGD with the per-layer outer learning rates: what the ``msgd-...-omlr`` configurations share
MSGD_OMLR = {"meta_sgd": True, "omega_lr": True}
# name -> overrides of the data's preset as it was (``preset`` picks another one)
CONFIGS: dict[str, dict] = {
    "base": {},
    "msgd": {"meta_sgd": True},
    "lr1e-4": {"outer_lr": 1e-4},
    "msgd-lr1e-4": {"meta_sgd": True, "outer_lr": 1e-4},
    "msgd-p392": {"meta_sgd": True, "latent_dim": 392},
    "p392": {"latent_dim": 392},
    "g5": {"inner_steps": 5},
    "w192": {"width": 192},
    "d8": {"depth": 8},
    "b32": {"batch_size": 32},
    "gamma50": {"context_ratio": 0.5},
    "om30-90": {"omega_first": 30.0, "omega_last": 90.0},
    "fo-warm": {"first_order_warmup": 0.25},
    "clip0.1": {"grad_clip": 0.1},
    "omlr": {"omega_lr": True},
    "p93": {"latent_dim": 93},
    "msgd-p93": {"meta_sgd": True, "latent_dim": 93},
    "msgd-p93-w128": {"meta_sgd": True, "latent_dim": 93, "width": 128},
    "msgd-p93-om200": {"meta_sgd": True, "latent_dim": 93, "omega_last": 200.0},
    "msgd-omlr": dict(MSGD_OMLR),
    "msgd-p392-omlr": {**MSGD_OMLR, "latent_dim": 392},
    "msgd-p93-omlr": {**MSGD_OMLR, "latent_dim": 93},
    "msgd-p2048-omlr": {**MSGD_OMLR, "latent_dim": 2048},
    "msgd-p392-omlr-gamma50": {**MSGD_OMLR, "latent_dim": 392, "context_ratio": 0.5},
    "msgd-p392-omlr-gamma100": {**MSGD_OMLR, "latent_dim": 392, "context_ratio": 1.0},
    "msgd-p392-omlr-om120": {**MSGD_OMLR, "latent_dim": 392, "omega_last": 120.0},
    "msgd-p2048-omlr-gamma100": {**MSGD_OMLR, "latent_dim": 2048, "context_ratio": 1.0},
    "msgd-p392-omlr-om30-90": {**MSGD_OMLR, "latent_dim": 392, "omega_first": 30.0, "omega_last": 90.0},
    "msgd-p2048-omlr-om120": {**MSGD_OMLR, "latent_dim": 2048, "omega_last": 120.0},
    "msgd-p2048-omlr-w192": {**MSGD_OMLR, "latent_dim": 2048, "width": 192},
    "msgd-p2048-omlr-d10": {**MSGD_OMLR, "latent_dim": 2048, "depth": 10},
    "msgd-p2048-omlr-w256": {**MSGD_OMLR, "latent_dim": 2048, "width": 256},
    "msgd-p2048-omlr-w256-om120": {**MSGD_OMLR, "latent_dim": 2048, "width": 256, "omega_last": 120.0},
    "w256": {"width": 256},
    "om120": {"omega_last": 120.0},
}
WORK = REPO / "runs" / "fidelity"


def load(data: str):
    from funcml.data import load_signals

    path, resolution, _ = DATA[data]
    return load_signals(shared_data() / path, resolution=resolution)


def build(data: str, name: str, signals, steps: int):
    """(field, train) of configuration ``name`` for ``data`` over ``steps`` steps."""
    from funcml.encoders.presets import get_preset

    over = dict(CONFIGS[name])
    preset_name = over.pop("preset", DATA[data][2])
    over = {**PRESET_BEFORE.get(preset_name, {}), **over}
    preset = get_preset(preset_name)
    return preset.build(signals.dim, signals.channels, **{
        "steps": steps, "val_every": 0, "val_signals": 64, "checkpoint_every": 250, "log_every": 25, **over})


class StepTimer:
    """Meta-steps of one configuration on real batches, timed (for step-time ratios side by side)."""

    def __init__(self, field, train, signals) -> None:
        from funcml.encoders.coords import make_grid
        from funcml.encoders.siren import ModulatedSiren
        from funcml.encoders.trainer import make_optimizer, param_groups

        self.train, self.signals = train, signals
        self.net = ModulatedSiren(field, inner_lr=train.inner_lr)
        self.opt = make_optimizer(param_groups(self.net, train), train)
        self.idx = signals.indices("train")
        self.coords = make_grid(signals.spatial_shape)
        self.k = 0

    def times(self, steps: int, threads: int = 2) -> list[float]:
        from funcml.backends import precision
        from funcml.encoders.meta import draw_subsets
        from funcml.encoders.trainer import apply_meta_update, compute_meta_gradient
        from funcml.seeding import epoch_batch, generator

        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        out, tr = [], self.train
        try:
            with precision.scoped("fp32", torch.device("cpu")):
                for _ in range(steps):
                    x = torch.from_numpy(self.signals.get(self.idx[epoch_batch(self.k, len(self.idx), tr.batch_size, 0)]))
                    subsets = draw_subsets(self.coords.shape[0], tr.context_ratio, tr.inner_steps,
                                           generator(0, "context", self.k))
                    t0 = time.perf_counter()
                    compute_meta_gradient(self.net, self.opt, self.coords, x, subsets, tr)
                    apply_meta_update(list(self.net.parameters()), self.opt, tr)
                    out.append(time.perf_counter() - t0)
                    self.k += 1
        finally:
            torch.set_num_threads(old)
        return out


def fastest_steps(timers: list, rounds: int = 4, per_round: int = 4) -> list[float]:
    """The fastest step of each timer, rounds interleaved (after one warm-up step each)."""
    for t in timers:
        t.times(1)
    best = [float("inf")] * len(timers)
    for _ in range(rounds):
        for i, t in enumerate(timers):
            best[i] = min(best[i], *t.times(per_round))
    return best


def step_seconds(field, train, signals, threads: int = 2) -> float:
    """The fastest meta-step of this configuration (2 threads)."""
    timer = StepTimer(field, train, signals)
    timer.times(1, threads)
    return min(timer.times(12, threads))


def encode_split(model_dir: Path, signals, out: Path, split: str | None, config=None) -> dict:
    from funcml.latents.encode import encode_signal_set
    from funcml.encoders.model import FieldModel

    model = FieldModel.load(model_dir)
    idx = None if split is None else signals.indices(split)
    ls, stats = encode_signal_set(model, signals, out, config, model_dir=model_dir, indices=idx, overwrite=True,
                                  progress=False)
    return {"latent_set": ls, **stats}


def classify(latent_set) -> dict:
    """Test accuracy and AUC of the latent classifiers of ``funcml classify`` (search on val)."""
    from funcml.tasks.classify.run import classify_latent_set

    out = {}
    for label, model, preset in (("mlp", "mlp", None), ("mlp-paper", "mlp", "paper"), ("svm", "svm", None)):
        rep = classify_latent_set(latent_set, model, preset=preset).report
        out[label] = {"accuracy": rep["test"]["accuracy"], "auc": rep["test"].get("auc")}
    return out


def calibrated_step_seconds(data: str, name: str, signals, work: Path) -> tuple[float, dict]:
    """The step time a budget is divided by: the fastest ``base`` step of ``data`` ever measured here
    (``WORK/step_times.json``; on a shared machine the fastest is the closest to an idle one) times
    this configuration's ratio to ``base``, measured side by side in this process."""
    cache_path = work / "step_times.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    timers = [StepTimer(*build(data, "base", signals, 1), signals)]
    if name != "base":
        timers.append(StepTimer(*build(data, name, signals, 1), signals))
    best = fastest_steps(timers)
    base_now, cfg_now = best[0], best[-1]
    anchor = min(base_now, cache.get(data, float("inf")))
    cache[data] = anchor
    work.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=1))
    ratio = cfg_now / base_now
    return anchor * ratio, {"base_now": base_now, "config_now": cfg_now, "ratio_to_base": ratio, "base_anchor": anchor}


def plan(data: str, name: str, minutes: float, signals, work: Path, run_dir: Path) -> tuple[float, dict, int]:
    """(step seconds, timing, steps) of a run: calibrated once and kept in ``run_dir/plan.json``, so a
    resumed run keeps its step count (and so its schedule)."""
    path = run_dir / "plan.json"
    if path.exists():
        p = json.loads(path.read_text())
        return p["step_seconds"], p["timing"], p["steps"]
    t_step, timing = calibrated_step_seconds(data, name, signals, work)
    steps = max(1, int(round(minutes * 60 / t_step)))
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"step_seconds": t_step, "timing": timing, "steps": steps}, indent=1))
    return t_step, timing, steps


def run_one(data: str, name: str, minutes: float, work: Path, do_classify: bool, threads: int) -> dict:
    from funcml.encoders.trainer import MetaTrainer

    run_dir = work / data / f"{name}-{minutes:g}m"
    if (run_dir / "run.json").exists():
        return json.loads((run_dir / "run.json").read_text())
    signals = load(data)
    t_step, timing, steps = plan(data, name, minutes, signals, work, run_dir)
    field, train = build(data, name, signals, steps)
    torch.set_num_threads(threads)
    print(f"[{data} {name} {minutes:g} min] {t_step:.3f} s/step (2 threads, fastest) -> {steps} steps", flush=True)
    t0 = time.perf_counter()
    # resumes an interrupted run of the same plan from its last checkpoint
    result = MetaTrainer(field, train, signals, run_dir / "model", progress=False).run()
    wall = time.perf_counter() - t0
    t_one = step_seconds(field, train, signals, threads=1)
    test = test_psnr_plain(run_dir, signals)
    record = {"data": data, "config": name, "minutes": minutes, "step_seconds_2threads": t_step, "timing": timing,
              "step_seconds_1thread_fastest": t_one,
              "steps": steps,
              "field": dataclasses.asdict(field), "train": dataclasses.asdict(train),
              "wall_minutes_under_load": wall / 60, "threads": threads,
              "median_step_seconds_under_load": result.median_step_seconds, "val_psnr": result.best_val_psnr,
              "last_train_psnr": result.last_train_psnr, "rollbacks": result.rollbacks,
              "test_psnr": test["psnr_mean"], "test_encode_seconds": test["seconds"],
              "history": [h for h in result.history if "psnr_outer" in h][::4]}
    record.update(test_momentum(run_dir, signals))
    if do_classify:
        every = encode_split(run_dir / "model", signals, run_dir / "latents", None)
        record["classify"] = classify(every["latent_set"])
    print(f"[{data} {name} {minutes:g} min] test PSNR {record['test_psnr']:.2f} dB"
          + (f", classify {record['classify']}" if do_classify else ""), flush=True)
    (run_dir / "run.json").write_text(json.dumps(record, indent=1))
    return record


def test_psnr_plain(run_dir: Path, signals) -> dict:
    """Encode the test split with the model's H and plain SGD (no momentum: comparable across runs)."""
    from funcml.encoders.model import FieldModel

    cfg = dataclasses.replace(FieldModel.load(run_dir / "model").encode_defaults, momentum=0.0)
    return encode_split(run_dir / "model", signals, run_dir / "test-latents", "test", cfg)


def model_momentum(model, signals) -> tuple[float, dict[str, float]]:
    """(momentum, validation score per momentum) of a model: what its training chose, or for a model
    trained before that choice existed, what ``choose_momentum`` picks on the same validation signals."""
    from funcml.encoders.trainer import choose_momentum

    if "test_momentum" in model.training:
        record = model.training["test_momentum"]
        return record["chosen"], record["val_scores"]
    val = torch.from_numpy(signals.get(signals.indices("val")[: model.training["config"]["val_signals"]]))
    best, scores = choose_momentum(model.net, val, dataclasses.replace(model.encode_defaults, momentum=0.0))
    return best, {str(m): v for m, v in scores.items()}


def test_momentum(run_dir: Path, signals) -> dict:
    """The test PSNR with the model's test-time momentum (:func:`model_momentum`)."""
    from funcml.encoders.model import FieldModel

    model = FieldModel.load(run_dir / "model")
    cfg = dataclasses.replace(model.encode_defaults, momentum=model_momentum(model, signals)[0])
    test = encode_split(run_dir / "model", signals, run_dir / "test-latents-momentum", "test", cfg)
    return {"test_momentum": cfg.momentum, "test_psnr_momentum": test["psnr_mean"]}


def momentum_run(data: str, run: str, work: Path) -> dict:
    """Add the test PSNR with the test-time momentum to a finished run that was run without it."""
    run_dir = work / data / run
    record = json.loads((run_dir / "run.json").read_text())
    if "test_psnr_momentum" not in record:
        record.update(test_momentum(run_dir, load(data)), momentum_added=True)
        (run_dir / "run.json").write_text(json.dumps(record, indent=1))
    print(f"[{data} {run}] momentum {record['test_momentum']:g}: test PSNR {record['test_psnr_momentum']:.2f} dB",
          flush=True)
    return record


def classify_run(data: str, run: str, work: Path) -> dict:
    """Add the latent classification to a finished run (``run``: CONFIG-Mm) that was run without it."""
    run_dir = work / data / run
    record = json.loads((run_dir / "run.json").read_text())
    if "classify" not in record:
        every = encode_split(run_dir / "model", load(data), run_dir / "latents", None)
        record["classify"] = classify(every["latent_set"])
        (run_dir / "run.json").write_text(json.dumps(record, indent=1))
    print(f"[{data} {run}] classify {record['classify']}", flush=True)
    return record


def gather(work: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(work.glob("*/*/run.json"))]


def report(work: Path) -> None:
    runs = gather(work)
    rows = []
    for r in sorted(runs, key=lambda r: (r["data"], r["minutes"], -r["test_psnr"])):
        c = r.get("classify") or {}
        best_acc = max((v["accuracy"] for v in c.values()), default=None)
        best_auc = max((v["auc"] for v in c.values() if v["auc"] is not None), default=None)
        f, t = r["field"], r["train"]
        rows.append([r["data"], r["minutes"], r["config"], f"{f['depth']} x {f['width']}", f["latent_dim"],
                     r["steps"], round(r["step_seconds_2threads"], 3),
                     None if r.get("step_seconds_1thread_fastest") is None else round(r["step_seconds_1thread_fastest"], 3),
                     r["threads"], round(r["test_psnr"], 2),
                     f"{r['test_psnr_momentum']:.2f} ({r['test_momentum']:g})" if "test_psnr_momentum" in r else None,
                     None if best_acc is None else round(best_acc, 3), None if best_auc is None else round(best_auc, 3),
                     len(r["rollbacks"]), round(r["wall_minutes_under_load"], 1)])
    columns = ["data", "budget min", "config", "K x L", "P", "steps", "s/step (2 thr)", "s/step (1 thr, loaded)",
               "threads run", "test PSNR dB", "with momentum (m)",
               "best latent acc", "best latent AUC", "rollbacks", "wall min under load"]
    inputs = [f"nice -n 5 python benchmarks/fidelity_budget.py run --data {r['data']} --minutes {r['minutes']:g} "
              f"--configs {r['config']} --threads {r['threads']}" + (" --classify" if r.get("classify") else "")
              for r in sorted(runs, key=lambda r: (r["data"], r["minutes"], r["config"]))]
    inputs += [f"nice -n 5 python benchmarks/fidelity_budget.py momentum --data {r['data']} --runs "
               f"{r['config']}-{r['minutes']:g}m" for r in runs if r.get("momentum_added")]
    write_result("fidelity_budget", {"runs": runs, "configs": CONFIGS}, task="fidelity", inputs=inputs,
                 tables=[table("Test PSNR per time budget (H = 20), latent classification", columns, rows,
                               caption="budget = steps x the configuration's fastest 2-thread step time; test PSNR "
                                       "with plain SGD, and with the test-time momentum m chosen on the validation "
                                       "signals")],
                 notes="2 cores shared with other jobs: budgets are step counts at the measured step time "
                       "(fastest 2-thread base step seen x the configuration's ratio to base; the fastest 1-thread "
                       "step where recorded, measured under load, not idle); training ran with the threads given, "
                       "under load; a run interrupted and resumed keeps its plan's step count")
    plot(runs, REPO / "docs" / "figures" / "fidelity_minutes.png")


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = sorted({r["data"] for r in runs})
    names = sorted({r["config"] for r in runs})
    palette = [*plt.cm.tab20.colors, *plt.cm.tab20b.colors]   # 40 colours: one per config, the same in all panels
    colour = {name: palette[k % len(palette)] for k, name in enumerate(names)}
    fig, axes = plt.subplots(1, len(datas), figsize=(3.6 * len(datas), 3.2), dpi=100, squeeze=False)
    for ax, data in zip(axes[0], datas):
        mine = [r for r in runs if r["data"] == data]
        for name in sorted({r["config"] for r in mine}):
            pts = sorted((r["minutes"], r["test_psnr"]) for r in mine if r["config"] == name)
            ax.plot(*zip(*pts), "o-", label=name, ms=4, color=colour[name])
        ax.set_title(data, fontsize=9)
        label_axes(ax, "budget (minutes, 2 idle cores)", "test PSNR (dB)", legend_size=6)
    save_figure(fig, path)


def label_axes(ax, xlabel: str, ylabel: str, legend_size: int = 7, outside: bool = False) -> None:
    """Axis labels, a light grid and the legend (the fidelity figures' style; ``outside``: right of the axes)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if outside:
        ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=legend_size)


def save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--data", choices=sorted(DATA), required=True)
    r.add_argument("--minutes", type=float, required=True)
    r.add_argument("--configs", required=True, help="comma-separated names of CONFIGS")
    r.add_argument("--classify", action="store_true")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--work", type=Path, default=WORK)
    c = sub.add_parser("classify", help="add latent classification to finished runs")
    c.add_argument("--data", choices=sorted(DATA), required=True)
    c.add_argument("--runs", required=True, help="comma-separated CONFIG-Mm run names")
    c.add_argument("--work", type=Path, default=WORK)
    m = sub.add_parser("momentum", help="add the test PSNR with the test-time momentum to finished runs")
    m.add_argument("--data", choices=sorted(DATA), required=True)
    m.add_argument("--runs", required=True, help="comma-separated CONFIG-Mm run names")
    m.add_argument("--work", type=Path, default=WORK)
    rep = sub.add_parser("report")
    rep.add_argument("--work", type=Path, default=WORK)
    a = ap.parse_args()
    if a.cmd == "report":
        report(a.work)
        return
    if a.cmd == "classify":
        for run in a.runs.split(","):
            classify_run(a.data, run, a.work)
        return
    if a.cmd == "momentum":
        for run in a.runs.split(","):
            momentum_run(a.data, run, a.work)
        return
    for name in a.configs.split(","):
        run_one(a.data, name, a.minutes, a.work, a.classify, a.threads)


if __name__ == "__main__":
    main()
