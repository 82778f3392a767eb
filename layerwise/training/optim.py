"""Optimizers: one fresh optimizer per training problem.

A new optimizer for every stage (Algorithm 1 of Belilovsky et al. re-initialises the optimizer
with each block), built under the strategy scope and with ``optimizer.build(variables)`` before
the first step: Keras 3 optimizers built lazily inside ``strategy.run`` fail with several
replicas (keras-team/keras#23085).
"""

from __future__ import annotations

from typing import Callable

import keras

from layerwise.config import recorded
from layerwise.config import OptimConfig

__all__ = ["for_precision", "make_optimizer", "recorded_optimizer"]


def make_optimizer(config: OptimConfig, learning_rate, precision: str = "float32") -> keras.optimizers.Optimizer:
    """A fresh optimizer: SGD with momentum (the paper's; Nesterov's with ``config.nesterov``) or
    Adam, at ``learning_rate``.

    Args:
        config: the optimizer's fields (name, momentum, nesterov; ``config.lr`` is already in
            ``learning_rate``).
        learning_rate: a float or a schedule (``layerwise.training.schedules.make_schedule``).
        precision: under ``mixed_float16`` the optimizer is wrapped in a ``LossScaleOptimizer``
            (dynamic loss scale).
    """
    if config.name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        # Nesterov: Keras's SGD update equals PyTorch's SGD(nesterov=True) at a constant learning rate
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov)
    return for_precision(optimizer, precision)


def for_precision(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """``optimizer``, wrapped in a ``LossScaleOptimizer`` (dynamic loss scale) under
    ``mixed_float16`` unless it is one already
    (https://keras.io/api/mixed_precision/loss_scale_optimizer/)."""
    if precision == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_optimizer_or_factory(obj) -> bool:
    """A Keras optimizer, or a function (or other callable) returning one."""
    return isinstance(obj, keras.optimizers.Optimizer) or callable(obj)


def recorded_optimizer(config: OptimConfig) -> Callable[[], keras.optimizers.Optimizer] | None:
    """``() -> a fresh copy`` of the optimizer recorded in ``config.object`` (an optimizer
    object is rebuilt from its Keras-serialised form every time, a function is called), or
    ``None`` when the run uses ``config.name`` and ``config.lr``.

    Raises:
        ConfigError: the recorded optimizer cannot be rebuilt (its class or function is not
            registered and imported).
    """
    if not config.object:
        return None
    form = config.object
    recorded.rebuild(form, "optimizer", is_optimizer_or_factory)  # refused here, before training

    def fresh() -> keras.optimizers.Optimizer:
        obj = recorded.rebuild(form, "optimizer", is_optimizer_or_factory)
        return obj if isinstance(obj, keras.optimizers.Optimizer) else obj()

    return fresh
