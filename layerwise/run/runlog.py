"""What a run writes as it goes: ``metrics.jsonl`` and TensorBoard scalars."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

import tensorflow as tf

from layerwise.run.checkpoints import atomic_write_text


class RunLog:
    """Appends one JSON object per epoch and per stage to ``metrics.jsonl``; mirrors scalars to
    TensorBoard (``workdir/tensorboard``). With ``workdir=None`` it keeps records in memory only.
    """

    def __init__(self, workdir: str | None):
        self.records: list[dict[str, Any]] = []
        self.path = None if workdir is None else os.path.join(workdir, "metrics.jsonl")
        self._writer = None
        self._tensorboard_dir = None if workdir is None else os.path.join(workdir, "tensorboard")
        if self.path is not None and os.path.exists(self.path):
            with open(self.path) as f:
                self.records = [json.loads(line) for line in f if line.strip().endswith("}")]

    def keep_only(self, keep: Callable[[dict[str, Any]], bool]) -> None:
        """Drops records (e.g. epochs after the checkpoint a resumed run restarts from)."""
        self.records = [r for r in self.records if keep(r)]
        if self.path:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())

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
