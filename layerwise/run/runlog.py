"""What a run writes as it goes: ``metrics.jsonl`` and TensorBoard scalars.

``metrics.jsonl`` is JSON Lines (https://jsonlines.org): one object per line, appended and
fsynced. Records name metrics as Keras does (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
``test_accuracy``; https://keras.io/api/callbacks/history/); runs written before that used
``train_acc``, ``val_acc``, ``test_acc``, ``ensemble_acc`` and ``centre_crop_acc``, which reading
renames. A crash or a full disk can leave the last line torn (truncated mid-record); readers
(:func:`read_records`) skip any line that is not a whole JSON object, and the writer drops a torn
tail before it appends, so one bad write never poisons the next record or every later run.

Readers also check each record against the keys its event needs (:func:`record_fits`): every
record names its ``event`` (and its ``problem``, if any, as a string); ``epoch`` and ``stage``
records hold the keys the trainer and the report index, with the types they compute with, and
every metric present is a number or null. A record that does not fit (``{"event": "epoch"}``,
an epoch that is a string) is skipped and counted, and the reader says so once, in one warning
line, instead of failing later with a ``KeyError`` or ``TypeError``. Events it does not know
(``prune``, ``refit``, later ones) pass with those common checks only.
"""

from __future__ import annotations

import json
import os
import warnings
from typing import Any, Callable

import tensorflow as tf

from layerwise.errors import StorageError
import layerwise.files as files
from layerwise.files import atomic_write_text


# the metric names of runs written before records used Keras's
OLD_METRIC_NAMES = {"train_acc": "accuracy", "val_acc": "val_accuracy", "test_acc": "test_accuracy",
                    "ensemble_acc": "ensemble_accuracy", "centre_crop_acc": "centre_crop_accuracy"}


def with_keras_names(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the metric names of an older run renamed to Keras's (see the module doc)."""
    return {OLD_METRIC_NAMES.get(key, key): value for key, value in record.items()}


# The keys each event's records must hold, and their types (bool is no int here).
REQUIRED_KEYS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "epoch": {"problem": str, "stage": int, "epoch": int, "loss": (int, float)},
    "stage": {"problem": str, "stage": int},
}
# Metrics a record may hold: a number, or null where nothing was measured.
METRICS = (
    "loss", "accuracy", "test_accuracy", "val_accuracy", "val_loss", "ensemble_accuracy", "test_top5", "ensemble_top5",
    "centre_crop_accuracy", "test_top1_error", "test_top5_error", "lr", "seconds", "train_seconds", "epoch_seconds",
    "peak_memory_mb", "params", "trainable_params", "flops", "epochs",
)


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    return isinstance(value, types) and not isinstance(value, bool)


def record_fits(record: Any) -> bool:
    """True if ``record`` is a JSON object with the keys and types its event needs (module doc)."""
    if not isinstance(record, dict) or not isinstance(record.get("event"), str):
        return False
    if "problem" in record and not isinstance(record["problem"], str):
        return False
    required = REQUIRED_KEYS.get(record["event"], {})
    if not all(key in record and _is(record[key], types) for key, types in required.items()):
        return False
    return all(record[key] is None or _is(record[key], (int, float)) for key in METRICS if key in record)


def parse_records(lines) -> list[dict[str, Any]]:
    """The JSON objects among ``lines`` (metrics in Keras's names); a torn or foreign line is skipped."""
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(with_keras_names(record))
    return records


def read_records(path: str) -> list[dict[str, Any]]:
    """Every whole record of the JSON Lines file ``path`` that fits its event (:func:`record_fits`;
    bytes that are not UTF-8 included). Records that do not fit are skipped; if any were, one
    warning says how many (shown once per message, as Python's warnings are)."""
    records = parse_records(files.read_bytes(path).decode("utf-8", "replace").splitlines())
    fitting = [r for r in records if record_fits(r)]
    if len(fitting) != len(records):
        warnings.warn(
            f"{path}: skipped {len(records) - len(fitting)} record(s) without the keys or types their event "
            "needs (e.g. an epoch without its epoch number); the rest of the run's records are used",
        )  # issued here, whoever reads: Python shows the same warning once per process
    return fitting


def repair_tail(path: str) -> None:
    """Makes ``path`` end with a newline before an append: a whole last record gets its newline,
    a torn one is cut off (it is unreadable anyway, and would swallow the next record)."""
    try:
        with open(path, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return
            f.seek(max(0, size - 65536))
            tail = f.read()
            if tail.endswith(b"\n"):
                return
            start = tail.rfind(b"\n") + 1
            if parse_records([tail[start:].decode("utf-8", "replace")]):
                f.write(b"\n")
            else:
                f.truncate(size - (len(tail) - start))
    except FileNotFoundError:
        return
    except OSError as e:
        raise StorageError(f"could not repair {path} ({e.strerror or e}); free disk space or fix permissions, then rerun") from e


class RunLog:
    """Appends one JSON object per epoch and per stage to ``metrics.jsonl``; mirrors scalars to
    TensorBoard (``workdir/tensorboard``). With ``workdir=None`` it keeps records in memory only.
    """

    def __init__(self, workdir: str | None):
        self.records: list[dict[str, Any]] = []
        self.path = None if workdir is None else os.path.join(workdir, "metrics.jsonl")
        self._writer = None
        self._tensorboard_dir = None if workdir is None else os.path.join(workdir, "tensorboard")
        self._repaired = False
        if self.path is not None and files.exists(self.path):
            self.records = read_records(self.path)

    def keep_only(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Drops records (e.g. epochs after the checkpoint a resumed run restarts from)."""
        self.records = [r for r in self.records if keep(r)]
        if self.path:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
            self._repaired = True

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path and not files.is_local(self.path):  # object stores cannot append: write it whole
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif self.path:
            if not self._repaired:
                repair_tail(self.path)
                self._repaired = True
            try:
                with open(self.path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise StorageError(
                    f"could not write {self.path} ({e.strerror or e}); free disk space or fix permissions, then "
                    "rerun the same command: the checkpoints are intact and the run resumes"
                ) from e

    def scalars(self, step: int, prefix: str, values: dict[str, float]) -> None:
        if self._tensorboard_dir is None:
            return
        if self._writer is None:  # created on first use, so constructing a RunLog writes nothing
            self._writer = tf.summary.create_file_writer(self._tensorboard_dir)
        with self._writer.as_default():
            for key, value in values.items():
                if value is not None:
                    tf.summary.scalar(f"{prefix}/{key}", value, step=step)
        self._writer.flush()
