"""Crash-safe checkpoints: atomic writes, integrity checks, fallback to the last good one.

Layout under ``workdir/checkpoints/<problem>/`` (``<problem>`` is ``stage_00``, ``stage_01``,
... or ``end_to_end``):

- ``epoch_0003.npz``: every variable of the trainable model and of its optimizer after epoch 3,
  plus the metric history (the two newest are kept);
- ``final.npz``: the trained stage (and head) once the stage is finished, with its record.

Variables are stored under their Keras path (``variable.path``, e.g. ``stage_01_conv/kernel``;
an optimizer's under the path below the optimizer's name, e.g. ``0/stage_01_conv_kernel_momentum``)
and loaded by it: a checkpoint loads only into a model with exactly the same variable paths and
shapes, in the same order, so a model change that swaps or renames two same-shaped layers is
refused, never loaded wrongly.
Checkpoints of layerwise 0.2 and older (format 1: variables matched by position) are refused with
one line that says so.

Files are written to a temporary name and renamed (``layerwise.files``, through
``tf.io.gfile``: a workdir on ``gs://`` works too), so a ``kill -9`` leaves either the old file or
the new one. NumPy's ``.npz`` is a zip archive whose members carry CRC-32 checksums: a truncated
or corrupted file fails to load, and the previous good checkpoint is used instead. Whatever the
zip reader raises on a damaged file (a bad directory entry, an "encrypted" flag, an unknown
compression method, ...) makes the file unreadable, never the run. A checkpoint whose
floating-point arrays are not all finite is treated the same way: it is never loaded as a good
state (the trainer refuses to write one in the first place).
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Callable, Sequence

import numpy as np

from layerwise.errors import CheckpointError, ConfigError, CorruptCheckpointError
import layerwise.files as files
from layerwise.files import atomic_write_bytes

__all__ = [
    "CheckpointError", "CorruptCheckpointError", "ProblemCheckpoints", "assign_arrays", "assign_optimizer_arrays",
    "impossible_values", "load_arrays", "non_finite", "optimizer_arrays", "save_arrays", "variable_keys",
    "variables_to_arrays",
]

META_KEY = "__meta__"
FORMAT = 2  # 1 (layerwise <= 0.2): variables by position; 2: by Keras path


def save_arrays(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Saves named arrays and a JSON ``meta`` dict as one ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps({**meta, "format": FORMAT}))})
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str, finite: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Loads a file written by :func:`save_arrays`, checking every member's checksum.

    Args:
        path: the ``.npz`` file.
        finite: also require every floating-point array to be finite, and every BatchNorm moving
            variance to be non-negative (:func:`impossible_values`).

    Raises:
        CorruptCheckpointError: the file is truncated or corrupt, whatever the zip or NumPy
            reader raised (a checkpoint is data: no failure to read it is a bug of ours), or
            (with ``finite``) holds NaN or infinite values or a negative BatchNorm variance.
        CheckpointError: the file is missing, or was written by another version of layerwise.
    """
    try:
        data = files.read_bytes(path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} is missing") from None
    except OSError as e:
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({files.first_line(e)})") from e
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}  # reading checks the CRCs
        meta = json.loads(str(arrays.pop(META_KEY)))
        if not isinstance(meta, dict):
            raise TypeError("its metadata is not a JSON object")
    except MemoryError:
        raise
    except Exception as e:  # zipfile/zlib/NumPy raise many types on damaged bytes; all mean "unreadable"
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:200]})") from e
    written = meta.pop("format", 1)
    if written != FORMAT:
        raise CheckpointError(
            f"checkpoint {path} was written by layerwise 0.2 or older, which stored variables by position; "
            "this version stores and loads them by name and does not guess: start the run again in a new "
            "--workdir (or finish and export this one with layerwise 0.2)"
            if written == 1 else
            f"checkpoint {path} has format {written!r}, newer than this layerwise reads ({FORMAT}); "
            "upgrade layerwise"
        )
    bad = non_finite(arrays) if finite else []
    if bad:
        raise CorruptCheckpointError(
            f"checkpoint {path} holds NaN or infinite values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        )
    impossible = impossible_values(arrays) if finite else []
    if impossible:
        raise CorruptCheckpointError(
            f"checkpoint {path} holds values no training writes ({'; '.join(impossible[:3])}"
            f"{'; ...' if len(impossible) > 3 else ''})"
        )
    return arrays, meta


def non_finite(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names of the floating-point arrays that hold a NaN or an infinity."""
    return [k for k, v in arrays.items() if v.dtype.kind in "fc" and not np.all(np.isfinite(v))]


def impossible_values(arrays: dict[str, np.ndarray]) -> list[str]:
    """What in ``arrays`` no training can have written: a BatchNorm moving variance below zero (a
    mean of squares, ``keras.layers.BatchNormalization``), which makes ``sqrt(variance + epsilon)``
    NaN, so every output of the network NaN, in inference only: training itself uses the batch's
    statistics and never sees it."""
    return [f"{k} has {int(np.sum(v < 0))} negative value(s), min {float(np.min(v)):.3g}"
            for k, v in arrays.items() if k.endswith("/moving_variance") and v.dtype.kind == "f" and np.any(v < 0)]


def _unique(keys: list[str], what: str) -> list[str]:
    seen, repeated = set(), []
    for key in keys:
        if key in seen:
            repeated.append(key)
        seen.add(key)
    if repeated:
        raise ConfigError(
            f"{len(repeated)} {what} share a path ({', '.join(repeated[:3])}): checkpoints store variables by "
            "path, so give the layers unique names (e.g. name=f'head_{j}_dense' in a head builder)"
        )
    return keys


# Keras names a SeedGenerator (the random state of Dropout and of random augmentation layers)
# ``seed_generator_<n>`` by a count over the whole process, so its path differs between a run
# and its resumption: such variables are keyed by their place among the model's seed generators.
SEED_GENERATOR_PATH = re.compile(r"^seed_generator(_\d+)?/(?P<variable>.+)$")


def variable_keys(variables: Sequence) -> list[str]:
    """The checkpoint key of each model variable: its Keras path (``stage_01_conv/kernel``); a
    seed generator's state is keyed ``seed_generator@<i>/...`` by its place in the model.

    Raises:
        ConfigError: two variables share a path (layers of the same name in nested models).
    """
    keys, seed_generators = [], 0
    for v in variables:
        match = SEED_GENERATOR_PATH.match(v.path)
        if match:
            keys.append(f"seed_generator@{seed_generators}/{match.group('variable')}")
            seed_generators += 1
        else:
            keys.append(v.path)
    return _unique(keys, "variables")


def optimizer_keys(variables: Sequence) -> list[str]:
    """The checkpoint key of each optimizer variable: its path below the optimizer's name, after
    the optimizer's place in the list (``0/iteration``, ``0/stage_01_conv_kernel_momentum``).

    ``variables`` lists each optimizer's variables together, one optimizer after another. An
    optimizer's name (``sgd``, ``sgd_3``, ...) depends on how many the process has made, and before
    Keras 3.15 every ``SGD`` is named ``SGD`` (so two optimizers' paths coincide), so the place is
    counted, not read from the name: a new optimizer starts where the owner's name changes or a
    path below it repeats. A slot's own name spells out the path of the model variable it belongs to.
    Plain ``tf.Variable`` training state listed after them (the replay buffers of the asynchronous
    decoupled mode) has no Keras path and is keyed by its name.
    """
    keys, owner_of_last, below_seen, place = [], None, set(), -1
    for v in variables:
        path = getattr(v, "path", None) or v.name.split(":")[0]
        owner, _, below = path.partition("/") if "/" in path else ("", "", path)
        if owner != owner_of_last or below in below_seen:
            owner_of_last, below_seen, place = owner, set(), place + 1
        below_seen.add(below)
        keys.append(f"{place}/{below}")
    return _unique(keys, "optimizer variables")


def _to_arrays(prefix: str, keys: list[str], variables: Sequence) -> dict[str, np.ndarray]:
    return {f"{prefix}/{key}": np.asarray(v.numpy()) for key, v in zip(keys, variables)}


def variables_to_arrays(prefix: str, variables: Sequence) -> dict[str, np.ndarray]:
    """``{prefix/path: value}`` of model variables (:func:`variable_keys`)."""
    return _to_arrays(prefix, variable_keys(variables), variables)


def optimizer_arrays(variables: Sequence, prefix: str = "optimizer") -> dict[str, np.ndarray]:
    """``{prefix/key: value}`` of optimizer variables (:func:`optimizer_keys`)."""
    return _to_arrays(prefix, optimizer_keys(variables), variables)


def _assign(prefix: str, keys: list[str], variables: Sequence, arrays: dict[str, np.ndarray], source: str) -> None:
    order = [k[len(prefix) + 1:] for k in arrays if k.startswith(prefix + "/")]  # as saved (zip order)
    stored = set(order)
    missing = [k for k in keys if k not in stored]
    unknown = sorted(stored - set(keys))
    if missing or unknown:
        shown = "; ".join(part for part in (
            f"the model's {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''} not in it" if missing else "",
            f"its {', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''} not in the model" if unknown else "",
        ) if part)
        raise CheckpointError(
            f"{source} does not match the model's {prefix} variables ({shown}): it was written by a different "
            "model or configuration; use a new --workdir"
        )
    if order != keys:  # the same names, built in another order: the model's code changed
        first = next(i for i, (a, b) in enumerate(zip(order, keys)) if a != b)
        raise CheckpointError(
            f"{source} holds the model's {prefix} variables in another order (variable {first} is "
            f"{order[first]} there, {keys[first]} in the model): it was written by a different version of the "
            "model; use a new --workdir"
        )
    for key, variable in zip(keys, variables):
        value = arrays[f"{prefix}/{key}"]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: {key} has shape {tuple(variable.shape)} but the checkpoint has {tuple(value.shape)}; "
                "it was written by a different configuration; use a new --workdir"
            )
    for key, variable in zip(keys, variables):
        variable.assign(arrays[f"{prefix}/{key}"])


def assign_arrays(prefix: str, variables: Sequence, arrays: dict[str, np.ndarray], source: str) -> None:
    """Assigns ``arrays[prefix/path]`` to each model variable, matched by path; nothing is
    assigned unless the paths (in the same order) and the shapes all match.

    Raises:
        CheckpointError: the checkpoint holds other paths or shapes (a different model).
    """
    _assign(prefix, variable_keys(variables), variables, arrays, source)


def assign_optimizer_arrays(variables: Sequence, arrays: dict[str, np.ndarray], source: str,
                            prefix: str = "optimizer") -> None:
    """:func:`assign_arrays` for optimizer variables (:func:`optimizer_keys`)."""
    _assign(prefix, optimizer_keys(variables), variables, arrays, source)


class ProblemCheckpoints:
    """Epoch and final checkpoints of one training problem (a stage, or the end-to-end run).

    Args:
        root: ``workdir/checkpoints``.
        name: ``stage_00``, ..., or ``end_to_end``.
        keep: number of epoch checkpoints to keep.
        warn: called with a message when a corrupt checkpoint is skipped.
    """

    _EPOCH = re.compile(r"^epoch_(\d{4})\.npz$")

    def __init__(self, root: str, name: str, keep: int = 2, warn: Callable[[str], None] = print):
        self.directory = files.join(root, name)
        self.keep = keep
        self.warn = warn

    @property
    def final_path(self) -> str:
        return files.join(self.directory, "final.npz")

    def epoch_path(self, epoch: int) -> str:
        return files.join(self.directory, f"epoch_{epoch:04d}.npz")

    def epochs(self) -> list[int]:
        found = (self._EPOCH.match(f) for f in files.listdir(self.directory))
        return sorted(int(m.group(1)) for m in found if m)

    def save_epoch(self, epoch: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        save_arrays(self.epoch_path(epoch), arrays, {**meta, "epoch": epoch})
        for old in self.epochs()[: -self.keep]:
            files.remove(self.epoch_path(old))

    def latest_epoch(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The newest good epoch checkpoint (readable and finite); others are reported and skipped."""
        for epoch in reversed(self.epochs()):
            try:
                return load_arrays(self.epoch_path(epoch), finite=True)
            except CorruptCheckpointError as e:
                self.warn(f"warning: {e}; falling back to the previous checkpoint")
        return None

    def save_final(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        save_arrays(self.final_path, arrays, meta)

    def has_final(self) -> bool:
        return files.exists(self.final_path)

    def load_final(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The finished problem's arrays and metadata.

        Raises:
            CorruptCheckpointError: ``final.npz`` is unreadable or not finite.
        """
        return load_arrays(self.final_path, finite=True)

    def quarantine_final(self) -> None:
        """Moves an unreadable ``final.npz`` aside (kept for inspection, never loaded again)."""
        files.rename(self.final_path, self.final_path + ".corrupt")

    def clear_epochs(self) -> None:
        for epoch in self.epochs():
            files.remove(self.epoch_path(epoch))
