"""Optimizers and learning-rate schedules, one fresh optimizer per training problem.

A new optimizer for every stage (Algorithm 1 of Belilovsky et al. re-initialises the optimizer
with each block), built under the strategy scope before the first step (see TF_NOTES: Keras 3
optimizers built lazily inside ``strategy.run`` fail with several replicas).
"""

from __future__ import annotations

import contextlib

import keras

from layerwise.config import TrainConfig


def make_schedule(config: TrainConfig, steps_per_epoch: int, epochs: int, stretch: int = 1):
    """The step-indexed learning-rate schedule of one problem.

    ``step``: lr * lr_decay_factor ** (epoch // lr_decay_every), as in the paper (CIFAR: x0.2
    every 15 epochs; ImageNet: x0.1 every 20). ``stretch`` multiplies the decay period, so the
    end-to-end baseline, which trains J times as many epochs, follows the same LR profile over
    its run as one stage does over its epochs.
    """
    if not config.lr_decay_every:
        return config.lr
    every = config.lr_decay_every * stretch * steps_per_epoch
    boundaries = list(range(every, epochs * steps_per_epoch, every))
    if not boundaries:
        return config.lr
    values = [config.lr * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config: TrainConfig, steps_per_epoch: int, epochs: int, stretch: int = 1):
    """A fresh optimizer (SGD with momentum, as in the paper, or Adam) with its schedule.

    Under ``mixed_float16`` it is wrapped in a ``LossScaleOptimizer`` (dynamic loss scale).
    """
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
