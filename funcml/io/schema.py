"""A small JSON schema checker for the files funcml reads back (manifests, configs, checkpoints).

Schemas are built from a few combinators and checked with :func:`validate`, which raises
:class:`~funcml.errors.ArtifactError` with one message naming the file, the field path and the
problem (``manifest.json: splits.train must be an integer >= 0, got 'x'``). Only what funcml itself
writes is accepted: unknown keys in strict objects, wrong types, NaN/Inf and out-of-range numbers
are refused, so that a foreign, truncated or tampered file fails at open, not deep inside a job.

Example::

    SCHEMA = Obj({"count": Int(min=0), "name": Str(), "tags": List(Str())}, optional={"tags"})
    validate(read_json(path), SCHEMA, path)
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from funcml.errors import ArtifactError


class SchemaError(ValueError):
    """A value does not match its schema (``path``: where, ``message``: what is wrong)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path or 'the document'} {message}")
        self.path = path
        self.message = message


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


class Spec:
    """Base class: ``check(value, path)`` raises :class:`SchemaError` or returns None."""

    def check(self, value: Any, path: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def __or__(self, other: "Spec") -> "AnyOf":
        return AnyOf(self, other)


class Anything(Spec):
    """Any JSON value (free-form provenance)."""

    def check(self, value: Any, path: str) -> None:
        _check_json(value, path)


def _check_json(value: Any, path: str) -> None:
    """Reject non-finite floats anywhere inside a free-form value (JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(path, f"must be a finite number, got {value!r}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_json(v, _join(path, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_json(v, _join(path, i))


class Null(Spec):
    def check(self, value: Any, path: str) -> None:
        if value is not None:
            raise SchemaError(path, f"must be null, got {_show(value)}")


class Bool(Spec):
    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, bool):
            raise SchemaError(path, f"must be true or false, got {_show(value)}")


class Int(Spec):
    """An integer (``true``/``false`` are not integers) within ``[min, max]``."""

    def __init__(self, min: int | None = None, max: int | None = None) -> None:  # noqa: A002
        self.min, self.max = min, max

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise SchemaError(path, f"must be an integer, got {_show(value)}")
        if self.min is not None and value < self.min:
            raise SchemaError(path, f"must be an integer >= {self.min}, got {value}")
        if self.max is not None and value > self.max:
            raise SchemaError(path, f"must be an integer <= {self.max}, got {value}")


class Float(Spec):
    """A finite number (integers allowed) within ``[min, max]``; ``gt`` gives an open lower bound."""

    def __init__(self, min: float | None = None, max: float | None = None, gt: float | None = None) -> None:  # noqa: A002
        self.min, self.max, self.gt = min, max, gt

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise SchemaError(path, f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            raise SchemaError(path, f"must be a finite number, got {value!r}")
        if self.min is not None and value < self.min:
            raise SchemaError(path, f"must be >= {self.min}, got {value}")
        if self.gt is not None and not value > self.gt:
            raise SchemaError(path, f"must be > {self.gt}, got {value}")
        if self.max is not None and value > self.max:
            raise SchemaError(path, f"must be <= {self.max}, got {value}")


class Str(Spec):
    """A string, optionally matching ``pattern`` (full match) or one of ``choices``."""

    def __init__(self, pattern: str | None = None, choices: tuple[str, ...] | None = None) -> None:
        self.pattern = re.compile(pattern) if pattern else None
        self.choices = choices

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, str):
            raise SchemaError(path, f"must be a string, got {_show(value)}")
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise SchemaError(path, f"has an invalid value {_show(value)}")
        if self.choices is not None and value not in self.choices:
            raise SchemaError(path, f"must be one of {list(self.choices)}, got {_show(value)}")


SHA256 = Str(pattern=r"[0-9a-f]{64}")


class List(Spec):
    """A list whose items all match ``items``, with ``min_len <= len <= max_len``."""

    def __init__(self, items: Spec, min_len: int = 0, max_len: int | None = None) -> None:
        self.items, self.min_len, self.max_len = items, min_len, max_len

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, list):
            raise SchemaError(path, f"must be a list, got {_show(value)}")
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            bound = f"{self.min_len}..{self.max_len}" if self.max_len is not None else f">= {self.min_len}"
            raise SchemaError(path, f"must have {bound} items, got {len(value)}")
        for i, item in enumerate(value):
            self.items.check(item, _join(path, i))


class Map(Spec):
    """An object with free keys (matching ``keys``) whose values all match ``values``."""

    def __init__(self, values: Spec, keys: Str | None = None) -> None:
        self.values, self.keys = values, keys

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be an object, got {_show(value)}")
        for k, v in value.items():
            if self.keys is not None:
                self.keys.check(k, _join(path, str(k)))
            self.values.check(v, _join(path, str(k)))


class Obj(Spec):
    """An object with known keys. Keys not in ``optional`` are required; others are refused unless ``extra``."""

    def __init__(self, fields: Mapping[str, Spec], optional: set[str] | frozenset[str] = frozenset(),
                 extra: bool = False) -> None:
        self.fields, self.optional, self.extra = dict(fields), frozenset(optional), extra

    def check(self, value: Any, path: str) -> None:
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be an object, got {_show(value)}")
        for key, spec in self.fields.items():
            if key not in value:
                if key not in self.optional:
                    raise SchemaError(_join(path, key), "is missing")
                continue
            spec.check(value[key], _join(path, key))
        if not self.extra:
            unknown = sorted(set(value) - set(self.fields))
            if unknown:
                raise SchemaError(path, f"has unknown field(s) {unknown}")
        else:
            for key in set(value) - set(self.fields):
                _check_json(value[key], _join(path, key))


class AnyOf(Spec):
    """Matches if one of ``specs`` matches (e.g. ``Str() | Null()``)."""

    def __init__(self, *specs: Spec) -> None:
        self.specs = specs

    def check(self, value: Any, path: str) -> None:
        errors = []
        for spec in self.specs:
            try:
                spec.check(value, path)
                return
            except SchemaError as exc:
                errors.append(exc.message)
        raise SchemaError(path, " or ".join(dict.fromkeys(errors)))


def validate(value: Any, schema: Spec, what: str) -> Any:
    """Check ``value`` against ``schema``; raise :class:`ArtifactError` ``"{what}: {path} {problem}"``."""
    try:
        schema.check(value, "")
    except SchemaError as exc:
        raise ArtifactError(f"{what}: {exc}") from None
    return value
