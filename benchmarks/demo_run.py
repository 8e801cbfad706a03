"""`make demo`, timed: run ``funcml demo`` as a user does and record its report as a result.

Runs ``python -m funcml demo --out OUT --overwrite`` in a child process (the command ``make demo``
runs, with this interpreter), measures the wall time of the whole command (start-up included) and
writes ``benchmarks/results/examples-demo.json`` from the demo's own ``report.json``: the steps and
the validation PSNR of meta-training, the test PSNR and SSIM of the encoded test split, the seconds of
each stage. Run it on an idle machine; the docs quote it as the demo's time on that hardware.

    python benchmarks/demo_run.py --out runs/demo-check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import REPO, table, write_result  # noqa: E402


def run_demo(out: Path, extra: list[str]) -> tuple[dict, float]:
    """Run the demo command into ``out``; ``(its report.json, wall seconds of the command)``."""
    cmd = [sys.executable, "-m", "funcml", "demo", "--out", str(out), "--overwrite", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    wall = time.perf_counter() - t0
    return json.loads((out / "report.json").read_text()), wall


def stage_rows(report: dict, encode: dict, wall: float) -> list[list]:
    """The table's rows: meta-training, encoding (with the model's ``encode`` settings), the
    downstream tasks, the whole command."""
    tr, enc, rec = report["training"], report["encoding"], report["reconstruction"]["test"]
    secs = report["seconds"]
    rows = [
        [f"meta-training ({report['preset']}, {tr['steps_done']} steps)",
         f"validation PSNR {tr['best_val_psnr']:.2f} dB", f"{secs['training']:.0f} s "
         f"({tr['median_step_seconds']:.3f} s/step)"],
        [f"encoding {enc['signals']} images (H = {encode['steps']}, momentum {encode.get('momentum', 0):g})",
         f"test PSNR {rec['psnr']:.2f} dB, SSIM {rec['ssim']:.3f}",
         f"{enc['seconds']:.0f} s ({enc['signals_per_second']:.0f} signals/s)"],
    ]
    tasks = list(report["tasks"])
    rows.append([f"downstream tasks ({', '.join(tasks)})", "report.json and figures",
                 f"{sum(secs[k] for k in tasks):.0f} s"])
    rows.append(["the whole command, start-up included", "", f"{wall / 60:.1f} min"])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "demo-check", help="the demo's report folder")
    ap.add_argument("--notes", default="Nothing else ran on the machine.",
                    help="conditions of the run (recorded with the result)")
    a, extra = ap.parse_known_args()
    report, wall = run_demo(a.out, extra)
    encode = json.loads((a.out / "model" / "config.json").read_text())["encode"]
    rows = stage_rows(report, encode, wall)
    tr = report["training"]
    results = {"wall_minutes": wall / 60, "demo_minutes": report["minutes"], "seconds": report["seconds"],
               "steps": tr["steps_done"], "median_step_seconds": tr["median_step_seconds"],
               "val_psnr": tr["best_val_psnr"], "encode": encode,
               "test": report["reconstruction"]["test"], "encoding": report["encoding"]}
    write_result("examples-demo", results, task="examples", order=0, notes=a.notes, tables=[
        table("make demo (the embedded BreastMNIST 28x28)", ["stage", "result", "time"], rows)])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
