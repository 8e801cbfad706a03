"""Progress of long work: a tqdm bar on a terminal, a log line every few percent anywhere else.

Redirected to a file (CI, ``nohup``, a cluster job's log) a tqdm bar becomes hundreds of
carriage-return frames on one line; :func:`progress_bar` writes plain lines there instead::

    encode: 120/780 sig (15%), 6 s elapsed, 20.1 sig/s

It takes tqdm's arguments and returns an object with tqdm's interface (iteration, ``update``,
``set_postfix``, ``close``, ``with``), so every loop of funcml reports progress the same way.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Iterable, Iterator

LINE_PERCENT = 5.0  # a line each time this many more percent are done
LINE_SECONDS = 60.0  # without a known total: a line at most this often


def _interactive(stream: IO[str]) -> bool:
    if "ipykernel" in sys.modules:  # a notebook: tqdm.auto draws a widget
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class LineProgress:
    """tqdm's interface, reported as one line every ``percent`` percent (or ``seconds`` without a total)."""

    def __init__(self, iterable: Iterable | None = None, *, total: float | None = None, desc: str | None = None,
                 unit: str = "it", initial: float = 0, disable: bool = False, file: IO[str] | None = None,
                 percent: float = LINE_PERCENT, seconds: float = LINE_SECONDS, **_tqdm_only: Any) -> None:
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc or "progress", unit
        self.n, self.disable, self.file = initial, disable, file
        self.percent, self.seconds = percent, seconds
        self.postfix = ""
        self._start = self._last_time = time.monotonic()
        self._start_n = self._last_n = initial
        self._next_percent = (self._percent_done() // percent + 1) * percent

    def _percent_done(self) -> float:
        return 100.0 * self.n / self.total if self.total else 0.0

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        if self.disable:
            return
        self.n += n
        if self.total:
            if self._percent_done() >= self._next_percent or self.n >= self.total:
                self._write()
                self._next_percent = (self._percent_done() // self.percent + 1) * self.percent
        elif time.monotonic() - self._last_time >= self.seconds:
            self._write()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in items.items())

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or self.desc

    def refresh(self) -> None:
        """Nothing to redraw: lines are written as progress is made."""

    def close(self) -> None:
        if not self.disable and self.n != self._last_n:
            self._write()
        self.disable = True

    def _write(self) -> None:
        now = time.monotonic()
        elapsed = now - self._start
        rate = (self.n - self._start_n) / elapsed if elapsed > 0 else 0.0
        done = f"{self.n:g}/{self.total:g} {self.unit} ({self._percent_done():.0f}%)" if self.total else \
            f"{self.n:g} {self.unit}"
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}, {elapsed:.0f} s elapsed, {rate:.3g} {self.unit}/s{extra}",
              file=self.file or sys.stderr, flush=True)
        self._last_time, self._last_n = now, self.n


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> Any:
    """A tqdm bar when stderr (or ``file``) is a terminal or notebook, else a :class:`LineProgress`.

    Takes tqdm's arguments (``total``, ``desc``, ``unit``, ``initial``, ``disable``, ``leave`` ...).
    """
    stream = kwargs.get("file") or sys.stderr
    if kwargs.get("disable") or not _interactive(stream):
        return LineProgress(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
