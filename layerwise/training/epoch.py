"""One epoch of a problem: its steps in groups per device call, then evaluation and the record.

The device runs a group of steps per call (``layerwise.training.steps.make_multi_step``) and
Python reads the totals once per group: the whole epoch in one call, or groups of
:data:`PROGRESS_STEPS` for a live progress bar, or one step at a time when a callback has batch
hooks, or ``options.steps_per_execution`` steps when set (Keras's ``steps_per_execution``,
https://keras.io/api/models/model_training_apis/#compile-method: the batch hooks run once per
call). After the steps, every variable the epoch trained must be finite (:func:`check_finite`),
the classifier is evaluated on the test and validation splits, and the epoch's record is
logged, written to ``metrics.jsonl`` and given to the callbacks (``epoch_logs``).

Example:
    >>> loop = EpochLoop(data, config, options, callbacks, Evaluator(data, config, callbacks),
    ...                  log=print, verbose=2, steps_per_epoch=56)
    >>> record, stop = loop.train(problem, run, predict, 0, batches, state, runlog)
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.analysis.memory import peak_memory_mb, reset_peak_memory
from layerwise.config import RunOptions, TrainConfig
from layerwise.data.base import DataSource
from layerwise.errors import DatasetUnavailableError, NonFiniteLossError
from layerwise.run.runlog import RunLog
from layerwise.training.callbacks import RunCallbacks
from layerwise.training.evaluation import Evaluator, accuracy, cross_entropy
from layerwise.training.steps import Totals
from layerwise.training.problems import Problem

PROGRESS_STEPS = 16  # steps per device call under a live progress bar


@contextlib.contextmanager
def data_errors(where: str):
    """Turns a dataset that vanished mid-run into a clear error.

    Raises:
        DatasetUnavailableError: files behind the pipeline were deleted, truncated or made
            unreadable while training; the checkpoints written so far are intact.
    """
    try:
        yield
    except (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.PermissionDeniedError) as e:
        first_line = (e.message or str(e)).splitlines()[0]
        raise DatasetUnavailableError(
            f"the training data became unreadable during {where} ({first_line}); the checkpoints so far "
            "are intact: restore the files and rerun the same command to resume"
        ) from e


def retry_advice(config: TrainConfig, lr: float) -> str:
    """What to do after a non-finite loss or state: the part of the message after the facts."""
    skip = ", or with --on_nan=skip to skip batches whose loss is not finite" if config.on_nan == "stop" else ""
    decay = config.optim.weight_decay
    decay = f" or a smaller --weight_decay (now {decay:g})" if decay >= 1e-2 else ""  # a large L2 term diverges too
    return (
        "the last good checkpoint is kept and nothing after it is saved. A run's configuration is fixed (a "
        "rerun with another --lr on this --workdir is refused as a different configuration): start a new run "
        f"in a new --workdir with a lower --lr (now {lr:g}){decay}{skip}"
    )


def check_finite(config: TrainConfig, name: str, epoch: int, variables: Sequence, lr: float) -> None:
    """Refuses a state with a NaN or infinite variable (weights, BatchNorm moving statistics,
    optimizer slots) of problem ``name`` after ``epoch``: it is never checkpointed, finalised
    or exported. ``--on_nan=skip`` skips batches whose *loss* is not finite, but weights can
    still overflow (a huge learning rate gives finite losses and infinite kernels).

    Raises:
        NonFiniteLossError: with the variables and what to do.
    """
    bad = [v.path for v in variables if not np.all(np.isfinite(np.asarray(v.numpy())))]
    if bad:
        shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise NonFiniteLossError(
            f"{name} epoch {epoch + 1}: {len(bad)} variable(s) became NaN or infinite ({shown}); "
            f"{retry_advice(config, lr)}"
        )


def epoch_logs(record: dict[str, Any]) -> dict[str, Any]:
    """A Keras callback's ``logs`` for an epoch record (Keras's metric names)."""
    logs = {"loss": record["loss"], "accuracy": record["accuracy"], "lr": record["lr"],
            "stage": record["stage"], "stage_epoch": record["epoch"]}
    if record.get("val_accuracy") is not None:
        logs.update(val_loss=record["val_loss"], val_accuracy=record["val_accuracy"])
    if record.get("test_accuracy") is not None:
        logs["test_accuracy"] = record["test_accuracy"]
    return logs


@dataclasses.dataclass
class RunningTotals:
    """The epoch's totals so far, summed on the host from each group's :class:`Totals`."""

    loss_sum: float = 0.0
    correct: float = 0.0
    seen: float = 0.0
    steps: int = 0
    skipped: int = 0
    lr: float = float("nan")

    def add(self, totals: Totals) -> None:
        self.loss_sum += float(totals.loss_sum)
        self.correct += float(totals.correct)
        self.seen += float(totals.count)
        self.steps += int(totals.steps)
        self.skipped += int(totals.skipped)

    def loss(self) -> float:
        return self.loss_sum / (self.steps - self.skipped)

    def batch_logs(self, group_skipped) -> dict[str, float]:
        """The running means, as Keras's metrics give them; NaN after a skipped batch."""
        finite = not group_skipped and self.steps > self.skipped
        return {"loss": self.loss_sum / (self.steps - self.skipped) if finite else float("nan"),
                "accuracy": self.correct / self.seen if self.seen else float("nan")}


