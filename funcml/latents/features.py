"""Feature groups of a latent set: the latents, and the auxiliary features stored beside them.

A feature choice is a comma-separated list of groups, e.g. ``latent``, ``rr`` or ``latent,rr``:
``latent`` is the P latent values (columns ``phi_0..phi_{P-1}``); any other group ``G`` is the
auxiliary features named ``G.*`` in the set (``rr`` = a beat's RR-interval features,
:mod:`funcml.data.sources.rr`). The groups' columns are placed side by side in the order given.

``latent_rec`` is the latents centred on their record: each row minus the median latent of every
row of the set from the same record (columns ``phi_rec_0..``). The beats of one record share the
record's mean RR interval (``rr_s.record``), which identifies the record (two records with the
same mean interval to float32 precision would count as one), so the group needs a set with RR
features. It uses no label: a new patient's beats are centred on that patient's own
typical beat, a per-patient normalisation that works on test records as on training records.
"""

from __future__ import annotations

import numpy as np

from funcml.errors import ConfigError, DataError

LATENT = "latent"
LATENT_REC = "latent_rec"
RECORD_KEY = "rr_s.record"  # one value per record: the key of the record a row comes from
_AUX_HINTS = {  # what a user is told when a set lacks a group of auxiliary features
    "rr": " (RR features are stored by `funcml encode` of WFDB beat records, latent-set version 2)",
    "qrs": " (QRS features are stored by `funcml encode` of WFDB beat records only; a WFDB set encoded "
           "before they existed lacks them: encode the records again)",
}


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
        if group in (LATENT, LATENT_REC):
            prefix = "phi_" if group == LATENT else "phi_rec_"
            names += [f"{prefix}{i}" for i in range(latent_set.latent_dim)]
            if group == LATENT_REC and RECORD_KEY not in latent_set.aux_names:
                raise ConfigError(f"{latent_set.path} has no {RECORD_KEY!r} feature to find a row's record by; "
                                  f"{LATENT_REC!r} needs a latent set with RR features (latent-set version 2)")
            continue
        cols = [j for j, n in enumerate(latent_set.aux_names) if n.split(".", 1)[0] == group]
        if not cols:
            rec = [LATENT_REC] if RECORD_KEY in latent_set.aux_names else []
            have = ", ".join([LATENT, *rec, *aux_groups(latent_set.aux_names)])
            hint = _AUX_HINTS.get(group.removesuffix("_s"), "")
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
        if group == LATENT_REC:
            parts.append(record_centred(latent_set, rows))
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


def record_keys(latent_set) -> np.ndarray:
    """The record key ``(N,)`` of every row (its ``rr_s.record``); raises when a row has none."""
    keys = np.asarray(latent_set.aux[:, latent_set.aux_names.index(RECORD_KEY)], dtype=np.float64)
    if not np.isfinite(keys).all():
        raise DataError(f"{latent_set.path}: {int((~np.isfinite(keys)).sum())} row(s) have no {RECORD_KEY!r} "
                        f"(a record with a single beat) and cannot be centred on their record; leave them out")
    return keys


def record_centred(latent_set, rows: np.ndarray | slice) -> np.ndarray:
    """Latents ``(n, P)`` float32 of ``rows`` minus the median latent of all the set's rows of their record."""
    keys = record_keys(latent_set)
    rows = np.arange(len(latent_set))[rows]
    out = latent_set.rows(rows)
    for key in np.unique(keys[rows]):
        out[keys[rows] == key] -= np.median(latent_set.rows(np.flatnonzero(keys == key)), axis=0)
    return out
