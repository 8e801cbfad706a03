"""Data sources: every supported format loads as a :class:`SignalSet` with values in [0, 1]."""

from funcml.data.base import SPLITS, SPLIT_CODES, TASKS, ArraySignalSet, LazySignalSet, SignalSet, split_codes_random
from funcml.data.registry import LoadOptions, SourceKind, detect_source, load_signals, register_source, source_kinds

__all__ = [
    "SPLITS", "SPLIT_CODES", "TASKS", "SignalSet", "ArraySignalSet", "LazySignalSet", "split_codes_random",
    "LoadOptions", "SourceKind", "detect_source", "load_signals", "register_source", "source_kinds",
]
