"""The CPU memory allocator: glibc malloc tuning (default) and opt-in tcmalloc.

On CPU, glibc malloc may hand the large activation buffers of meta-learning back to the kernel
and fault them in again at every step (page faults cost as much as the arithmetic on them: a
fresh 12 MB tensor costs ~1.5 ns per element, more than ``sin``). Two remedies, measured in
docs/benchmarks.md:

* :func:`tune_glibc_malloc` (done by the ``funcml`` command at start unless ``FUNCML_MALLOC_TUNE=0``):
  big blocks come from the heap and freed memory is kept for reuse (``mallopt`` thresholds);
* tcmalloc, opt-in with ``FUNCML_TCMALLOC=1``: the ``funcml`` command re-executes itself once with
  ``libtcmalloc_minimal`` in ``LD_PRELOAD`` (Debian/Ubuntu: ``apt-get install libtcmalloc-minimal4``);
  when the library is absent it says so and carries on with the default allocator.

Both change the whole process, so only the command's entry point (:func:`funcml.cli.main`) applies
them; library calls (training, encoding from Python) never do. A script or notebook that wants the
tuning calls :func:`tune_glibc_malloc` itself.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from pathlib import Path

from funcml import environment

ENV = environment.TCMALLOC
TUNE_ENV = environment.MALLOC_TUNE
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
NEVER = -1  # as M_TRIM_THRESHOLD: never trim (glibc reads it as the largest size_t)
CANDIDATES = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4",
              "/usr/lib64/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4",
              "/usr/local/lib/libtcmalloc_minimal.so.4")


def find_tcmalloc() -> str | None:
    """Path of ``libtcmalloc_minimal`` if installed, else None."""
    for path in CANDIDATES:
        if Path(path).is_file():
            return path
    name = ctypes.util.find_library("tcmalloc_minimal")
    return name


def requested(environ: dict | None = None) -> bool:
    return environment.tcmalloc(environ)


def preloaded(environ: dict | None = None) -> bool:
    return "tcmalloc" in environment.preload(environ)


def reexec_with_tcmalloc() -> None:
    """Replace this process by the same command with tcmalloc preloaded, when requested and
    possible; otherwise return (after a one-line note if the library is missing)."""
    if not requested() or preloaded() or not sys.platform.startswith("linux"):
        return
    lib = find_tcmalloc()
    if lib is None:
        print(f"note: {ENV}=1 but libtcmalloc_minimal was not found (apt-get install libtcmalloc-minimal4); "
              f"using the default allocator", file=sys.stderr)
        return
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{lib} {env.get('LD_PRELOAD', '')}".strip()
    try:
        os.execve(sys.executable, [sys.executable, *argv[1:]], env)
    except OSError as exc:  # never fail the command because of the allocator
        print(f"note: could not restart with tcmalloc ({exc}); using the default allocator", file=sys.stderr)


def tune_glibc_malloc() -> bool:
    """Keep freed memory for reuse instead of returning it to the kernel (glibc only; calling it again
    changes nothing).

    Sets ``M_MMAP_THRESHOLD`` to 32 MB (the largest glibc allows: blocks up to that size come from
    the heap, not from fresh ``mmap`` pages) and turns off ``M_TRIM_THRESHOLD`` (the heap top is
    never handed back: with a 1 GB threshold a 32^3 meta-step, which frees 6 GB at its end, at times
    gave it back and faulted it in again: 915k page faults and 3 s of system time in such a step).
    Returns True when applied. Peak memory does not grow; the process simply keeps its peak until
    it exits, for reuse by its later allocations.
    """
    if not environment.malloc_tune() or preloaded():
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, NEVER) == 1
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    return ok
