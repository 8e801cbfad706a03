"""Scale-out encoding on a CPU: ``torchrun --nproc_per_node N funcml encode`` against one process.

Both encode the same signals with the same (untrained, ``cpu-image``-sized) model, one thread per
process, through the command line; the runs alternate (one, N, N, one, ...) so that a change in the
machine's load affects both alike. Reported per run: ``signals_per_second`` as the command reports it
(the encoding from the first chunk to the published set: for N processes the merge included, the
start-up of Python and torch excluded), the wall time of the whole command, and the latent checksum
(which must be the same for every run).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_encode_scaling.py --rounds 4 --write-result
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from results import table, write_result  # noqa: E402


def make_model(path: Path, batch_size: int) -> None:
    import torch

    from funcml.encoders.config import EncodeConfig
    from funcml.encoders.model import FieldModel
    from funcml.encoders.presets import get_preset
    from funcml.encoders.siren import ModulatedSiren

    field, train = get_preset("cpu-image").build(2, 1)
    torch.manual_seed(0)
    FieldModel(ModulatedSiren(field, inner_lr=train.inner_lr), (1, 28, 28),
               EncodeConfig(steps=train.test_steps, inner_lr=train.inner_lr, context_ratio=train.context_ratio,
                            batch_size=batch_size)).save(path)


def encode(processes: int, model: Path, out: Path, data: str, split: str) -> dict:
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          "--nproc_per_node", str(processes)]
    cmd = [sys.executable, *launcher, "-m", "funcml", "encode", data, "--model", str(model), "--out", str(out),
           "--split", split, "--device", "cpu", "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    rep = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"processes": processes, "signals": rep["count"], "signals_per_second": rep["signals_per_second"],
            "wall_seconds": wall, "checksum": rep["latent_checksum"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="demo")
    ap.add_argument("--split", default="test")
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--write-result", action="store_true")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "model"
        make_model(model, args.batch_size)
        for r in range(args.rounds):
            order = (1, args.processes) if r % 2 == 0 else (args.processes, 1)
            for n in order:
                run = encode(n, model, Path(tmp) / f"lat-{r}-{n}", args.data, args.split)
                runs.append({**run, "round": r})
                print(f"round {r}: {n} process(es): {run['signals_per_second']:.1f} signals/s, "
                      f"{run['wall_seconds']:.1f} s wall", file=sys.stderr, flush=True)
    one = [x for x in runs if x["processes"] == 1]
    many = [x for x in runs if x["processes"] == args.processes]
    ratios = [m["signals_per_second"] / o["signals_per_second"] for o, m in zip(one, many)]
    summary = {
        "processes": args.processes, "signals": one[0]["signals"], "batch_size": args.batch_size,
        "one_signals_per_second": statistics.median(x["signals_per_second"] for x in one),
        "many_signals_per_second": statistics.median(x["signals_per_second"] for x in many),
        "ratio_median": statistics.median(ratios), "ratios_by_round": ratios,
        "wall_ratio_median": statistics.median(o["wall_seconds"] / m["wall_seconds"] for o, m in zip(one, many)),
        "same_checksum": len({x["checksum"] for x in runs}) == 1, "load_average_at_start": load,
        "cores": os.cpu_count(),
    }
    print(json.dumps({"summary": summary, "runs": runs}, indent=1))
    if args.write_result:
        rows = [[x["round"], x["processes"], round(x["signals_per_second"], 2), round(x["wall_seconds"], 1)]
                for x in runs]
        write_result("encode_scaling", {"summary": summary, "runs": runs}, task="scaling",
                     tables=[table(f"Encoding {summary['signals']} signals: 1 process against {args.processes} "
                                   f"(torchrun, gloo), one thread each",
                                   ["round", "processes", "signals/s", "wall s"], rows,
                                   caption=f"median ratio {summary['ratio_median']:.2f}x; same checksum: "
                                           f"{summary['same_checksum']}")],
                     notes=f"{os.cpu_count()} cores, load average {load:.1f} at the start; "
                           f"runs alternate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
