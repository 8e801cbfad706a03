"""Feature groups of a latent set: the latents, and the auxiliary features stored beside them.

A feature choice is a comma-separated list of groups, e.g. ``latent``, ``rr`` or ``latent,rr``:
``latent`` is the P latent values (columns ``phi_0..phi_{P-1}``); any other group ``G`` is the
auxiliary features named ``G.*`` in the set (``rr`` = a beat's RR-interval features,
:mod:`funcml.data.sources.rr`). The groups' columns are placed side by side in the order given.
"""

from __future__ import annotations

import numpy as np

from funcml.errors import ConfigError, DataError

LATENT = "latent"


def parse_features(features: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"latent,rr"`` -> ``("latent", "rr")`` (no repeats, at least one group)."""
    groups = [g.strip() for g in (features.split(",") if isinstance(features, str) else features)]
    groups = [g for g in groups if g]
    if not groups or len(set(groups)) != len(groups):
        raise ConfigError(f"features must name one or more different groups (latent, rr, latent,rr ...); "
                          f"got {features!r}")
    return tuple(groups)


def aux_groups(aux_names: list[str]) -> list[str]:
    """The groups of auxiliary feature names ``GROUP.NAME``, in order of first appearance."""
    return list(dict.fromkeys(n.split(".", 1)[0] for n in aux_names))


def feature_columns(latent_set, features: str | tuple[str, ...]) -> tuple[list[str], list[int]]:
    """``(names, aux column indices)`` of a feature choice; raises a clear error for a group the set lacks."""
    names: list[str] = []
    aux_cols: list[int] = []
    for group in parse_features(features):
        if group == LATENT:
            names += [f"phi_{i}" for i in range(latent_set.latent_dim)]
            continue
        cols = [j for j, n in enumerate(latent_set.aux_names) if n.split(".", 1)[0] == group]
        if not cols:
            have = ", ".join([LATENT, *aux_groups(latent_set.aux_names)])
            hint = (" (RR features are stored by `funcml encode` of WFDB beat records, latent-set version 2)"
                    if group in ("rr", "rr_s") else "")
            raise ConfigError(f"{latent_set.path} has no {group!r} features; it has: {have}{hint}")
        names += [latent_set.aux_names[j] for j in cols]
        aux_cols += cols
    return names, aux_cols


def feature_matrix(latent_set, rows: np.ndarray | slice, features: str | tuple[str, ...]) -> np.ndarray:
    """Features ``(n, F)`` float32 of ``rows``: the groups of ``features`` side by side.

    Raises :class:`DataError` when a chosen auxiliary feature is undefined (NaN) in some row.
    """
    feature_columns(latent_set, features)  # a group the set lacks fails before anything is read
    parts = []
    for group in parse_features(features):
        if group == LATENT:
            parts.append(latent_set.rows(rows))
            continue
        _, cols = feature_columns(latent_set, group)
        block = np.array(latent_set.aux[rows][:, cols], dtype=np.float32)
        bad = ~np.isfinite(block).all(axis=1)
        if bad.any():
            raise DataError(f"{latent_set.path}: {int(bad.sum())} row(s) have undefined {group!r} features (e.g. "
                            f"row {int(np.arange(len(latent_set))[rows][np.argmax(bad)])}: a record with a "
                            f"single beat has no RR interval); leave those rows out")
        parts.append(block)
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
