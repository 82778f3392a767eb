"""A servable's versions and their labels (``stable``, ``canary``, ``unfinished``).

Each export records the label it gave in ``<servable>/labels.json`` (written atomically, beside
the versions: TF Serving only looks at integer directories), so an export changes only the
labels of the servables it writes, and only as asked:

- a complete version exported with ``label="stable"`` becomes ``stable``;
- a complete version exported with another label (``canary``) gets that label, beside ``stable``;
- a partial version (an export of an unfinished run) gets ``unfinished``, never another label.

A servable exported before labels were recorded (no ``labels.json``) keeps the older rule:
``stable`` on its newest complete layerwise version. A directory holding no version written by
layerwise (no ``assets.extra/layerwise_export.json``, no ``model.keras``) gets no label at all,
and one without a SavedModel is no servable (``layerwise.serving.models_config`` leaves it out).

TF Serving's version labels: https://www.tensorflow.org/tfx/serving/serving_config#assigning_string_labels_to_model_versions_to_simplify_canary_and_rollback.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from layerwise.errors import ConfigError
import layerwise.files as files
from layerwise.files import atomic_write_text

# What a version covers, beside the SavedModel: TF Serving's place for files the graph does not load.
VERSION_INFO = os.path.join("assets.extra", "layerwise_export.json")
KERAS_FILE = "model.keras"
SAVED_MODEL = "saved_model.pb"
UNFINISHED_LABEL = "unfinished"
STABLE_LABEL = "stable"
LABELS_FILE = "labels.json"
LABEL = re.compile(r"[A-Za-z0-9_-]+")


def check_label(label: str, name: str = "label") -> str:
    """``label`` if it can label an export: a word of letters, digits, ``-`` and ``_``, not
    ``unfinished`` (which only partial exports get).

    Raises:
        ConfigError: naming ``name`` (the CLI passes its flag, ``--label``).
    """
    if not isinstance(label, str) or not LABEL.fullmatch(label) or label == UNFINISHED_LABEL:
        raise ConfigError(
            f"{name} must be a word of letters, digits, - and _ other than {UNFINISHED_LABEL!r} (e.g. 'stable' "
            f"or 'canary'), got {label!r}"
        )
    return label


def versions(servable_dir: str) -> list[int]:
    """Integer versions present under ``servable_dir`` (ascending)."""
    return sorted(int(d) for d in files.listdir(servable_dir) if re.fullmatch(r"\d+", d))


def version_info(version_dir: str) -> dict[str, Any]:
    """What ``write_next_version`` recorded about a version (``{}``: none recorded)."""
    try:
        info = json.loads(files.read_text(files.join(version_dir, VERSION_INFO)))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def is_complete(version_dir: str) -> bool:
    return version_info(version_dir).get("complete", True) is not False


def is_saved_model(version_dir: str) -> bool:
    return files.exists(files.join(version_dir, SAVED_MODEL))


def written_by_layerwise(version_dir: str) -> bool:
    """A SavedModel version that layerwise wrote: it records what it covers (every export since
    labels are recorded) or holds ``model.keras`` (stage exports before that)."""
    return is_saved_model(version_dir) and (
        files.exists(files.join(version_dir, VERSION_INFO)) or files.exists(files.join(version_dir, KERAS_FILE))
    )


def _older_rule(servable_dir: str, below: int | None = None) -> dict[str, int]:
    """Labels of a servable without ``labels.json``: ``stable`` on the newest complete layerwise
    version, ``unfinished`` on the newest layerwise version when it is partial (versions below
    ``below`` only, when given)."""
    ours = [v for v in versions(servable_dir) if (below is None or v < below)
            and written_by_layerwise(files.join(servable_dir, str(v)))]
    complete = [v for v in ours if is_complete(files.join(servable_dir, str(v)))]
    labels = {STABLE_LABEL: complete[-1]} if complete else {}
    if ours and ours[-1] not in complete:
        labels[UNFINISHED_LABEL] = ours[-1]
    return labels


def _recorded_labels(servable_dir: str) -> dict[str, int] | None:
    """The labels in ``labels.json`` that still name a layerwise version of the right kind
    (``unfinished`` a partial one, any other label a complete one); ``None`` without the file."""
    try:
        recorded = json.loads(files.read_text(files.join(servable_dir, LABELS_FILE)))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # unreadable or torn: the older rule, as if never recorded
        return None
    if not isinstance(recorded, dict):
        return None
    labels = {}
    for label, version in recorded.items():
        if not (isinstance(label, str) and LABEL.fullmatch(label) and isinstance(version, int)):
            continue
        version_dir = files.join(servable_dir, str(version))
        if written_by_layerwise(version_dir) and is_complete(version_dir) == (label != UNFINISHED_LABEL):
            labels[label] = version
    return labels


def version_labels(servable_dir: str) -> dict[str, int]:
    """``{label: version}`` of a servable: as its exports recorded them (``labels.json``), or by
    the older rule for a servable exported before they were recorded."""
    recorded = _recorded_labels(servable_dir)
    return _older_rule(servable_dir) if recorded is None else recorded


def record_label(servable_dir: str, version: int, label: str = STABLE_LABEL) -> dict[str, int]:
    """Records that ``version`` (just written) was exported with ``label``; returns the labels.

    A partial version is labelled ``unfinished`` whatever ``label`` is; a complete one gets
    ``label`` and replaces an older ``unfinished``. Other labels stay as they were.

    Raises:
        StorageError: ``labels.json`` could not be written.
    """
    recorded = _recorded_labels(servable_dir)
    labels = _older_rule(servable_dir, below=version) if recorded is None else recorded
    if is_complete(files.join(servable_dir, str(version))):
        labels[label] = version
        if labels.get(UNFINISHED_LABEL, version) < version:
            del labels[UNFINISHED_LABEL]
    else:
        labels[UNFINISHED_LABEL] = version
    atomic_write_text(files.join(servable_dir, LABELS_FILE), json.dumps(labels, sort_keys=True) + "\n")
    return labels


def unfinished_servables(export_root: str) -> list[str]:
    """Servables under ``export_root`` whose newest version is a partial export."""
    found = []
    for name in files.listdir(export_root):
        path = files.join(export_root, name)
        newest = versions(path)[-1:]
        if newest and version_labels(path).get(UNFINISHED_LABEL) == newest[0]:
            found.append(name)
    return found
