"""Encoding quality against test-time steps H: SGD (the model's rate or meta-learnt rates), Adam, ``--steps auto``.

For each model (a ``funcml train`` output directory) the test split of its data is encoded:

* plain SGD (no momentum) with H = 3 ... 500 (one fit continued from H to the next: the same context
  subsets as separate fits, so each point is what ``funcml encode --steps H --momentum 0`` gives);
* SGD with the momentum a finished training run chooses on the model's validation signals
  (``funcml.encoders.trainer.choose_momentum``; ``funcml encode --momentum``), at each H;
* Adam (``--optimizer adam``) at each H, for each ``--adam-lrs``;
* ``--steps auto`` with plain SGD (at most 500 steps): PSNR, the mean steps per signal and the seconds
  per signal.

Writes ``benchmarks/results/fidelity_encoding_DATA.json`` and ``docs/figures/fidelity_psnr_vs_h_DATA.png``.

    nice -n 5 python benchmarks/fidelity_encoding.py --data breast28 \\
        --models base=runs/fidelity/breast28/base-20m/model,new=runs/fidelity/breast28/new-20m/model
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
from fidelity_budget import label_axes, load, model_momentum, save_figure  # noqa: E402
from results import REPO, table, write_result  # noqa: E402

H_VALUES = (3, 5, 10, 20, 50, 100, 200, 500)
WORK = REPO / "runs" / "fidelity-encoding"


def batches(signals, split: str, batch_size: int):
    idx = signals.indices(split)
    for k, start in enumerate(range(0, len(idx), batch_size)):
        yield k, torch.from_numpy(signals.get(idx[start:start + batch_size]))


def sgd_curve(model, signals, h_values=H_VALUES) -> dict[int, float]:
    """Mean test PSNR after each H (plain SGD, continued fits)."""
    from funcml.encoders.fitting import fit_latents, reconstruction_psnr
    from funcml.seeding import generator

    cfg = dataclasses.replace(model.encode_defaults, momentum=0.0)
    sums = {h: 0.0 for h in h_values}
    n = 0
    for k, x in batches(signals, "test", cfg.batch_size):
        gen, phi, done = generator(cfg.seed, "encode", k), None, 0
        for h in h_values:
            phi = fit_latents(model.net, x, dataclasses.replace(cfg, steps=h - done), generator=gen, latents=phi)
            done = h
            sums[h] += float(reconstruction_psnr(model.net, phi, x).sum())
        n += len(x)
    return {h: s / n for h, s in sums.items()}


def encode_psnr(model, signals, cfg) -> tuple[float, float, float]:
    """(mean test PSNR, mean steps per signal, seconds per signal) of one encode setting."""
    from funcml.encoders.fitting import fit_latents_counted, reconstruction_psnr
    from funcml.seeding import generator

    total, steps, n = 0.0, 0.0, 0
    t0 = time.perf_counter()
    for k, x in batches(signals, "test", cfg.batch_size):
        phi, taken = fit_latents_counted(model.net, x, cfg, generator=generator(cfg.seed, "encode", k))
        total += float(reconstruction_psnr(model.net, phi, x).sum())
        steps += float(taken.sum())
        n += len(x)
    return total / n, steps / n, (time.perf_counter() - t0) / n


def momentum_curve(model, signals, h_values=H_VALUES) -> dict:
    """The model's momentum, chosen on its validation signals (``fidelity_budget.model_momentum``), and
    the test PSNR with it at each H (separate fits: a continued fit would restart the velocity)."""
    best, scores = model_momentum(model, signals)
    cfg = model.encode_defaults
    curve = {h: encode_psnr(model, signals, dataclasses.replace(cfg, steps=h, momentum=best))[0] for h in h_values}
    return {"chosen": best, "val_scores": scores, "curve": curve}


def measure(name: str, model_dir: Path, signals, adam_lrs: list[float], h_values=H_VALUES,
            max_auto: int = 500) -> dict:
    from funcml.backends import precision
    from funcml.encoders.model import FieldModel

    model = FieldModel.load(model_dir)
    out = {"model": name, "latent_dim": model.config.latent_dim, "meta_sgd": model.config.meta_sgd}
    with precision.scoped("fp32", torch.device("cpu")):
        out["sgd"] = sgd_curve(model, signals, h_values)
        print(name, "sgd", {h: round(v, 2) for h, v in out["sgd"].items()}, flush=True)
        out["momentum"] = momentum_curve(model, signals, h_values)
        print(name, "momentum", out["momentum"], flush=True)
        out["adam"] = {}
        for lr in adam_lrs:
            out["adam"][lr] = {h: encode_psnr(model, signals, dataclasses.replace(
                model.encode_defaults, steps=h, optimizer="adam", adam_lr=lr))[0] for h in h_values}
            print(name, "adam", lr, {h: round(v, 2) for h, v in out["adam"][lr].items()}, flush=True)
        psnr, steps, sec = encode_psnr(model, signals, dataclasses.replace(model.encode_defaults, steps=max_auto,
                                                                           auto_stop=True, momentum=0.0))
        out["auto"] = {"psnr": psnr, "steps_per_signal": steps, "seconds_per_signal": sec}
        print(name, "auto", out["auto"], flush=True)
    return out


def report(data: str, results: list[dict]) -> None:
    rows = []
    for r in results:
        best_adam = max(r["adam"], key=lambda lr: r["adam"][lr][20]) if r["adam"] else None
        mom = r["momentum"]
        for h in sorted(r["sgd"]):
            rows.append([r["model"], h, round(r["sgd"][h], 2), f"{mom['curve'][h]:.2f} ({mom['chosen']:g})",
                         None if best_adam is None else round(r["adam"][best_adam][h], 2)])
        rows.append([r["model"], f"auto ({r['auto']['steps_per_signal']:.0f} on average)", round(r["auto"]["psnr"], 2),
                     None, None])
    write_result(f"fidelity_encoding_{data}", {"data": data, "models": results}, task="fidelity",
                 tables=[table(f"Test PSNR against test-time steps H ({data})",
                               ["model", "H", "SGD PSNR dB", "SGD + momentum PSNR dB (momentum)",
                                "Adam PSNR dB (best lr at H = 20)"], rows)],
                 notes="2 cores shared with other jobs; seconds per signal are under that load")
    plot(data, results, REPO / "docs" / "figures" / f"fidelity_psnr_vs_h_{data}.png")


def plot(data: str, results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.4, 3.8), dpi=100)
    for r in results:
        hs = sorted(r["sgd"])
        line, = ax.semilogx(hs, [r["sgd"][h] for h in hs], "o-", ms=3, label=f"{r['model']}: SGD")
        ax.semilogx(hs, [r["momentum"]["curve"][h] for h in hs], "^-", ms=3, color=line.get_color(), alpha=0.8,
                    label=f"{r['model']}: SGD, momentum {r['momentum']['chosen']:g}")
        for lr, curve in r["adam"].items():
            ax.semilogx(hs, [curve[h] for h in hs], "s--", ms=3, color=line.get_color(), alpha=0.6,
                        label=f"{r['model']}: Adam {lr}")
        ax.plot([r["auto"]["steps_per_signal"]], [r["auto"]["psnr"]], "*", ms=10, color=line.get_color(),
                label=f"{r['model']}: --steps auto")
    ax.set_title(data, fontsize=9)
    label_axes(ax, "test-time steps H", "test PSNR (dB)", legend_size=6, outside=True)
    save_figure(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", required=True, help="NAME=DIR,NAME=DIR (model directories)")
    ap.add_argument("--adam-lrs", default="0.01,0.03")
    ap.add_argument("--h-values", default=",".join(map(str, H_VALUES)), help="comma-separated test-time steps H")
    ap.add_argument("--max-auto", type=int, default=500, help="the most steps of --steps auto")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    signals = load(a.data)
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for item in a.models.split(","):
        name, path = item.split("=", 1)
        cache = WORK / f"{a.data}-{name}.json"
        h_values = tuple(int(h) for h in a.h_values.split(","))
        if not cache.exists():
            cache.write_text(json.dumps(measure(name, Path(path), signals, [float(v) for v in a.adam_lrs.split(",")],
                                                h_values, a.max_auto)))
        r = json.loads(cache.read_text())
        if "momentum" not in r:   # measured before the momentum curve existed: add it
            r["momentum"] = _momentum_of(Path(path), signals, h_values)
            cache.write_text(json.dumps(r))
        results.append(_numeric_keys(r))
    report(a.data, results)


def _momentum_of(model_dir: Path, signals, h_values) -> dict:
    from funcml.backends import precision
    from funcml.encoders.model import FieldModel

    with precision.scoped("fp32", torch.device("cpu")):
        return momentum_curve(FieldModel.load(model_dir), signals, h_values)


def _numeric_keys(r: dict) -> dict:
    """JSON turned the H and learning-rate keys into strings: back to numbers."""
    r["sgd"] = {int(h): v for h, v in r["sgd"].items()}
    r["momentum"]["curve"] = {int(h): v for h, v in r["momentum"]["curve"].items()}
    r["adam"] = {float(lr): {int(h): v for h, v in c.items()} for lr, c in r["adam"].items()}
    return r


if __name__ == "__main__":
    main()
