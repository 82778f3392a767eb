"""``models.config`` for ``tensorflow_model_server --model_config_file``, written safely.

The file is a ``ModelServerConfig`` in protobuf text format. Every string in it (servable names,
base paths) goes through :func:`text_proto_string`, which escapes ``\\`` and ``"`` and refuses
control characters, so no directory name or ``serving_root`` can end a string and add entries of
its own; ``serving_root`` itself must be an absolute POSIX path (:func:`check_serving_root`).
Each servable's labels are its own (``layerwise.serving.versions.version_labels``): writing the
file never relabels a servable.

Format: https://www.tensorflow.org/tfx/serving/serving_config; text-format strings:
https://protobuf.dev/reference/protobuf/textformat-spec/#string.
"""

from __future__ import annotations

import os
import posixpath
import warnings

from layerwise.errors import ConfigError
import layerwise.files as files
from layerwise.files import atomic_write_text
from layerwise.serving.versions import is_saved_model, version_labels, versions

MODELS_CONFIG = "models.config"


def _has_control_characters(value: str) -> bool:
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value)


def text_proto_string(value: str) -> str:
    """``value`` as a quoted protobuf text-format string.

    Raises:
        ValueError: ``value`` holds a control character (a newline, NUL, ESC...).
    """
    if _has_control_characters(value):
        raise ValueError(f"{value!r} holds a control character")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_serving_root(serving_root: str, name: str = "serving_root") -> str:
    """``serving_root`` without a trailing ``/``, if it is an absolute POSIX path the model server
    can take as it is.

    Args:
        name: what to call it in the message (the CLI passes its flag, ``--serving_root``).

    Raises:
        ConfigError: naming ``name``: not absolute, not normalised (``..``, ``.``, ``//``),
            quotes, backslashes or control characters.
    """
    problem = None
    if not isinstance(serving_root, str) or not serving_root.startswith("/"):
        problem = "is not an absolute path"
    elif any(c in serving_root for c in "\"'\\") or _has_control_characters(serving_root):
        problem = "holds quotes, backslashes or control characters"
    elif serving_root != "/" and posixpath.normpath(serving_root) != serving_root.rstrip("/"):
        problem = "is not a normalised path (no '..', '.' or '//')"
    if problem:
        raise ConfigError(
            f"{name} {serving_root!r} {problem}; pass the absolute path where the model server sees "
            "the export directory, e.g. '/models'"
        )
    return serving_root.rstrip("/") or "/"


def write_models_config(export_root: str, serving_root: str | None = None) -> str:
    """Writes ``export_root/models.config`` listing every servable and its versions' labels.

    A servable is a directory of ``export_root`` with at least one SavedModel version; others
    (junk, a half-copied folder) are left out, and so is a directory whose name holds a control
    character (with a warning). Labels are each servable's own (:func:`version_labels`).

    Args:
        export_root: the directory holding the servables.
        serving_root: where the model server sees ``export_root`` (e.g. ``/models`` in a
            container started with ``-v $PWD/runs/default/export:/models``); each ``base_path``
            is then ``<serving_root>/<servable>``. ``None``: absolute paths of this machine.

    Raises:
        ConfigError: ``serving_root`` is not an absolute path, or holds quotes or control characters.
        StorageError: the file could not be written.
    """
    root = None if serving_root is None else check_serving_root(serving_root)
    entries = []
    for name in files.listdir(export_root):
        path = files.join(export_root, name)
        if not any(is_saved_model(files.join(path, str(v))) for v in versions(path)):
            continue
        base_path = posixpath.join(root, name) if root else (os.path.abspath(path) if files.is_local(path) else path)
        try:
            quoted_name, quoted_path = text_proto_string(name), text_proto_string(base_path)
        except ValueError as e:
            warnings.warn(f"{path} is left out of {MODELS_CONFIG}: {e}")
            continue
        labels = "".join(
            f"    version_labels {{ key: {text_proto_string(key)} value: {int(value)} }}\n"
            for key, value in sorted(version_labels(path).items())
        )
        entries.append(
            "  config {\n"
            f"    name: {quoted_name}\n"
            f"    base_path: {quoted_path}\n"
            "    model_platform: \"tensorflow\"\n"
            "    model_version_policy { all {} }\n"
            f"{labels}"
            "  }\n"
        )
    config_path = files.join(export_root, MODELS_CONFIG)
    atomic_write_text(config_path, "model_config_list {\n" + "".join(entries) + "}\n")
    return config_path
