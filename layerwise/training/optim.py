"""Optimizers and learning-rate schedules, one fresh optimizer per training problem.

A new optimizer for every stage (Algorithm 1 of Belilovsky et al. re-initialises the optimizer
with each block), built under the strategy scope before the first step (see TF_NOTES: Keras 3
optimizers built lazily inside ``strategy.run`` fail with several replicas).
"""

from __future__ import annotations

import contextlib

import keras

from layerwise.run.config import TrainConfig
from layerwise.training.schedules import make_schedule

__all__ = ["dtype_policy", "make_optimizer", "make_schedule"]


def make_optimizer(config: TrainConfig, steps_per_epoch: int, epochs: int, stretch: int = 1, schedule=None):
    """A fresh optimizer (SGD with momentum, as in the paper, or Adam) with its schedule.

    ``schedule``: the learning rate or schedule to use (``layerwise.training.schedules.make_schedule``
    of the same arguments when ``None``; pass one to keep a handle on a ``plateau`` schedule).
    Under ``mixed_float16`` it is wrapped in a ``LossScaleOptimizer`` (dynamic loss scale).
    """
    if schedule is None:
        schedule = make_schedule(config, steps_per_epoch, epochs, stretch)
    if config.optimizer == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    else:
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets Keras's global dtype policy (``float32``, ``mixed_bfloat16``, ``mixed_float16``)
    for the block and restores the previous one: models must be built inside it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
