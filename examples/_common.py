"""Helpers shared by the example scripts: run `funcml` commands in-process and report results."""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import time
from pathlib import Path


def funcml(*args: str) -> dict:
    """Run ``funcml ARGS --json`` in this process (as the shell command would) and return its JSON.

    The command line is printed first, so the example's log shows what to type in a shell.
    """
    from funcml.cli import cli

    argv = [str(a) for a in args] + ["--json"]
    print("$ funcml " + " ".join(shlex.quote(a) for a in argv), flush=True)
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        cli.main(args=argv, prog_name="funcml", standalone_mode=False)
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def data_or_none(path: str | Path) -> Path | None:
    """The path when it exists, else None (the examples then say how to get the data)."""
    p = Path(path)
    return p if p.exists() else None


class Timer:
    """Wall time since construction, for the 'run time' line of each example."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.t0:.0f} s"


def write_result(out: Path, result: dict) -> None:
    """Write the example's numbers to ``out/result.json`` and print them as one JSON line."""
    from funcml.io import atomic_write_json

    atomic_write_json(out / "result.json", result)
    print(json.dumps(result, sort_keys=True))
