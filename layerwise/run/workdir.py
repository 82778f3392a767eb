"""The run directory: its layout, and the guard against mixing two configurations in one."""

from __future__ import annotations

import json
import os
from typing import Any

from layerwise.errors import ConfigError, WorkdirMismatchError
from layerwise.run.checkpoints import atomic_write_text
from layerwise.run.config import TrainConfig

CONFIG_FILE = "config.json"


def read_config(workdir: str) -> dict[str, Any]:
    """The ``config.json`` of a run directory.

    Raises:
        ConfigError: ``workdir`` holds no run.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"{workdir} is not a run directory (no {CONFIG_FILE}); pass the --workdir of a training run")
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path} is corrupt ({type(e).__name__}: {str(e)[:120]}); restore it from a backup, or start the run "
            "again in a new --workdir"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} is corrupt (not a JSON object of config fields); use a new --workdir")
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


def prepare_workdir(workdir: str, config: TrainConfig) -> bool:
    """Creates ``workdir`` with its ``config.json``, or checks that an existing one matches.

    The stored config is read as a :class:`TrainConfig` (a field missing from it, written before
    the field existed, takes its default; a config written before the fields were grouped reads
    too) and compared field by field.

    Returns:
        True when the directory already held this configuration (a resumed run).

    Raises:
        WorkdirMismatchError: the directory was written by another configuration; nothing
            in it is touched.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        stored = TrainConfig.from_dict(read_config(workdir)).flat()
        diff = _differences(stored, config.flat())
        if diff:
            shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
            raise WorkdirMismatchError(
                f"{workdir} was written by a different configuration ({shown}); "
                "use a new --workdir, or rerun with the original flags to resume"
            )
        return True
    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return False
