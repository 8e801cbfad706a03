"""Memory of a large `funcml encode`: the process's resident memory while it encodes N signals.

Builds (under --work, never in the repository) a MedMNIST-layout npz of N 28x28 images by tiling the
embedded BreastMNIST, meta-trains a small model with the paper's image latent size (P = 2048, so that
the latent matrix is large: N x P x 4 bytes), then runs the real command

    funcml encode DATA --model MODEL --out LATENTS --batch-size 256 --steps 3 --resolution 8x8 --device cpu --json

as a subprocess and samples its /proc/PID/status (VmRSS = RssAnon + RssFile + RssShmem) and the job's
progress.json every --interval seconds. Writes the samples (JSON) and a PNG of memory against rows
encoded, prints a summary as one JSON line and writes it to ``benchmarks/results/RESULT.json``
(``--result``, default ``reliability-encode-memory-100k``). Linux only (reads /proc).

    nice -n 10 python benchmarks/encode_memory.py --n 100000 --compare --work /tmp/funcml-encode-memory \\
        --figure docs/figures/encode_memory_100k.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MIB = 1 << 20


def make_data(path: Path, n: int) -> None:
    """N images tiled from the embedded BreastMNIST (80/10/10 splits), as a MedMNIST-layout npz."""
    from funcml.data.catalog import demo_path

    with np.load(demo_path(), allow_pickle=False) as z:
        images = np.concatenate([z[f"{s}_images"] for s in ("train", "val", "test")])
        labels = np.concatenate([z[f"{s}_labels"] for s in ("train", "val", "test")])
    reps = np.arange(n) % len(images)
    counts = {"train": int(n * 0.8), "val": int(n * 0.1)}
    counts["test"] = n - counts["train"] - counts["val"]
    arrays, start = {}, 0
    for split, count in counts.items():
        arrays[f"{split}_images"] = images[reps[start:start + count]]
        arrays[f"{split}_labels"] = labels[reps[start:start + count]]
        start += count
    np.savez(path, **arrays)


def make_model(path: Path, latent_dim: int, steps: int) -> None:
    """A small 2D model with a large latent (the memory of the output is what is measured)."""
    import torch

    from funcml.data import load_signals
    from funcml.encoders.config import FieldConfig, TrainConfig
    from funcml.encoders.trainer import MetaTrainer

    torch.set_num_threads(1)
    field = FieldConfig(dim_in=2, channels=1, width=32, depth=3, latent_dim=latent_dim, omega_first=20.0,
                        omega_last=60.0)
    train = TrainConfig(steps=steps, batch_size=16, inner_steps=2, inner_lr=1e-2, context_ratio=0.25,
                        outer_lr=3e-4, val_every=0, val_signals=32, test_steps=3, checkpoint_every=steps, seed=0)
    MetaTrainer(field, train, load_signals("demo"), path, progress=False).run()


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem (KiB) of a process."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def rows_done(progress: Path, final: Path) -> int | None:  # noqa: ARG001
    try:
        return int(json.loads(progress.read_text())["rows_done"])
    except (OSError, ValueError, KeyError):
        return None


# The same command with the page release of the latent writer switched off: what the mapped output
# would add to the resident memory (file-backed pages) without it.
_KEEP_PAGES = ("import sys, funcml.latents.latentset as l; l.release_pages = lambda array: None; "
               "from funcml.cli import main; sys.argv[0] = 'funcml'; main()")


def measure(prefix: list[str], args, data: Path, model: Path) -> tuple[list[dict], dict, list[str]]:
    """Run one encode, sampling its memory; return (samples, the command's JSON report, the command)."""
    work = args.work
    out = work / "latents"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / "latents.partial", ignore_errors=True)
    progress = work / "latents.partial" / "progress.json"
    cmd = [*prefix, "encode", str(data), "--model", str(model), "--out", str(out), "--batch-size",
           str(args.batch_size), "--steps", str(args.test_steps), "--resolution", args.resolution, "--device", "cpu",
           "--json"]
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    samples: list[dict] = []
    while proc.poll() is None:
        try:
            mem = status_kib(proc.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        if "VmRSS" not in mem:  # exiting (a zombie has no memory left)
            break
        rows = rows_done(progress, out)
        samples.append({"t": round(time.monotonic() - t0, 3),
                        "rows": rows if rows is not None else (args.n if out.exists() else None), **mem})
        time.sleep(args.interval)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"funcml encode failed ({proc.returncode}): {' '.join(cmd)}")
    shutil.rmtree(out, ignore_errors=True)
    return samples, json.loads(stdout.strip().splitlines()[-1]), cmd


def summarise(samples: list[dict], report: dict, args) -> dict:
    """Memory at the start and at the end of the encoding loop (first and last 10% of the rows)."""
    enc = [s for s in samples if s["rows"] is not None and 0 < s["rows"] < args.n]
    head = [s for s in enc if s["rows"] <= 0.1 * args.n] or enc[:1]
    tail = [s for s in enc if s["rows"] >= 0.9 * args.n] or enc[-1:]

    def mib(rows, key, fn=max):
        return fn(s[key] for s in rows) / 1024

    return {
        "rss_first_10pct_mib": mib(head, "VmRSS"), "rss_last_10pct_mib": mib(tail, "VmRSS"),
        "anon_first_10pct_mib": mib(head, "RssAnon"), "anon_last_10pct_mib": mib(tail, "RssAnon"),
        "file_first_10pct_mib": mib(head, "RssFile"), "file_last_10pct_mib": mib(tail, "RssFile"),
        "rss_peak_mib": mib(samples, "VmRSS"), "hwm_mib": mib(samples, "VmHWM"),
        "seconds": report["seconds"], "signals_per_second": report["signals_per_second"],
        "latent_checksum": report["latent_checksum"], "samples": len(samples),
    }


