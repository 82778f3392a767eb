"""Learning-rate schedules of the papers: step, multi-step with warm-up, and reduce-on-plateau.

- ``step`` (Belilovsky et al. 2019): ``lr * factor ** (epoch // every)`` within each stage.
- ``multistep`` (He et al. 2016, Sec. 4.2, CIFAR): lr 0.1 divided by 10 at 32k and 48k
  iterations; for ResNet-110 a warm-up at 0.01 "until the training error is below 80% (about 400
  iterations)", then back to 0.1 (``warmup_steps``/``warmup_lr``, usable with every schedule).
- ``plateau`` (Krizhevsky et al. 2012, Sec. 5): "divide the learning rate by 10 when the
  validation error rate stopped improving with the current learning rate". :class:`Plateau`
  decides after each epoch on the validation accuracy (never the test set); its state
  (reductions so far, best accuracy, epochs since it improved) is saved with every epoch
  checkpoint so that a resumed run takes the same decisions as an uninterrupted one.
- ``cosine`` (Wang et al. 2021, InfoPro's ``--cos_lr``; ``adjust_learning_rate`` in
  ``Experiments on CIFAR-SVHN-STL10/train.py`` of ``blackfeather-wang/InfoPro-Pytorch``): constant
  within an epoch, ``0.5 * lr * (1 + cos(pi * e / E))`` in epoch ``e = 1 .. E`` (0 in the last);
  over the first ``warmup_epochs`` W it blends linearly from ``warmup_lr``:
  ``cosine(e) * (e - 1) / W + warmup_lr * (W + 1 - e) / W`` (their W = 10, warm-up lr 0.01).

Every schedule is a function of the optimizer's iteration counter (saved with the optimizer's
variables) and, for ``plateau``, of a scale variable that the trainer sets from the saved state.

Example:
    >>> schedule = make_schedule(config.schedule, config.optim.lr, steps_per_epoch=351, epochs=184)
    >>> optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import keras
import tensorflow as tf

from layerwise.config import ScheduleConfig, TrainConfig
from layerwise.errors import ConfigError


def piecewise(
    config: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int, stretch: int = 1
) -> tuple[list[int], list[float]]:
    """``(boundaries, values)``: the lr is ``values[i]`` from iteration ``boundaries[i - 1]`` on
    (see :class:`PiecewiseLR`).

    ``stretch`` multiplies epoch-based periods and milestones (the end-to-end baseline trains J
    times as many epochs as a stage and follows the same profile over its run); milestones in
    ``step`` units are iterations of the problem as given. The warm-up replaces the schedule's
    first ``warmup_steps`` iterations.
    """
    factor = config.decay_factor
    if config.kind == "step" and config.decay_every:
        every = config.decay_every * stretch * steps_per_epoch
        boundaries = list(range(every, epochs * steps_per_epoch, every))
    elif config.kind == "multistep":
        scale = 1 if config.milestone_unit == "step" else stretch * steps_per_epoch
        boundaries = [int(m) * scale for m in config.milestones]
    else:
        boundaries = []
    values = [lr * factor**i for i in range(len(boundaries) + 1)]
    if config.kind == "cosine":  # one value per epoch
        boundaries = [e * steps_per_epoch for e in range(1, epochs)]
        values = cosine_epochs(lr, epochs, config.warmup_epochs * stretch, config.warmup_lr)
    if config.warmup_steps:
        w = config.warmup_steps
        after = [i for i, b in enumerate(boundaries) if b > w]
        first = values[len(boundaries) - len(after)]  # the schedule's value at iteration w
        boundaries = [w] + [boundaries[i] for i in after]
        values = [config.warmup_lr, first] + [values[i + 1] for i in after]
    return boundaries, values


def cosine_epochs(lr: float, epochs: int, warmup_epochs: int = 0, warmup_lr: float = 0.0) -> list[float]:
    """The learning rate of epochs ``1 .. epochs`` of InfoPro's cosine schedule with linear warm-up
    (see the module doc): ``0.5 * lr * (1 + cos(pi * e / epochs))``, blended from ``warmup_lr``
    over the first ``warmup_epochs``.

    Example:
        >>> [round(v, 4) for v in cosine_epochs(0.8, 160, 10, 0.01)[:2]]
        [0.01, 0.089]
    """
    values = []
    for e in range(1, max(1, epochs) + 1):
        value = 0.5 * lr * (1 + math.cos(math.pi * e / epochs))
        if e <= warmup_epochs:
            value = value * (e - 1) / warmup_epochs + warmup_lr * (warmup_epochs + 1 - e) / warmup_epochs
        values.append(value)
    return values


@keras.saving.register_keras_serializable(package="layerwise")
class PiecewiseLR(keras.optimizers.schedules.LearningRateSchedule):
    """``values[i]`` from iteration ``boundaries[i - 1]`` (0-based) on, times a ``scale``
    variable (set by the trainer from :class:`Plateau`) after the warm-up iterations.

    Iteration ``b`` is the first at the new value: "/10 at 32k iterations" means that 32,000
    iterations ran at 0.1. (Keras's ``PiecewiseConstantDecay``, kept for the default ``step``
    schedule, switches one iteration later.) Create it under the strategy scope.
    """

    def __init__(self, boundaries: list[int], values: list[float], warmup_steps: int = 0):
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"need one more value than boundaries, got {len(values)} and {len(boundaries)}")
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        self.warmup_steps = int(warmup_steps)
        self.scale = tf.Variable(1.0, trainable=False, dtype=tf.float32, name="lr_scale")

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        edges = tf.constant(self.boundaries + [2**62], tf.int64)
        index = tf.searchsorted(edges, tf.reshape(step, [1]), side="right")[0]
        base = tf.gather(tf.constant(self.values, tf.float32), index)
        return tf.where(step < self.warmup_steps, base, base * self.scale)

    def set_scale(self, scale: float) -> None:
        self.scale.assign(scale)

    def get_config(self) -> dict[str, Any]:
        return {"boundaries": self.boundaries, "values": self.values, "warmup_steps": self.warmup_steps}


def make_schedule(config: ScheduleConfig, lr: float, steps_per_epoch: int, epochs: int, stretch: int = 1):
    """The learning rate of one training problem.

    A float when it is constant; Keras's ``PiecewiseConstantDecay`` for the default ``step``
    schedule (unchanged since the first release); a :class:`PiecewiseLR` for ``multistep``,
    ``plateau`` (whose scale the trainer drives with :class:`Plateau`) and any warm-up.
    """
    boundaries, values = piecewise(config, lr, steps_per_epoch, epochs, stretch)
    if config.kind != "step" or config.warmup_steps:
        return PiecewiseLR(boundaries, values, config.warmup_steps)
    if not boundaries:
        return lr
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


@dataclasses.dataclass
class Plateau:
    """Reduce-on-plateau on the validation accuracy (Krizhevsky et al. 2012, Sec. 5).

    After each epoch, :meth:`update` gets the validation accuracy. An epoch improves when its
    accuracy is strictly higher than the best so far; after ``patience`` epochs in a row without
    an improvement the learning rate is multiplied by ``factor`` and the count starts again.

    Example:
        >>> plateau = Plateau(patience=2, factor=0.1)
        >>> [plateau.update(a) for a in (0.5, 0.6, 0.6, 0.55, 0.7)]
        [False, False, False, True, False]
        >>> plateau.scale
        0.1
    """

    patience: int
    factor: float
    reductions: int = 0
    best: float | None = None
    bad_epochs: int = 0

    @property
    def scale(self) -> float:
        """The factor applied to the base learning rate: ``factor ** reductions``."""
        return self.factor**self.reductions

    def update(self, val_accuracy: float) -> bool:
        """Takes an epoch's validation accuracy; returns True when the lr is reduced now."""
        if self.best is None or val_accuracy > self.best:
            self.best, self.bad_epochs = float(val_accuracy), 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.patience:
            return False
        self.reductions += 1
        self.bad_epochs = 0
        return True

    def state(self) -> dict[str, Any]:
        """What an epoch checkpoint stores (JSON)."""
        return {"reductions": self.reductions, "best": self.best, "bad_epochs": self.bad_epochs}

    @classmethod
    def from_config(cls, config: ScheduleConfig, state: dict[str, Any] | None = None) -> Plateau:
        """A fresh controller for the schedule ``config``, or the one saved as ``state``."""
        return cls(config.plateau_patience, config.decay_factor, **(state or {}))


