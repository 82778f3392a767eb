"""Crash-safe checkpoints: atomic writes, integrity checks, fallback to the last good one.

Layout under ``workdir/checkpoints/<problem>/`` (``<problem>`` is ``stage_00``, ``stage_01``,
... or ``end_to_end``):

- ``epoch_0003.npz``: every variable of the trainable model and of its optimizer after epoch 3,
  plus the metric history (the two newest are kept);
- ``final.npz``: the trained stage (and head) once the stage is finished, with its record.

Files are written to a temporary name, fsynced and renamed, so a ``kill -9`` leaves either the
old file or the new one. NumPy's ``.npz`` is a zip archive whose members carry CRC-32 checksums:
a truncated or corrupted file fails to load, and the previous good checkpoint is used instead.
Whatever the zip reader raises on a damaged file (a bad directory entry, an "encrypted" flag, an
unknown compression method, ...) makes the file unreadable, never the run. A checkpoint whose
floating-point arrays are not all finite is treated the same way: it is never loaded as a good
state (the trainer refuses to write one in the first place).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from layerwise.errors import CheckpointError, CorruptCheckpointError, StorageError

__all__ = ["CheckpointError", "CorruptCheckpointError", "ProblemCheckpoints", "atomic_write_bytes", "atomic_write_text", "load_arrays", "non_finite", "save_arrays"]

META_KEY = "__meta__"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise StorageError(
            f"could not write {path} ({e.strerror or e}); free disk space or fix permissions, then "
            "rerun the same command: everything written before is intact and the run resumes"
        ) from e
    finally:
        if os.path.isfile(tmp):
            os.remove(tmp)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_arrays(path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Saves named arrays and a JSON ``meta`` dict as one ``.npz``, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{META_KEY: np.array(json.dumps(meta))})
    atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str, finite: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Loads a file written by :func:`save_arrays`, checking every member's checksum.

    Args:
        path: the ``.npz`` file.
        finite: also require every floating-point array to be finite.

    Raises:
        CorruptCheckpointError: the file is truncated or corrupt, whatever the zip or NumPy
            reader raised (a checkpoint is data: no failure to read it is a bug of ours), or
            (with ``finite``) holds NaN or infinite values.
        CheckpointError: the file is missing.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} is missing")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}  # reading checks the CRCs
        meta = json.loads(str(arrays.pop(META_KEY)))
        if not isinstance(meta, dict):
            raise TypeError("its metadata is not a JSON object")
    except MemoryError:
        raise
    except Exception as e:  # zipfile/zlib/NumPy raise many types on damaged bytes; all mean "unreadable"
        raise CorruptCheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}: {str(e)[:200]})") from e
    bad = non_finite(arrays) if finite else []
    if bad:
        raise CorruptCheckpointError(
            f"checkpoint {path} holds NaN or infinite values ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        )
    return arrays, meta


def non_finite(arrays: dict[str, np.ndarray]) -> list[str]:
    """Names of the floating-point arrays that hold a NaN or an infinity."""
    return [k for k, v in arrays.items() if v.dtype.kind in "fc" and not np.all(np.isfinite(v))]


def variables_to_arrays(prefix: str, variables: Sequence) -> dict[str, np.ndarray]:
    return {f"{prefix}/{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)}


def assign_arrays(prefix: str, variables: Sequence, arrays: dict[str, np.ndarray], source: str) -> None:
    """Assigns ``arrays[prefix/i]`` to ``variables[i]`` after checking count and shapes.

    Raises:
        CheckpointError: the checkpoint was written by a different architecture.
    """
    stored = sorted(k for k in arrays if k.startswith(prefix + "/"))
    if len(stored) != len(variables):
        raise CheckpointError(
            f"{source} holds {len(stored)} {prefix} arrays but the model has {len(variables)}: "
            "it was written by a different configuration; use a new --workdir"
        )
    for key, variable in zip(stored, variables):
        value = arrays[key]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: {variable.path if hasattr(variable, 'path') else key} has shape "
                f"{tuple(variable.shape)} but the checkpoint has {tuple(value.shape)}; "
                "it was written by a different configuration; use a new --workdir"
            )
        variable.assign(value)


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
        self.directory = os.path.join(root, name)
        self.keep = keep
        self.warn = warn

    @property
    def final_path(self) -> str:
        return os.path.join(self.directory, "final.npz")

    def epoch_path(self, epoch: int) -> str:
        return os.path.join(self.directory, f"epoch_{epoch:04d}.npz")

    def epochs(self) -> list[int]:
        if not os.path.isdir(self.directory):
            return []
        found = (self._EPOCH.match(f) for f in os.listdir(self.directory))
        return sorted(int(m.group(1)) for m in found if m)

    def save_epoch(self, epoch: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        save_arrays(self.epoch_path(epoch), arrays, {**meta, "epoch": epoch})
        for old in self.epochs()[: -self.keep]:
            os.remove(self.epoch_path(old))

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
        return os.path.exists(self.final_path)

    def load_final(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The finished problem's arrays and metadata.

        Raises:
            CorruptCheckpointError: ``final.npz`` is unreadable or not finite.
        """
        return load_arrays(self.final_path, finite=True)

    def quarantine_final(self) -> None:
        """Moves an unreadable ``final.npz`` aside (kept for inspection, never loaded again)."""
        os.replace(self.final_path, self.final_path + ".corrupt")

    def clear_epochs(self) -> None:
        for epoch in self.epochs():
            os.remove(self.epoch_path(epoch))
