"""Data sources: detect what a DATA argument is and load it as a :class:`SignalSet`.

A DATA argument is a path (its kind is detected: MedMNIST npz, WFDB record folder, UCR file, NIfTI,
image folder ...) or ``medmnist:NAME[@SIZE]``, or ``demo`` for the embedded BreastMNIST 28x28 file.
Each source registers a :class:`SourceKind`; :func:`load_signals` tries them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from funcml.data.base import SignalSet
from funcml.errors import ConfigError, DataError


@dataclass(frozen=True)
class LoadOptions:
    """Options every source understands, plus source-specific ``extra`` ones.

    Attributes:
        resolution: target spatial size (``(T,)``, ``(H, W)`` or ``(D, H, W)``); None keeps the native one.
        split_seed: seed for random splits of sources without official splits.
        val_fraction, test_fraction: fractions for such random splits.
        channels: force 1 (grey) or 3 (RGB) channels for image sources; None keeps the native count.
        extra: source-specific options (``{"test_records": "101,106"}`` ...); unknown keys are an error.
    """

    resolution: tuple[int, ...] | None = None
    split_seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    channels: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def take_extra(self, allowed: set[str], source: str) -> dict[str, str]:
        unknown = set(self.extra) - allowed
        if unknown:
            raise ConfigError(f"{source} does not understand option(s) {sorted(unknown)}; it takes {sorted(allowed) or 'none'}")
        return dict(self.extra)


@dataclass(frozen=True)
class SourceKind:
    """A data source: ``detect(path)`` says whether a path is of this kind, ``load`` reads it."""

    name: str
    description: str
    detect: Callable[[Path], bool]
    load: Callable[[str, LoadOptions], SignalSet]
    prefix: str | None = None  # e.g. "medmnist" for "medmnist:NAME" specs
    aliases: tuple[str, ...] = ()  # bare words that name this source's default data ("demo")


_SOURCES: list[SourceKind] = []


def register_source(kind: SourceKind) -> SourceKind:
    """Add a source kind (later registrations are tried after earlier ones)."""
    if any(k.name == kind.name for k in _SOURCES):
        raise ValueError(f"source {kind.name!r} registered twice")
    _SOURCES.append(kind)
    return kind


def source_kinds() -> list[SourceKind]:
    _ensure_builtin_sources()
    return list(_SOURCES)


def _ensure_builtin_sources() -> None:
    # Importing the modules registers them; done lazily to keep `import funcml` light.
    import funcml.data.sources  # noqa: F401


def detect_source(spec: str) -> SourceKind:
    """Return the source kind for a DATA argument, or raise :class:`DataError` explaining why not."""
    _ensure_builtin_sources()
    if ":" in spec and not Path(spec).exists():
        prefix = spec.split(":", 1)[0]
        for kind in _SOURCES:
            if kind.prefix == prefix:
                return kind
        known = sorted(k.prefix for k in _SOURCES if k.prefix)
        raise DataError(f"unknown data prefix {prefix!r} in {spec!r}; known prefixes: {known}")
    for kind in _SOURCES:
        if spec in kind.aliases and not Path(spec).exists():
            return kind
    path = Path(spec)
    if not path.exists():
        raise DataError(f"data not found: {spec}")
    if path.is_dir() and not any(path.iterdir()):
        raise DataError(f"data folder is empty: {spec}")
    for kind in _SOURCES:
        try:
            if kind.detect(path):
                return kind
        except OSError as exc:
            raise DataError(f"cannot read {spec}: {exc}") from None
    kinds = ", ".join(k.description for k in _SOURCES)
    raise DataError(f"cannot tell what kind of data {spec} is; funcml reads: {kinds}")


def load_signals(spec: str | Path, options: LoadOptions | None = None, **kwargs) -> SignalSet:
    """Load a DATA argument as a :class:`SignalSet`.

    ``kwargs`` are :class:`LoadOptions` fields (``resolution=64`` is expanded to the signal's
    dimensionality by the source). Raises :class:`DataError` for anything wrong with the data.
    """
    if options is None:
        res = kwargs.pop("resolution", None)
        if isinstance(res, int):
            res = (res,)
        options = LoadOptions(resolution=tuple(res) if res is not None else None, **kwargs)
    elif kwargs:
        raise TypeError("pass either options or keyword arguments, not both")
    spec = str(spec)
    kind = detect_source(spec)
    return kind.load(spec, options)


def expand_resolution(resolution: tuple[int, ...] | None, dim: int, source: str) -> tuple[int, ...] | None:
    """Expand ``(R,)`` to ``(R,) * dim``; check a full tuple has ``dim`` entries, all positive."""
    if resolution is None:
        return None
    if len(resolution) == 1:
        resolution = tuple(resolution) * dim
    if len(resolution) != dim or any(int(r) < 1 for r in resolution):
        raise ConfigError(f"{source}: resolution {resolution} does not fit {dim}-D signals")
    return tuple(int(r) for r in resolution)
