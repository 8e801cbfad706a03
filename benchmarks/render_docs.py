"""Render ``docs/benchmarks.md`` from the result files under ``benchmarks/results/``.

    python benchmarks/render_docs.py            # rewrite docs/benchmarks.md
    python benchmarks/render_docs.py --check    # exit 1 when the committed page differs

One section per task (the ``task`` of each result: the known ones in a fixed order, any other
alphabetically), in it every result's tables (``tables``, see :func:`results.table`), then the
command that produced them, the machine (CPU or GPU, threads, versions) and the result's ``notes``.
The page holds nothing that is not in a result file, so a rerun of a benchmark script followed by
this script updates it, and ``tests/test_benchmark_results.py`` fails when page and files disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
PAGE = HERE.parent / "docs" / "benchmarks.md"

# Known tasks in page order: (task, section title, what the section measures).
TASKS: list[tuple[str, str, str]] = [
    ("fidelity", "Reconstruction quality",
     "How closely the fields reproduce their signals: PSNR and SSIM after encoding with H test-time steps."),
    ("performance", "Speed and memory against the official code",
     "funcml and the official MedFuncta code side by side on the same data, weights and context subsets "
     "(`benchmarks/bench_meta.py`): meta-step time, encoding throughput, peak memory and the deviation of "
     "the results (same math: float rounding only). What each technique does and why: "
     "[Performance design](design/performance.md)."),
    ("gpu", "GPU", "The same measurements on a GPU."),
    ("reliability", "Reliability", "Memory and behaviour of long jobs ([Reliability](reliability.md))."),
    ("classification", "Classification on latents",
     "Classifiers on the latent vectors against a pixel CNN trained on the same splits and against published "
     "numbers ([Classification](classification.md))."),
    ("classification-ecg", "ECG classification", "Heartbeat classification on MIT-BIH records."),
    ("query", "Querying fields: super-resolution, imputation, segmentation",
     "Fields queried between and beyond their samples, against classical interpolation and a pixel U-Net "
     "([Querying](querying.md))."),
    ("generation", "Generation on latents",
     "Flow matching and diffusion over the latents, scored in one evaluation context per dataset "
     "([Generation](generation.md))."),
    ("explanation", "Explanations",
     "Faithfulness of `funcml explain`'s attributions: deletion and insertion against a random order, the "
     "randomisation check, counterfactuals ([Explanations](explanation.md))."),
    ("examples", "The demo and the worked examples",
     "`make demo` and the scripts in `examples/` ([Worked examples](examples.md))."),
]

HEADER = """# Benchmarks

How good and how fast funcml is, against what, on which hardware. Every table below comes from a
result file in `benchmarks/results/` written by the benchmark script named under it (or, for
results recorded before those files existed, transcribed with the command as it was run, which the
notes say); the command, the machine and the conditions of the run are given with each table. This
page is generated: `python benchmarks/render_docs.py` rewrites it from the result files, and a test
fails when the two disagree. Rerun a command to update its table.
"""


def load_results(directory: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    """Every result record under ``directory``."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.json"))]


def cell(value: Any) -> str:
    """One table cell: strings as given, numbers at a readable precision, nothing for None."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            value = int(value)
        elif abs(value) >= 100:
            return f"{value:.1f}"
        elif abs(value) >= 0.001:
            return f"{value:.4g}"
        else:
            return f"{value:.1e}"
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(tab: dict[str, Any]) -> list[str]:
    lines = [f"### {tab['title']}", "", "| " + " | ".join(cell(c) for c in tab["columns"]) + " |",
             "|" + "---|" * len(tab["columns"])]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in tab["rows"]]
    if tab.get("caption"):
        lines += ["", " ".join(tab["caption"].split())]
    return lines + [""]


def machine(env: dict[str, Any]) -> str:
    """The hardware and software line of a result."""
    parts = [env.get("cpu") or "unknown CPU"]
    if env.get("logical_cores"):
        parts.append(f"{env['logical_cores']} logical cores")
    if env.get("torch_threads"):
        parts.append(f"{env['torch_threads']} torch thread{'s' if env['torch_threads'] != 1 else ''}")
    if env.get("gpu"):
        parts.append(f"GPU {env['gpu']}" + (f" (CUDA {env['cuda']})" if env.get("cuda") else ""))
    versions = ", ".join(f"{k} {env[k]}" for k in ("torch", "python", "funcml") if env.get(k))
    return ", ".join(parts) + (f"; {versions}" if versions else "")


def render_result(record: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for tab in record.get("tables") or []:
        lines += markdown_table(tab)
    if not record.get("tables"):
        lines += [f"### {record['name']}", ""]
    lines += ["```", record["command"].strip(), "```", ""]
    about = f"Machine: {machine(record.get('environment') or {})}."
    if record.get("notes"):
        about += " " + " ".join(record["notes"].split())
    lines += [about + f" Result file: `benchmarks/results/{record['name']}.json`.", ""]
    return lines


def task_order(tasks: set[str]) -> list[str]:
    known = [t for t, _, _ in TASKS if t in tasks]
    return known + sorted(tasks - set(known))


def render(records: list[dict[str, Any]]) -> str:
    """The whole page for ``records``."""
    titles = {t: (title, intro) for t, title, intro in TASKS}
    lines = [HEADER]
    for task in task_order({r["task"] for r in records}):
        title, intro = titles.get(task, (task.replace("-", " ").replace("/", ", ").capitalize(), ""))
        lines += [f"## {title}", ""] + ([intro, ""] if intro else [])
        mine = sorted((r for r in records if r["task"] == task), key=lambda r: (r.get("order", 1000), r["name"]))
        for record in mine:
            lines += render_result(record)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when docs/benchmarks.md is not up to date")
    args = ap.parse_args(argv)
    page = render(load_results())
    if args.check:
        same = PAGE.read_text(encoding="utf-8") == page
        print("docs/benchmarks.md is up to date" if same else "docs/benchmarks.md is stale: run "
              "python benchmarks/render_docs.py", file=sys.stderr)
        return 0 if same else 1
    PAGE.write_text(page, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
