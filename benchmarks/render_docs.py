"""Render ``docs/benchmarks.md``, and the tables marked in the other pages, from ``benchmarks/results/``.

    python benchmarks/render_docs.py            # rewrite docs/benchmarks.md and the marked tables
    python benchmarks/render_docs.py --check    # exit 1 when a committed page differs

One section per task (the ``task`` of each result: the known ones in a fixed order, any other
alphabetically), in it every result's tables (``tables``, see :func:`results.table`), then the
command that produced them, the machine (CPU or GPU, threads, versions) and the result's ``notes``.
The page holds nothing that is not in a result file, so a rerun of a benchmark script followed by
this script updates it, and ``tests/test_benchmark_results.py`` fails when page and files disagree.

A topic page (any other page under ``docs/``) shows a result's table by marking its place::

    <!-- table: fidelity_budget 0 -->
    <!-- end table -->

(the result's name and the table's index in its ``tables``); this script writes the table between the
two lines, with the result file named under it, so the numbers in the prose pages come from the
result files too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
PAGE = HERE.parent / "docs" / "benchmarks.md"
BLOCK = re.compile(r"(?P<head><!-- table: (?P<name>[\w.-]+) (?P<index>\d+) -->\n)(?P<body>.*?)"
                   r"(?P<end><!-- end table -->)", re.S)

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


def load_results(directory: Path | None = None) -> list[dict[str, Any]]:
    """Every result record under ``directory`` (default: ``benchmarks/results``)."""
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((directory or RESULTS_DIR).glob("*.json"))]


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


def table_lines(tab: dict[str, Any]) -> list[str]:
    """The markdown lines of one result table (header, rows, caption), without its title."""
    lines = ["| " + " | ".join(cell(c) for c in tab["columns"]) + " |", "|" + "---|" * len(tab["columns"])]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in tab["rows"]]
    if tab.get("caption"):
        lines += ["", " ".join(tab["caption"].split())]
    return lines


def markdown_table(tab: dict[str, Any]) -> list[str]:
    return [f"### {tab['title']}", ""] + table_lines(tab) + [""]


def fill_tables(text: str, records: list[dict[str, Any]], page: str = "page") -> str:
    """``text`` with every marked table (see the module docstring) rewritten from ``records``."""
    by_name = {r["name"]: r for r in records}

    def one(m: re.Match) -> str:
        name, index = m["name"], int(m["index"])
        where = f"{page}: marked table {name} {index}"
        if name not in by_name:
            raise SystemExit(f"{where}: no result benchmarks/results/{name}.json")
        tables = by_name[name].get("tables") or []
        if index >= len(tables):
            raise SystemExit(f"{where}: benchmarks/results/{name}.json has {len(tables)} table(s)")
        body = [f"*{tables[index]['title']}*", ""] + table_lines(tables[index]) + \
            ["", f"(Rendered from `benchmarks/results/{name}.json`.)"]
        return m["head"] + "\n".join(body) + "\n" + m["end"]
    return BLOCK.sub(one, text)


def topic_pages(records: list[dict[str, Any]], docs: Path) -> dict[Path, tuple[str, str]]:
    """Each page under ``docs`` (not the benchmarks page) that marks tables: (committed text, rendered text)."""
    out = {}
    for path in sorted(docs.rglob("*.md")):
        if path == PAGE:
            continue
        text = path.read_text(encoding="utf-8")
        if BLOCK.search(text):
            out[path] = (text, fill_tables(text, records, path.name))
    return out


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
    ap.add_argument("--check", action="store_true", help="exit 1 when a page is not up to date")
    args = ap.parse_args(argv)
    records = load_results()
    pages = {PAGE: (PAGE.read_text(encoding="utf-8") if PAGE.exists() else "", render(records)),
             **topic_pages(records, PAGE.parent)}
    stale = [p.name for p, (committed, rendered) in pages.items() if committed != rendered]
    if args.check:
        print(f"stale: {', '.join(stale)}: run python benchmarks/render_docs.py" if stale else
              "the rendered pages are up to date", file=sys.stderr)
        return 1 if stale else 0
    for path, (committed, rendered) in pages.items():
        if committed != rendered:
            path.write_text(rendered, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
