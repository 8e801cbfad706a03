"""Benchmark results as self-describing JSON files under ``benchmarks/results/``.

Every benchmark script ends with :func:`write_result`: one file per named result, holding the
command that produced it (paths of the shared data folder and the checkout written as
``$FUNCML_SHARED_DATA`` and ``.``, so the file names no machine path), the hardware, the package
versions, the date and the script's own numbers. ``docs/benchmarks.md`` is rendered from these files
(``python benchmarks/render_docs.py``), so the docs cannot drift from what the scripts measured.

Scripts find the real datasets through :func:`shared_data` (``FUNCML_SHARED_DATA``, default
``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"
SHARED_DATA_ENV = "FUNCML_SHARED_DATA"


def shared_data() -> Path:
    """The folder of real datasets: ``$FUNCML_SHARED_DATA``, else ``../shared/data`` beside the checkout."""
    return Path(os.environ.get(SHARED_DATA_ENV) or REPO.parent / "shared" / "data")


def portable(text: str) -> str:
    """``text`` with the shared data folder, the checkout and the home folder written portably."""
    replacements = [(str(shared_data().resolve()), f"${SHARED_DATA_ENV}"), (str(REPO), "."),
                    (str(Path.home()), "~")]
    for old, new in sorted(replacements, key=lambda r: -len(r[0])):
        if old and old not in (".", "/"):
            text = text.replace(old, new)
    return text


def command_line(argv: list[str] | None = None) -> str:
    """The command that ran this script, as a user would type it from the checkout."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0])
    with_repo = script.resolve().is_relative_to(REPO) if script.exists() else False
    head = f"python {script.resolve().relative_to(REPO)}" if with_repo else f"python {argv[0]}"
    return portable(" ".join([head, *map(shlex.quote, argv[1:])]))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """Hardware, thread count and versions of this process."""
    import numpy
    import torch

    import funcml

    env: dict[str, Any] = {
        "cpu": _cpu_model(), "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "os": platform.system(), "python": platform.python_version(), "torch": torch.__version__,
        "numpy": numpy.__version__, "funcml": getattr(funcml, "__version__", "unknown"),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["cuda"] = torch.version.cuda
    return env


def table(title: str, columns: list[str], rows: list[list[Any]], caption: str | None = None) -> dict[str, Any]:
    """One table for the docs: ``rows`` of ``len(columns)`` cells (numbers or strings)."""
    bad = [r for r in rows if len(r) != len(columns)]
    if bad:
        raise ValueError(f"table {title!r}: {len(bad)} row(s) do not have {len(columns)} cells: {bad[0]}")
    return {"title": title, "columns": list(columns), "rows": [list(r) for r in rows], "caption": caption}


def tables_from_markdown(text: str, title: str) -> list[dict[str, Any]]:
    """The Markdown tables in ``text`` (blocks between blank lines) as :func:`table` dicts.

    A block's line before its table, if any, is the table's title (after ``title: ``); a table
    without one is called ``title``.
    """
    tables = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        head = [line for line in lines if not line.startswith("|")]
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines if line.startswith("|")]
        if len(rows) < 2:
            continue
        name = f"{title}: {head[0].rstrip(':')}" if head else title
        tables.append(table(name, rows[0], [r for r in rows[2:]]))
    return tables


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN/Inf as None, numpy scalars and arrays as Python values, tuples as lists."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalars and arrays
        return json_ready(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_result(name: str, results: Any, *, task: str, tables: list[dict[str, Any]] | None = None,
                 argv: list[str] | None = None, notes: str | None = None, directory: Path | None = None,
                 order: int | None = None, inputs: list[str] | None = None) -> Path:
    """Write ``results`` (JSON-serialisable) as ``benchmarks/results/{name}.json`` with its provenance.

    ``task``: the docs section it belongs to (for example ``fidelity``, ``query``, ``classification``,
    ``performance``, ``gpu``). ``tables``: what the docs show of it (see :func:`table`), rendered
    with the command under them. ``notes``: one line on conditions a reader should know (for
    example, that other jobs were running). NaN and infinite numbers are written as null, numpy
    values as plain numbers. ``order``: its place among the task's results on the page
    (lower first; results without one follow, by name). ``inputs``: for a script that gathers runs
    made before (a ``report``), the commands that made them; they come before its own command in
    ``command``, one per line. Returns the path written. The write is atomic (temporary file, then
    rename).
    """
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"result name must be a plain file stem, got {name!r}")
    record = {
        "name": name, "task": task, "command": "\n".join([*(inputs or []), command_line(argv)]),
        "script": Path((argv or sys.argv)[0]).name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "environment": environment(), "notes": notes, "tables": json_ready(tables or []),
        "results": json_ready(results),
    }
    if order is not None:
        record["order"] = order
    text = portable(json.dumps(record, indent=2, allow_nan=False)) + "\n"
    out = (directory or RESULTS_DIR) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    return out


def read_result(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The record written by :func:`write_result` under ``name``."""
    return json.loads(((directory or RESULTS_DIR) / f"{name}.json").read_text(encoding="utf-8"))
