"""Advisory output locks: one process at a time writes a given output.

Two runs of the same ``funcml train`` or ``funcml encode`` (two terminals, or a scheduler restarting a
job whose first instance is still alive) would otherwise write the same checkpoint or partial latent
file at once. :class:`OutputLock` takes a non-blocking ``flock`` on a hidden sibling file
``.NAME.lock``; the kernel releases it when the process ends, however it ends (SIGKILL included), so
a stale lock never blocks a restart.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from funcml.errors import OutputExistsError


def lock_path(output: str | Path) -> Path:
    """The lock file guarding ``output``: ``.NAME.lock`` next to it."""
    output = Path(output)
    return output.with_name(f".{output.name}.lock")


class OutputLock:
    """An exclusive lock on an output path, held from construction until :meth:`release`.

    Raises :class:`OutputExistsError` naming the other process when the output is locked.
    """

    def __init__(self, output: str | Path) -> None:
        self.output = Path(output)
        self.path = lock_path(self.output)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            f = open(self.path, "a+")
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip()
                f.close()
                who = f" (pid {holder})" if holder.isdigit() else ""
                raise OutputExistsError(f"another funcml process{who} is writing {self.output}; wait for it to "
                                        f"finish or stop it, then rerun") from None
            # The holder before us may have removed the file after we opened it: lock the live one.
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        f = getattr(self, "_file", None)
        if f is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        f.close()
        self._file = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
