"""Exceptions a user can cause, each with a message that says what to do.

The CLI (``apps``) prints any :class:`LayerwiseError` as one line and exits with code 2;
everything else is a bug and keeps its traceback.
"""

import difflib
from typing import Iterable


def did_you_mean(name: str, known: Iterable[str], hints: dict[str, str] | None = None) -> str:
    """`` (did you mean 'x'?)`` for the known name closest to ``name`` (``difflib``'s ratio, the
    way Python suggests a misspelt attribute), or ``""`` when none is close. ``hints`` maps names
    that are not close in spelling to what they mean here (Keras's ``epochs`` -> ``epochs_per_stage``)."""
    if hints and name in hints:
        return f" (did you mean {hints[name]!r}?)"
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class LayerwiseError(Exception):
    """Base class of every error caused by user input (bad config, missing data, ...)."""


class ConfigError(LayerwiseError, ValueError):
    """A configuration value is invalid (non-positive size, impossible shape, ...)."""


class UnknownNameError(LayerwiseError, KeyError):
    """A name (model, dataset, mode, preset, ...) is not registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DatasetUnavailableError(LayerwiseError):
    """A dataset is not on disk and cannot be downloaded here."""


class CheckpointError(LayerwiseError):
    """A checkpoint is missing, truncated, corrupt or from another configuration."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file is truncated or fails its checksums."""


class StorageError(LayerwiseError):
    """A file could not be written (disk full, permissions); what was written before is intact."""


class WorkdirMismatchError(LayerwiseError):
    """A run directory was written by a different configuration."""


class WorkdirBusyError(LayerwiseError):
    """Another process, or another thread of this one, holds the run directory (``layerwise.run.lock``)."""


class NonFiniteLossError(LayerwiseError):
    """Training produced a NaN or infinite loss, weight or BatchNorm statistic."""


class ServingInputError(LayerwiseError, ValueError):
    """An input sent to an exported model has the wrong size, channels or dtype."""


class ModelServerError(LayerwiseError):
    """A model server is unreachable, timed out, or does not serve the requested model/version."""