def plot(runs: dict[str, list[dict]], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4), dpi=120)
    samples = runs["funcml"]
    t = [s["t"] for s in samples]
    for key, label in (("VmRSS", "resident (VmRSS)"), ("RssAnon", "anonymous: heap, tensors, data"),
                       ("RssFile", "file-backed: code, mapped output")):
        ax.plot(t, [s[key] / 1024 for s in samples], label=label)
    naive = summary["latent_matrix_mib"]
    enc = [s for s in samples if s["rows"] is not None]
    if enc:
        base = enc[0]["RssAnon"] / 1024
        ax.plot([enc[0]["t"], enc[-1]["t"]], [base, base + naive], "k--", lw=1,
                label=f"anonymous + latents kept in RAM (+{naive:.0f} MiB)")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("MiB")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"funcml encode, {summary['n']:,} signals, P = {summary['latent_dim']} "
                 f"(latents {naive:.0f} MiB)", fontsize=9)
    styles = {"funcml": ("C0", "funcml (pages released after each flush)"),
              "keep-pages": ("C3", "same, mapped pages kept resident")}
    for name, run in runs.items():
        enc = [s for s in run if s["rows"] is not None]
        colour, label = styles[name]
        ax2.plot([s["rows"] for s in enc], [s["VmRSS"] / 1024 for s in enc], color=colour, label=f"VmRSS: {label}")
        ax2.plot([s["rows"] for s in enc], [s["RssFile"] / 1024 for s in enc], color=colour, ls=":",
                 label=f"RssFile: {label}")
    ax2.set_xlabel("signals encoded")
    ax2.set_ylabel("MiB")
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=7, loc="upper left")
    ax2.set_title("resident memory against progress", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--latent-dim", type=int, default=2048)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--test-steps", type=int, default=1)
    ap.add_argument("--resolution", default="8x8",
                    help="Grid the images are encoded on (small: the shared CPU's time goes to the loop, not the MLP).")
    ap.add_argument("--interval", type=float, default=0.25)
    ap.add_argument("--compare", action="store_true",
                    help="Also run the encode with the page release switched off, for comparison.")
    ap.add_argument("--work", type=Path, default=Path("/tmp/funcml-encode-memory"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/encode_memory_100k.png"))
    ap.add_argument("--samples", type=Path, default=None)
    ap.add_argument("--result", default="reliability-encode-memory-100k",
                    help="name of the result file in benchmarks/results/")
    ap.add_argument("--notes", default=None, help="conditions of the run for the result (e.g. other jobs running)")
    args = ap.parse_args(argv)

    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / f"tiled{args.n}mnist.npz"
    if not data.exists():
        make_data(data, args.n)
    model = args.work / f"model-p{args.latent_dim}"
    if not (model / "config.json").exists():
        shutil.rmtree(model, ignore_errors=True)
        make_model(model, args.latent_dim, args.train_steps)

    runs, reports, commands = {}, {}, {}
    variants = {"funcml": [sys.executable, "-m", "funcml"]}
    if args.compare:
        variants["keep-pages"] = [sys.executable, "-c", _KEEP_PAGES]
    for name, prefix in variants.items():
        runs[name], report, cmd = measure(prefix, args, data, model)
        reports[name] = summarise(runs[name], report, args)
        commands[name] = " ".join(cmd[cmd.index("encode"):])
    summary = {"n": args.n, "latent_dim": args.latent_dim, "batch_size": args.batch_size,
               "test_steps": args.test_steps, "resolution": args.resolution,
               "latent_matrix_mib": args.n * args.latent_dim * 4 / MIB, "command": commands["funcml"], **reports}
    plot(runs, summary, args.figure)
    if args.samples:
        args.samples.parent.mkdir(parents=True, exist_ok=True)
        args.samples.write_text(json.dumps({"summary": summary, "samples": runs}))
    print(json.dumps(summary))
    write_memory_result(summary, args)


def write_memory_result(summary: dict, args) -> None:
    """The summary as a result file, with the table the benchmarks page shows."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import table, write_result

    labels = {"funcml": "funcml", "keep-pages": "page release off"}
    rows = [[labels[name], f"{r['rss_first_10pct_mib']:.0f} / {r['rss_last_10pct_mib']:.0f} MiB",
             f"{r['anon_first_10pct_mib']:.0f} / {r['anon_last_10pct_mib']:.0f} MiB",
             f"{r['file_first_10pct_mib']:.0f} / {r['file_last_10pct_mib']:.0f} MiB", f"{r['rss_peak_mib']:.0f} MiB",
             f"{r['seconds']:.0f} s ({r['signals_per_second']:.0f} signals/s)"]
            for name, r in summary.items() if name in labels]
    columns = ["", "VmRSS at 10% / 90%+ of rows", "anonymous", "file-backed", "peak (start-up)", "encode time"]
    title = (f"Memory of a {args.n:,}-signal encode (P = {args.latent_dim}, latents "
             f"{summary['latent_matrix_mib']:.0f} MiB)")
    write_result(args.result, summary, task="reliability", notes=args.notes, order=0,
                 tables=[table(title, columns, rows, caption="funcml encode as funcml is and, with --compare, with "
                                                             "the writer's page release switched off.")])


if __name__ == "__main__":
    main()
