"""The epoch loop on the device: several training steps per call, no host sync per step.

Keras's ``steps_per_execution`` runs several steps inside one ``tf.function`` call so that the
host does not wait for the device after every batch. :func:`make_multi_step` does the same for
our steps: one call runs up to ``n`` batches from an iterator and accumulates, on the device,
the loss, the correct predictions, the examples and the skipped (non-finite) batches; Python reads
them once per call (for the progress bar, the log and the callbacks). With ``on_nan="stop"`` the
call ends at the first non-finite batch (whose update the step has already skipped, so the model
is at its last good values) and says which batch it was.

Example:
    >>> run = make_multi_step(step, optimizer, stop_on_nan=True)
    >>> totals = run(iter(batches), tf.constant(32))
    >>> float(totals.loss_sum) / float(totals.steps - totals.skipped)
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import keras
import tensorflow as tf


class Totals(NamedTuple):
    """What a group of steps adds up to (tensors).

    Attributes:
        loss_sum: sum of the finite batches' losses (float64, the sum Python would make).
        correct: correct predictions over the finite batches.
        count: examples of the finite batches.
        steps: batches run (finite or not).
        skipped: non-finite batches (their updates were skipped).
        first_bad: index of the first non-finite batch of the group, -1 if none.
        bad_loss: that batch's loss (NaN or infinite).
        lr: the learning rate of the last batch run.
        exhausted: the iterator ran out before ``n`` batches.
    """

    loss_sum: tf.Tensor
    correct: tf.Tensor
    count: tf.Tensor
    steps: tf.Tensor
    skipped: tf.Tensor
    first_bad: tf.Tensor
    bad_loss: tf.Tensor
    lr: tf.Tensor
    exhausted: tf.Tensor


def learning_rate(optimizer: keras.optimizers.Optimizer) -> tf.Tensor:
    """The learning rate the optimizer's next update uses (float32)."""
    return tf.cast(optimizer.learning_rate, tf.float32)


def make_multi_step(step: Callable, optimizer: keras.optimizers.Optimizer, *, stop_on_nan: bool) -> Callable:
    """``run(iterator, n) -> Totals``: up to ``n`` calls of ``step`` on the iterator's batches.

    Args:
        step: a step of ``layerwise.training.steps`` (a ``tf.function`` returning a
            ``StepResult``); its Python body runs inside this function's graph.
        optimizer: the step's optimizer (for the learning rate of each batch).
        stop_on_nan: end the group at the first non-finite batch (``on_nan="stop"``).
    """
    body = step.python_function

    @tf.function
    def run(iterator, n):
        loss_sum = tf.constant(0.0, tf.float64)
        correct = tf.constant(0.0)
        count = tf.constant(0.0)
        steps = tf.constant(0)
        skipped = tf.constant(0)
        first_bad = tf.constant(-1)
        bad_loss = tf.constant(0.0)
        lr = tf.constant(0.0)
        exhausted = tf.constant(False)
        for _ in tf.range(n):
            batch = iterator.get_next_as_optional()
            if not batch.has_value():
                exhausted = tf.constant(True)
                break
            x, y = batch.get_value()
            lr = learning_rate(optimizer)
            out = body(x, y)
            if out.finite:
                loss_sum += tf.cast(out.loss, tf.float64)
                correct += out.correct
                count += out.count
            else:
                skipped += 1
                if first_bad < 0:
                    first_bad = steps
                    bad_loss = tf.cast(out.loss, tf.float32)
            steps += 1
            if stop_on_nan and first_bad >= 0:
                break
        return Totals(loss_sum, correct, count, steps, skipped, first_bad, bad_loss, lr, exhausted)

    return run
