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


def dataset_path(given: str | None, name: str, what: str) -> str:
    """The data to use: ``given`` (a path, or a DATA spec such as ``demo``), else the supported dataset
    ``name`` from the data root (``funcml datasets``). Stops with what to download and where when it is
    missing; ``what`` describes the data expected in ``given``."""
    from funcml.data.catalog import locate
    from funcml.errors import DataError

    if given is not None:
        if Path(given).exists() or given == "demo" or given.startswith("medmnist:"):
            return given
        raise SystemExit(f"error: {given} not found: pass {what}")
    try:
        return str(locate(name))
    except DataError as exc:
        raise SystemExit(f"error: {exc} (or pass {what})") from None


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
