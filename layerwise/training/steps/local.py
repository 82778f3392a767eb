"""Compiled training steps for local losses (``layerwise.training.local_losses``).

The same contract as ``layerwise.training.steps.classification``: one ``tf.function`` per problem, the frozen
prefix outside the tape, the update skipped (and BatchNorm statistics put back) on every replica
when any replica's loss is not finite, XLA on the per-replica forward+gradient function only. What
differs: the trainable part outputs ``{"logits": ..., training-only outputs}`` and the loss is the
problem's local loss of those outputs, the labels and the batch's *input images* (the step's
``x`` before the frozen prefix: InfoPro's decoder reconstructs them), plus the same coupled L2
weight decay over every trainable variable (decoders and similarity convs included).

The plain cross-entropy problems keep the steps of ``layerwise.training.steps.classification``,
unchanged.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from layerwise.training.local_losses import LOGITS, LocalLoss, Pred
from layerwise.training.steps.classification import (
    correct_count,
    distributed,
    guarded_decoupled_step,
    guarded_step,
    make_train_step,
)


def as_outputs(outputs) -> dict:
    """A head's output as the outputs a local loss reads: a dict, or ``{"logits": tensor}``."""
    return outputs if isinstance(outputs, dict) else {LOGITS: outputs}


def objective_loss(objective: LocalLoss | None, variables, weight_decay: float,
                   global_batch_size: int | None) -> Callable:
    """``loss(outputs, y, images)``: the local loss (cross-entropy when ``None``) plus
    ``0.5 * weight_decay * sum ||v||^2`` over ``variables``, scaled for summing across replicas."""
    objective = objective or Pred()

    def loss_of(outputs, y, images):
        loss = objective(as_outputs(outputs), y, images, global_batch_size)
        if weight_decay:
            l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
            loss += tf.nn.scale_regularization_loss(0.5 * weight_decay * l2)
        return loss

    return loss_of


def statistics_of(models: Sequence[keras.Model]) -> list:
    """The non-trainable state a forward pass changes (BatchNorm moving averages)."""
    return [v for m in models for v in m.non_trainable_variables if v.trainable is False]


def make_local_train_step(
    trainable: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    objective: LocalLoss,
    *,
    frozen: keras.Model | None = None,
    weight_decay: float = 0.0,
    global_batch_size: int | None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    prefix_mode: str = "no_tape",
) -> Callable:
    """``step(x, y) -> StepResult`` of a problem with a local ``objective`` (see the module doc and
    ``layerwise.training.steps.make_train_step``, whose arguments these are)."""
    strategy = strategy or tf.distribute.get_strategy()
    variables = trainable.trainable_variables
    statistics = statistics_of([trainable])
    loss_of = objective_loss(objective, variables, weight_decay, global_batch_size)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(x, y):
        images = x
        if frozen is not None and prefix_mode == "no_tape":
            x = frozen(x, training=False)
        with tf.GradientTape() as tape:
            if frozen is not None and prefix_mode == "tape":
                x = frozen(x, training=False)
            outputs = as_outputs(trainable(x, training=True))
            loss = loss_of(outputs, y, images)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        return loss, tape.gradient(scaled_loss, variables), correct_count(outputs[LOGITS], y)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    return distributed(guarded_step(forward_backward, optimizer, variables, statistics), strategy)


def make_local_decoupled_step(
    models: Sequence[keras.Model],
    optimizers: Sequence[keras.optimizers.Optimizer],
    objectives: Sequence[LocalLoss | None],
    *,
    weight_decay: float = 0.0,
    global_batch_size: int | None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
) -> Callable:
    """Decoupled Greedy Learning's step (``layerwise.training.steps.make_decoupled_step``) where
    stage j minimises ``objectives[j]`` (``None``: cross-entropy): every stage steps on the same
    batch, on the detached output of the stage before; the losses read the batch's images.

    Returns ``step(x, y) -> StepResult`` of the last stage.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = [m.trainable_variables for m in models]
    statistics = statistics_of(models)
    losses_of = [objective_loss(o, vs, weight_decay, global_batch_size) for o, vs in zip(objectives, variables)]
    scaled = [isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers]

    def forward_backward(x, y):
        images, losses, grads = x, [], []
        for model, vs, loss_of, optimizer, scale in zip(models, variables, losses_of, optimizers, scaled):
            with tf.GradientTape() as tape:
                out, outputs = model(x, training=True)
                outputs = as_outputs(outputs)
                loss = loss_of(outputs, y, images)
                scaled_loss = optimizer.scale_loss(loss) if scale else loss
            grads.append(tape.gradient(scaled_loss, vs))
            losses.append(loss)
            x = tf.nest.map_structure(tf.stop_gradient, out)  # no gradient crosses a stage boundary
        return losses, grads, correct_count(outputs[LOGITS], y)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    return distributed(guarded_decoupled_step(forward_backward, optimizers, variables, statistics), strategy)


def make_problem_step(trainable: keras.Model, optimizer: keras.optimizers.Optimizer, objective: LocalLoss | None,
                      **options) -> Callable:
    """A problem's compiled step: :func:`make_local_train_step` for a problem with a local
    ``objective``, ``layerwise.training.steps.make_train_step`` (cross-entropy) for one without;
    ``options``: their keyword arguments (``frozen``, ``weight_decay``, ``global_batch_size``,
    ``strategy``, ``jit_compile``, ``prefix_mode``)."""
    if objective is not None:
        return make_local_train_step(trainable, optimizer, objective, **options)
    return make_train_step(trainable, optimizer, **options)