def changes_within_a_problem(config: ScheduleConfig) -> bool:
    """The schedule moves the learning rate during a training problem (a step decay with a period,
    milestones, reduce-on-plateau or a warm-up): the optimizer's learning rate is then a
    ``LearningRateSchedule``, which a callback cannot set."""
    return bool(config.kind != "step" or config.decay_every or config.warmup_steps)


def describe(config: ScheduleConfig, lr: float) -> str:
    """The learning rate of every problem in words, with the option that changes it."""
    if config.warmup_steps:
        warmup = f", after {config.warmup_steps} warm-up iterations at {config.warmup_lr:g}"
    else:
        warmup = ""
    if config.kind == "step" and config.decay_every:
        return (f"lr {lr:g}, x{config.decay_factor:g} every {config.decay_every} epoch(s) of each stage{warmup} "
                "(lr_schedule='step', the paper's; lr_decay_every=0 keeps it constant)")
    if config.kind == "step":
        return f"lr {lr:g}, constant{warmup}"
    if config.kind == "cosine":
        blend = (f", after {config.warmup_epochs} epoch(s) of warm-up from {config.warmup_lr:g}"
                 if config.warmup_epochs else "")
        return f"lr {lr:g}, cosine to 0 over each stage{blend}{warmup} (lr_schedule='cosine')"
    if config.kind == "multistep":
        return (f"lr {lr:g}, x{config.decay_factor:g} at {config.milestone_unit}s "
                f"{', '.join(map(str, config.milestones))}{warmup} (lr_schedule='multistep')")
    return (f"lr {lr:g}, x{config.decay_factor:g} after {config.plateau_patience} epoch(s) without a validation "
            f"improvement{warmup} (lr_schedule='plateau')")


