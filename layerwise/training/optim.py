"""Optimizers and dtype policies: one fresh optimizer per training problem.

A new optimizer for every stage (Algorithm 1 of Belilovsky et al. re-initialises the optimizer
with each block), built under the strategy scope and with ``optimizer.build(variables)`` before
the first step: Keras 3 optimizers built lazily inside ``strategy.run`` fail with several
replicas (keras-team/keras#23085).
"""

from __future__ import annotations

import contextlib

import keras

from layerwise.run.config import OptimConfig

__all__ = ["dtype_policy", "make_optimizer"]


def make_optimizer(config: OptimConfig, learning_rate, precision: str = "float32") -> keras.optimizers.Optimizer:
    """A fresh optimizer: SGD with momentum (the paper's) or Adam, at ``learning_rate``.

    Args:
        config: the optimizer's fields (name, momentum; ``config.lr`` is already in
            ``learning_rate``).
        learning_rate: a float or a schedule (``layerwise.training.schedules.make_schedule``).
        precision: under ``mixed_float16`` the optimizer is wrapped in a ``LossScaleOptimizer``
            (dynamic loss scale).
    """
    if config.name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum)
    if precision == "mixed_float16":
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
