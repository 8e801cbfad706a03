"""The environment variables funcml reads, all of them here (one parser, one list, one place to look).

=======================  ==================  ==================================================================
variable                 default             effect
=======================  ==================  ==================================================================
``FUNCML_DATA``          ``~/.funcml/data``  data root of ``funcml datasets`` and named data sets
``FUNCML_MEDMNIST_ROOT`` (none)              a ``medmnist`` cache searched before ``~/.medmnist``
``FUNCML_THREADS``       torch's choice      CPU threads of a ``funcml`` command (its ``--threads`` option)
``FUNCML_MALLOC_TUNE``   on                  glibc malloc tuning at the start of a ``funcml`` command
``FUNCML_TCMALLOC``      off                 a ``funcml`` command restarts itself with tcmalloc preloaded
``FUNCML_DEBUG``         off                 a ``funcml`` command prints the traceback of an internal error
``FUNCML_TILED``         on                  the ``cpu`` backend's tiled latent-gradient pass (off: layer by
                                             layer; a measurement switch, same math)
``FUNCML_TILED_BLAS``    ``auto``            the tiled pass's products: ``aten`` (torch's BLAS, where built),
                                             ``scipy`` (SciPy's BLAS); ``auto``: ``aten`` where it loads
``WORLD_SIZE``,          1, 0                set by ``torchrun``: the processes of a scale-out run
``LOCAL_RANK``
=======================  ==================  ==================================================================

Library code asks this module; it never reads ``os.environ`` itself. The values are read at each
call (a test or a benchmark may change them between calls). Build-time variables (the C loops'
``FUNCML_PORTABLE_BUILD``) are read by ``setup.py``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = "FUNCML_DATA"
MEDMNIST_ROOT = "FUNCML_MEDMNIST_ROOT"
THREADS = "FUNCML_THREADS"
MALLOC_TUNE = "FUNCML_MALLOC_TUNE"
TCMALLOC = "FUNCML_TCMALLOC"
DEBUG = "FUNCML_DEBUG"
TILED = "FUNCML_TILED"
TILED_BLAS = "FUNCML_TILED_BLAS"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(name: str, default: bool, environ: dict | None = None) -> bool:
    """A yes/no variable: ``1 true yes on`` or ``0 false no off`` (any case); unset, empty or anything
    else gives ``default``."""
    value = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


def text(name: str, environ: dict | None = None) -> str | None:
    """A variable's value, None when unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value or None


def data_root() -> Path | None:
    """``$FUNCML_DATA`` (None when unset)."""
    value = text(DATA)
    return None if value is None else Path(value)


def medmnist_root() -> Path | None:
    """``$FUNCML_MEDMNIST_ROOT`` (None when unset)."""
    value = text(MEDMNIST_ROOT)
    return None if value is None else Path(value)


def debug() -> bool:
    """``FUNCML_DEBUG``: any non-empty value but ``0``/``false``/``no``/``off`` turns it on."""
    return text(DEBUG) is not None and flag(DEBUG, True)


def malloc_tune() -> bool:
    """``FUNCML_MALLOC_TUNE`` (default on)."""
    return flag(MALLOC_TUNE, True)


def tcmalloc(environ: dict | None = None) -> bool:
    """``FUNCML_TCMALLOC`` (default off)."""
    return flag(TCMALLOC, False, environ)


def preload(environ: dict | None = None) -> str:
    """``LD_PRELOAD`` ('' when unset)."""
    return text("LD_PRELOAD", environ) or ""


def tiled_pass() -> bool:
    """``FUNCML_TILED`` (default on): the default of :attr:`funcml.backends.Execution.tiled`."""
    return flag(TILED, True)


def tiled_blas() -> str:
    """``FUNCML_TILED_BLAS``: ``auto`` (default; also for any other value), ``aten`` or ``scipy``."""
    value = (text(TILED_BLAS) or "auto").strip().lower()
    return value if value in ("aten", "scipy") else "auto"


def world_size() -> int:
    """``WORLD_SIZE`` of a ``torchrun`` launch (1 without one)."""
    return int(text("WORLD_SIZE") or 1)


def local_rank() -> int:
    """``LOCAL_RANK`` of a ``torchrun`` launch (0 without one)."""
    return int(text("LOCAL_RANK") or 0)
