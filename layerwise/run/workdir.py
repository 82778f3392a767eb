"""The run directory: its layout, and the guards against mixing two runs in one.

A run directory holds one configuration (``config.json``, written first) and everything a run of
it writes. Three guards keep it that way:

- :func:`check_workdir` (no writes) refuses, before anything is loaded or written, a path that
  cannot be a run directory (empty, a file, under a file, not writable), a non-empty directory
  that is not a run (the user's own files would be overwritten), and a run of another
  configuration;
- :func:`open_run` creates the directory, holds its lock (``layerwise.run.lock``) for the whole
  run, checks again under the lock and writes ``config.json``: two processes started together
  cannot both pass;
- a rerun must match the stored configuration field by field.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator

from layerwise.config import FILLED_FROM_DATA, TrainConfig, schema
from layerwise.errors import ConfigError, StorageError, WorkdirMismatchError
import layerwise.files as files
from layerwise.files import atomic_write_text
from layerwise.run.lock import LOCK_FILE, workdir_lock

CONFIG_FILE = "config.json"


def read_config(workdir: str) -> dict[str, Any]:
    """The ``config.json`` of a run directory, with every field of :class:`TrainConfig`.

    A run's record is never completed with defaults: a field missing from it (deleted by hand, or a
    file cut short by an editor) would silently take the default on resume and export, which may
    not be what the run was trained with.

    Raises:
        ConfigError: ``workdir`` holds no run, its ``config.json`` is unreadable, not an object,
            or lacks a field (named, with the default it would have taken).
    """
    path = files.join(workdir, CONFIG_FILE)
    if not files.exists(path):
        raise ConfigError(f"{workdir} is not a run directory (no {CONFIG_FILE}); pass the --workdir of a training run")
    try:
        values = json.loads(files.read_text(path))
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({files.first_line(e)}); pass the --workdir of a training run") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(
            f"{path} is corrupt ({type(e).__name__}: {str(e)[:120]}); restore it from a backup, or start the run "
            "again in a new --workdir"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} is corrupt (not a JSON object of config fields); use a new --workdir")
    missing = schema.missing_fields(TrainConfig, values)
    if missing:
        defaults = schema.flat_names(TrainConfig)
        shown = ", ".join(f"{name} (default {defaults[name].default!r})" for name in missing[:4])
        raise ConfigError(
            f"{path} lacks {len(missing)} field(s): {shown}{', ...' if len(missing) > 4 else ''}; a run's "
            "configuration is never completed with defaults: restore config.json from a backup, or add the "
            "field(s) with the values this run was trained with, or start the run again in a new --workdir"
        )
    return values


def _differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _foreign_entries(workdir: str) -> list[str]:
    """What ``workdir`` holds besides our lock file and temporary files of an interrupted write."""
    return [n for n in files.listdir(workdir) if n != LOCK_FILE and ".tmp-" not in n]


def check_path(workdir: str) -> None:
    """Refuses a path that cannot be (or become) a run directory; writes nothing.

    Raises:
        ConfigError: an empty path, a file, a path under a file.
        StorageError: the directory (or the one it would be created in) is not writable.
    """
    if not workdir or not workdir.strip():
        raise ConfigError("the run directory is empty; pass a directory, e.g. --workdir runs/demo")
    if not files.is_local(workdir):  # gs://...: what cannot be written shows at the first write
        if files.exists(workdir) and not files.isdir(workdir):
            raise ConfigError(f"{workdir} is a file, not a directory; pass a directory for the run")
        return
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"{workdir} is a file, not a directory; pass a directory for the run")
    existing = os.path.abspath(workdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError(f"{workdir} cannot be a directory: {existing} is a file; pass another --workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(f"cannot write in {existing} (not writable); pass a --workdir you can write to")


def check_workdir(workdir: str, config: TrainConfig) -> bool:
    """Checks that ``workdir`` can hold a run of ``config``, without writing anything.

    Returns:
        True when it already holds this configuration (a resumed run).

    Raises:
        ConfigError: an impossible path, a non-empty directory that is not a run, a corrupt
            ``config.json``.
        WorkdirMismatchError: a run of another configuration.
        StorageError: the directory is not writable.
    """
    check_path(workdir)
    if not files.isdir(workdir):
        return False
    if files.exists(files.join(workdir, CONFIG_FILE)):
        values = read_config(workdir)
        try:
            stored = TrainConfig.from_dict(values).flat()
        except ConfigError as e:
            raise ConfigError(
                f"{os.path.join(workdir, CONFIG_FILE)} is corrupt ({e}); restore it from a backup, or start the run "
                "again in a new --workdir"
            ) from None
        wanted = config.flat()
        for name in FILLED_FROM_DATA:  # not filled yet (the data is not read): layerwise.fit checks them
            if not wanted[name]:
                wanted[name] = stored[name]
        diff = _differences(stored, wanted)
        if diff:
            shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
            raise WorkdirMismatchError(
                f"{workdir} was written by a different configuration ({shown}); "
                "use a new --workdir, or rerun with the original flags to resume"
            )
        return True
    foreign = _foreign_entries(workdir)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"{workdir} is not empty and holds no run (no {CONFIG_FILE}; it has {shown}); a run would "
            "overwrite your files: pass a new or empty --workdir"
        )
    return False


def prepare_workdir(workdir: str, config: TrainConfig) -> bool:
    """Checks ``workdir`` (:func:`check_workdir`) and writes ``config.json`` when it is new.

    Call it while holding the directory's lock (:func:`open_run` does both).

    The stored config is read as a :class:`TrainConfig` (every field must be there,
    :func:`read_config`; a config written before the fields were grouped reads too) and compared
    field by field.

    Returns:
        True when the directory already held this configuration (a resumed run).

    Raises:
        WorkdirMismatchError: the directory was written by another configuration; nothing
            in it is touched.
        ConfigError: the directory cannot hold a run (see :func:`check_workdir`).
    """
    if check_workdir(workdir, config):
        return True
    make_directory(workdir)
    atomic_write_text(files.join(workdir, CONFIG_FILE), json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return False


def make_directory(path: str) -> None:
    """Creates ``path`` and its parents (any file system), with a failure as a one-line StorageError."""
    try:
        files.makedirs(path)
    except (OSError, files.OpError) as e:
        raise StorageError(f"cannot create the directory {path} ({files.first_line(e)}); pass another directory") from None


@contextlib.contextmanager
def open_run(workdir: str, config: TrainConfig, purpose: str = "training") -> Iterator[bool]:
    """Creates ``workdir``, holds its lock for the ``with`` block and prepares it for ``config``.

    Yields:
        True when the directory already held this configuration (a resumed run).

    Raises:
        WorkdirBusyError: another process holds the directory.
        WorkdirMismatchError, ConfigError, StorageError: as :func:`prepare_workdir`.
    """
    check_workdir(workdir, config)  # refused before the directory (or its lock file) is touched
    make_directory(workdir)
    with workdir_lock(workdir, purpose):
        yield prepare_workdir(workdir, config)  # again, under the lock: another process may have been first
