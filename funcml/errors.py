"""User-facing errors.

Everything a user can cause (a missing file, a wrong shape, NaN values, a latent set used with the
wrong model, ...) raises a :class:`FuncmlError` subclass with one clear message. The CLI turns these
into a single ``error: ...`` line and a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import re


class FuncmlError(Exception):
    """Base class for errors caused by input, options or files (not by bugs).

    The message is kept to one line (line breaks in text quoted from libraries become spaces), as the
    CLI prints it as one ``error: ...`` line.
    """

    exit_code = 2

    def __init__(self, message: object = "", *args: object) -> None:
        super().__init__(re.sub(r"\s*\n\s*", " ", str(message)).strip(), *args)


class DataError(FuncmlError):
    """Input data is missing, unreadable, malformed, or has invalid values."""


class ArtifactError(FuncmlError):
    """A model, checkpoint or latent set is missing, corrupt, or does not match."""


class ConfigError(FuncmlError):
    """An option or configuration value is out of range or inconsistent."""


class OutputExistsError(FuncmlError):
    """The output path exists and ``--overwrite`` was not given."""


class TrainingDivergedError(FuncmlError):
    """Meta-training produced a non-finite loss; the last good checkpoint is kept."""

    exit_code = 3


class DataWarning(UserWarning):
    """Data that load but not as asked (records of a protocol missing from the folder, ...); the CLI
    prints each as one ``warning: ...`` line."""
