"""The run directory: its layout, and the guard against mixing two configurations in one."""

from __future__ import annotations

import json
import os
from typing import Any

from layerwise.run.checkpoints import atomic_write_text
from layerwise.errors import ConfigError, WorkdirMismatchError

CONFIG_FILE = "config.json"


def read_config(workdir: str) -> dict[str, Any]:
    """The ``config.json`` of a run directory.

    Raises:
        ConfigError: ``workdir`` holds no run.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise ConfigError(f"{workdir} is not a run directory (no {CONFIG_FILE}); pass the --workdir of a training run")
    with open(path) as f:
        return json.load(f)


def _differences(stored: dict, wanted: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def prepare_workdir(workdir: str, run_config: dict[str, Any], defaults: dict[str, Any] | None = None) -> bool:
    """Creates ``workdir`` with its ``config.json``, or checks that an existing one matches.

    A field missing from a stored config (written before the field existed) matches when the
    wanted value is its default in ``defaults``.

    Returns:
        True when the directory already held this configuration (a resumed run).

    Raises:
        WorkdirMismatchError: the directory was written by another configuration; nothing
            in it is touched.
    """
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        for key, value in (defaults or {}).items():
            if key not in stored and run_config.get(key) == value:
                stored[key] = value
        diff = _differences(stored, run_config)
        if diff:
            shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
            raise WorkdirMismatchError(
                f"{workdir} was written by a different configuration ({shown}); "
                "use a new --workdir, or rerun with the original flags to resume"
            )
        return True
    os.makedirs(workdir, exist_ok=True)
    atomic_write_text(path, json.dumps(run_config, indent=2, sort_keys=True) + "\n")
    return False