class EpochLoop:
    """Trains and evaluates one epoch of a problem; one per run.

    Args:
        data: the run's dataset.
        config: the run's configuration (``on_nan``, the optimizer for the retry advice).
        options: execution options (``steps_per_execution``).
        callbacks: the run's Keras callbacks.
        evaluator: the run's evaluation passes.
        log: where the per-epoch line goes.
        verbose: 1: a live progress bar on a terminal and the line; 2: the line; 0: nothing.
        steps_per_epoch: training batches per epoch.

    Attributes:
        latest_test_probs: ``(problem name, epoch, test probabilities)`` of the newest epoch (a
            finished problem's evaluation reuses them).
    """

    def __init__(self, data: DataSource, config: TrainConfig, options: RunOptions, callbacks: RunCallbacks,
                 evaluator: Evaluator, *, log: Callable[[str], None], verbose: int, steps_per_epoch: int):
        self.data = data
        self.config = config
        self.options = options
        self.callbacks = callbacks
        self.evaluator = evaluator
        self.log = log
        self.verbose = verbose
        self.steps_per_epoch = steps_per_epoch
        self.latest_test_probs: tuple[str | None, int, np.ndarray | None] = (None, -1, None)

    def train(self, problem: Problem, run, predict, epoch: int, batches, state: Sequence,
              runlog: RunLog) -> tuple[dict[str, Any], Any]:
        """One epoch of ``run`` over ``batches``, then evaluation; returns its record (logged and
        written to ``runlog``) and what the callbacks asked (``"stage"``, ``"run"`` or falsy).

        Raises:
            NonFiniteLossError: a non-finite loss with ``on_nan="stop"``, every batch non-finite,
                or a non-finite variable of ``state``.
            DatasetUnavailableError: the data became unreadable.
        """
        start = time.perf_counter()
        run_epoch = problem.first_epoch + epoch
        stop = self.callbacks.epoch_begin(run_epoch, {"stage": problem.stage, "stage_epoch": epoch})
        where = f"{problem.name} epoch {epoch + 1}"
        totals, stop = self.steps(run, batches, where, stop)
        if totals.seen == 0:
            raise NonFiniteLossError(
                f"{where}: every batch had a non-finite loss; {retry_advice(self.config, totals.lr)}"
            )
        check_finite(self.config, problem.name, epoch, state, totals.lr)
        train_seconds = time.perf_counter() - start  # the steps alone, before the evaluation
        train_peak = peak_memory_mb()  # the training steps' peak, before evaluation's batches
        record = self.record(problem, epoch, predict, totals)
        record.update(seconds=time.perf_counter() - start, train_seconds=train_seconds, peak_memory_mb=train_peak)
        if self.verbose:
            self.log_line(problem, epoch, record)
        runlog.write(record)
        runlog.scalars(run_epoch, problem.name, {k: record[k] for k in ("loss", "accuracy", "test_accuracy", "lr")})
        stop = self.callbacks.epoch_end(run_epoch, epoch_logs(record)) or stop
        return record, stop

    def steps(self, run, batches, where: str, stop) -> tuple[RunningTotals, Any]:
        """Runs the epoch's steps in groups, with the progress bar and the batch hooks."""
        # A live bar only on a terminal: in logs and CI the per-epoch summary line is enough.
        live = self.verbose == 1 and sys.stdout.isatty()
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["loss", "acc"]) if live else None
        group = (self.options.steps_per_execution
                 or (1 if self.callbacks.batch_hooks else PROGRESS_STEPS if live else self.steps_per_epoch))
        running = RunningTotals()
        reset_peak_memory()
        iterator = iter(batches)
        while True:
            stop = self.callbacks.batch_begin(running.steps) or stop
            with data_errors(where):
                totals = Totals(*(value.numpy() for value in run(iterator, tf.constant(group))))
            if totals.steps:
                running.lr = float(totals.lr)
            if totals.first_bad >= 0 and self.config.on_nan == "stop":
                raise NonFiniteLossError(
                    f"{where} batch {running.steps + totals.first_bad + 1}: the loss became {float(totals.bad_loss)}; "
                    f"{retry_advice(self.config, running.lr)}"
                )
            running.add(totals)
            if bar is not None and running.seen:
                bar.update(running.steps, [("loss", running.loss()), ("acc", running.correct / running.seen)])
            if totals.steps:
                stop = self.callbacks.batch_end(running.steps - 1, running.batch_logs(totals.skipped)) or stop
                if stop:
                    break
            if totals.exhausted or totals.steps < group or running.steps == self.steps_per_epoch:
                break
        return running, stop

    def record(self, problem: Problem, epoch: int, predict, totals: RunningTotals) -> dict[str, Any]:
        """The epoch's record: the training totals, and the test and validation accuracies on the
        epochs ``validation_freq`` evaluates (every N-th of the stage, and its last)."""
        evaluated = (epoch + 1) % self.options.validation_freq == 0 or epoch + 1 == problem.epochs
        test_probs = self.evaluator.probabilities(predict, "test") if self.data.num_test and evaluated else None
        test_accuracy = None if test_probs is None else accuracy(test_probs, self.data.labels("test"))
        if evaluated:
            self.latest_test_probs = (problem.name, epoch, test_probs)  # the stage's final evaluation reuses them
        val_probs = self.evaluator.validation_probabilities(predict) if self.data.num_val and evaluated else None
        record = {
            "event": "epoch",
            "problem": problem.name,
            "stage": problem.stage,
            "epoch": epoch,
            "loss": totals.loss(),
            "accuracy": totals.correct / totals.seen,
            "test_accuracy": test_accuracy,
            "val_accuracy": None if val_probs is None else accuracy(val_probs, self.data.labels("val")),
            "lr": totals.lr,
            "skipped_batches": int(totals.skipped),
            "seconds": None,
            "train_seconds": None,
            "peak_memory_mb": None,
        }
        if val_probs is not None:
            record["val_loss"] = cross_entropy(val_probs, self.data.labels("val"))
        return record

    def log_line(self, problem: Problem, epoch: int, record: dict[str, Any]) -> None:
        shown = "".join(f", {name} acc {record[key]:.2%}"
                        for name, key in (("val", "val_accuracy"), ("test", "test_accuracy"))
                        if record[key] is not None)
        self.log(
            f"{problem.name} epoch {epoch + 1}/{problem.epochs}: loss {record['loss']:.4f}, "
            f"train acc {record['accuracy']:.2%}{shown}, lr {record['lr']:.3g} ({record['seconds']:.1f} s)"
        )
