"""Row selections of a latent set written as text (``--indices 0,5,10-19``)."""

from __future__ import annotations

import numpy as np

from funcml.errors import ConfigError


def parse_indices(text: str | None, count: int, *, unique: bool = False) -> np.ndarray | None:
    """``"0,5,10-19"`` -> row indices ``(k,)`` int64 (ranges inclusive, in the order given; sorted without
    repeats when ``unique``), checked against ``count`` rows; None for None.

    Raises :class:`ConfigError` for malformed or reversed ranges, an empty selection or rows out of range.
    """
    if text is None:
        return None
    rows: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if not part:
                continue
            lo, sep, hi = part.partition("-")
            a = int(lo)
            b = int(hi) if sep else a
            if b < a:
                raise ValueError
            rows.extend(range(a, b + 1))
    except ValueError:
        raise ConfigError(f"--indices takes rows such as 0,5,10-19; got {text!r}") from None
    if not rows:
        raise ConfigError(f"--indices selects no rows: {text!r}")
    out = np.asarray(rows, dtype=np.int64)
    bad = out[(out < 0) | (out >= count)]
    if len(bad):
        raise ConfigError(f"--indices: row {int(bad[0])} is out of range: the latent set has rows 0-{count - 1}")
    return np.unique(out) if unique else out