def describe_optimizer(config: TrainConfig, optimizer_factory: Callable[[], keras.optimizers.Optimizer] | None) -> str:
    """Every problem's optimizer and learning rate in words (the run's first line)."""
    optim = config.optim
    if optimizer_factory is not None:
        given = optimizer_factory()
        return (f"{type(given).__name__}, the one passed to fit or compiled into the split model (a fresh copy "
                "per problem, with its own learning rate), "
                f"weight_decay {optim.weight_decay:g}")
    nesterov = ", Nesterov" if optim.nesterov else ""
    momentum = f" (momentum {optim.momentum:g}{nesterov})" if optim.name == "sgd" else ""
    return (f"{optim.name}{momentum}, {describe(config.schedule, optim.lr)}, "
            f"weight_decay {optim.weight_decay:g}{config.describe_stage_overrides()}")


def check_learning_rate_setter(setter: keras.callbacks.Callback | None, config: TrainConfig,
                               optimizer_factory: Callable[[], keras.optimizers.Optimizer] | None) -> None:
    """Refuses a callback that sets the learning rate (``ReduceLROnPlateau``,
    ``LearningRateScheduler``) where a schedule moves it already: Keras cannot set the
    learning rate of an optimizer built on a ``LearningRateSchedule``
    (https://keras.io/api/callbacks/reduce_lr_on_plateau/).

    Raises:
        ConfigError: which callback, which schedule, and how to get a constant learning rate.
    """
    if setter is None:
        return
    if optimizer_factory is not None:
        learning_rate = keras.optimizers.serialize(optimizer_factory())["config"].get("learning_rate")
        if isinstance(learning_rate, dict):
            raise ConfigError(
                f"{type(setter).__name__} sets the optimizer's learning rate, which its "
                f"{learning_rate.get('class_name')} moves already: give the optimizer a float learning_rate"
            )
    elif changes_within_a_problem(config.schedule):
        raise ConfigError(
            f"{type(setter).__name__} sets the optimizer's learning rate, which the schedule moves already "
            f"({describe(config.schedule, config.optim.lr)}): pass lr_schedule='step' with "
            "lr_decay_every=0 for a constant learning rate the callback can set"
        )
