"""Fault injection for the reliability tests: SIGKILL a job at chosen durable writes, or at random moments.

:class:`DurableOps` counts the operations that change what is on disk (``os.replace``/``os.rename``
of atomic writes and directory publishes, ``os.unlink``, ``shutil.rmtree`` and ``np.memmap.flush``)
and labels each with the funcml function that asked for it. :func:`run_killed` forks the test
process and runs a job in the child with a real ``SIGKILL`` sent just before operation ``k``: no
``finally`` block, atexit handler or buffered write of the child survives, exactly as when a
machine's scheduler kills a job. Fork is cheap here (torch is already imported), so a test can kill
a job at every kind of durable step.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

_TARGETS = [(os, "replace"), (os, "rename"), (os, "unlink"), (shutil, "rmtree"), (np.memmap, "flush")]
_PKG = os.sep + "funcml" + os.sep


def _caller() -> str:
    """Name of the innermost funcml function outside funcml/io that is on the stack."""
    frame = sys._getframe(2)
    fallback = "?"
    while frame is not None:
        name = frame.f_code.co_filename
        if _PKG in name:
            if os.sep + "io" + os.sep not in name:
                return frame.f_code.co_name
            fallback = frame.f_code.co_name
        frame = frame.f_back
    return fallback


class DurableOps:
    """Count (and optionally SIGKILL before) durable file operations done by funcml code."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at = kill_at
        self.labels: list[str] = []
        self._depth = 0
        self._saved: list[tuple[object, str, object]] = []

    def _wrap(self, name: str, fn: Callable) -> Callable:
        def wrapper(*args, **kwargs):
            if self._depth == 0:
                label = f"{name} in {_caller()}"
                if label.endswith(" in ?"):  # not funcml's own operation
                    return fn(*args, **kwargs)
                self.labels.append(label)
                if len(self.labels) == self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            self._depth += 1
            try:
                return fn(*args, **kwargs)
            finally:
                self._depth -= 1
        return wrapper

    def install(self) -> None:
        for owner, name in _TARGETS:
            original = getattr(owner, name)
            self._saved.append((owner, name, original))
            setattr(owner, name, self._wrap(name, original))

    def remove(self) -> None:
        for owner, name, original in reversed(self._saved):
            setattr(owner, name, original)
        self._saved.clear()


@contextmanager
def recording() -> DurableOps:
    """Record the durable operations of a job run in this process (no kill)."""
    ops = DurableOps()
    ops.install()
    try:
        yield ops
    finally:
        ops.remove()


def run_killed(job: Callable[[], object], kill_at: int) -> int:
    """Run ``job`` in a forked child that SIGKILLs itself before durable operation ``kill_at`` (1-based).

    Returns the child's exit status as :func:`os.waitstatus_to_exitcode` gives it: ``-9`` when it was
    killed, 0 when the job finished first, 1 when the job raised.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            ops = DurableOps(kill_at)
            ops.install()
            job()
            code = 0
        except BaseException:  # noqa: BLE001
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def kill_points(labels: list[str]) -> list[int]:
    """1-based operation numbers to kill at: the first and the last occurrence of every kind of operation."""
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, label in enumerate(labels, start=1):
        first.setdefault(label, i)
        last[label] = i
    return sorted(set(first.values()) | set(last.values()))


def kill_when(proc, ready: Callable[[], bool], delay: float, timeout: float = 120.0) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds after ``ready()`` first holds. Returns whether it was still running."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            break
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def tree_files(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under ``root`` (to show what a kill left behind)."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}
