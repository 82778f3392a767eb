"""Compiled training and prediction steps (GradientTape inside ``tf.function``).

A step is built for one training problem: a frozen part (the prefix of finished stages, run in
inference mode and outside the tape, since nothing in it trains) and a trainable part (the
current stage and its auxiliary head, or the whole network end to end). Build a new step for
every problem: a traced ``tf.function`` keeps the trainable set it was traced with, so a step
traced before ``layer.trainable = False`` would go on updating the "frozen" layer.

XLA (``jit_compile``) compiles the per-replica forward+gradient function, never the outer
function around ``strategy.run`` (XLA cannot place the cross-replica ops). Under
``mixed_float16`` the optimizer is a ``LossScaleOptimizer``: the loss is scaled before the
gradient and the optimizer unscales (and skips non-finite scaled gradients) itself.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import keras
import tensorflow as tf


class StepResult(NamedTuple):
    """What a training step returns, summed over replicas: the mean loss, the number of correct
    predictions and of examples, and whether every replica's loss was finite (else nothing was
    updated)."""

    loss: tf.Tensor
    correct: tf.Tensor
    count: tf.Tensor
    finite: tf.Tensor


def classification_loss(variables, weight_decay: float, global_batch_size: int | None) -> Callable:
    """``loss(logits, y)``: mean cross-entropy over the global batch + ``0.5 * weight_decay *
    sum ||v||^2`` over ``variables`` (coupled L2, as PyTorch's SGD ``weight_decay`` in the paper's
    code), scaled for summing across replicas. ``global_batch_size=None`` divides by the batch's
    own size times the number of replicas (pipelines whose last batch is smaller)."""

    def loss_of(logits, y):
        per_example = keras.losses.sparse_categorical_crossentropy(
            y, tf.cast(logits, tf.float32), from_logits=True
        )
        loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
        if weight_decay:
            l2 = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
            loss += tf.nn.scale_regularization_loss(0.5 * weight_decay * l2)
        return loss

    return loss_of


def correct_count(logits, y) -> tf.Tensor:
    return tf.reduce_sum(
        tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)
    )


def make_train_step(
    trainable: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    *,
    frozen: keras.Model | None = None,
    weight_decay: float = 0.0,
    global_batch_size: int | None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    prefix_mode: str = "no_tape",
) -> Callable:
    """Returns ``step(x, y) -> StepResult`` (loss, correct, count, finite) summed over replicas.

    The update is skipped on every replica when any replica's loss is not finite, and the
    statistics the forward pass changed (BatchNorm moving averages) are put back, so the model
    stays at its last good values; the caller decides whether to stop or go on.
    The loss is the mean cross-entropy over the global batch plus
    ``0.5 * weight_decay * sum ||v||^2`` over the trainable variables (coupled L2, as PyTorch's
    SGD ``weight_decay`` used by the paper's code).

    Args:
        prefix_mode: ``no_tape`` runs ``frozen`` before the tape; ``tape`` runs it inside the
            tape every batch (the reference code's cost, kept for benchmarks).
        jit_compile: XLA-compile the per-replica forward+gradient function.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = trainable.trainable_variables
    statistics = [v for v in trainable.non_trainable_variables if v.trainable is False]
    loss_of = classification_loss(variables, weight_decay, global_batch_size)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(x, y):
        if frozen is not None and prefix_mode == "no_tape":
            x = frozen(x, training=False)
        with tf.GradientTape() as tape:
            if frozen is not None and prefix_mode == "tape":
                x = frozen(x, training=False)
            logits = trainable(x, training=True)
            loss = loss_of(logits, y)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        return loss, tape.gradient(scaled_loss, variables), correct_count(logits, y)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    return distributed(guarded_step(forward_backward, optimizer, variables, statistics), strategy)


def guarded_step(forward_backward: Callable, optimizer, variables, statistics) -> Callable:
    """``replica_step(x, y) -> (loss, correct, finite)``: ``forward_backward``'s gradients
    applied only when the loss is finite; otherwise ``statistics`` (BatchNorm's moving
    statistics, updated by the forward pass) are put back as they were (:func:`update_if`)."""

    def replica_step(x, y):
        # Read before the forward pass updates them (automatic control dependencies keep the
        # program order of reads and writes on the same variable).
        saved = [tf.identity(v.value) for v in statistics]
        loss, grads, correct = forward_backward(x, y)
        finite = all_finite(loss)

        def apply(grads):
            optimizer.apply_gradients(zip(grads, variables))

        update_if(finite, apply, (grads,), assign_all, (statistics, saved))
        return loss, correct, finite

    return replica_step


def make_decoupled_step(
    models,
    optimizers,
    *,
    weight_decay: float = 0.0,
    global_batch_size: int | None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
) -> Callable:
    """Decoupled Greedy Learning's step: every stage (``models[j]``: inputs -> [output, logits])
    takes a step on the same batch, each on the ``tf.stop_gradient`` output of the one before
    (Belilovsky et al., ICML 2020), with its own optimizer.

    Returns ``step(x, y) -> StepResult`` of the last stage. A non-finite loss in any
    stage skips the update of every stage (and puts back the BatchNorm statistics), like
    :func:`make_train_step`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    variables = [m.trainable_variables for m in models]
    statistics = [v for m in models for v in m.non_trainable_variables if v.trainable is False]
    losses_of = [classification_loss(vs, weight_decay, global_batch_size) for vs in variables]
    scaled = [isinstance(o, keras.optimizers.LossScaleOptimizer) for o in optimizers]

    def forward_backward(x, y):
        losses, grads = [], []
        for model, vs, loss_of, optimizer, scale in zip(models, variables, losses_of, optimizers, scaled):
            with tf.GradientTape() as tape:
                out, logits = model(x, training=True)
                loss = loss_of(logits, y)
                scaled_loss = optimizer.scale_loss(loss) if scale else loss
            grads.append(tape.gradient(scaled_loss, vs))
            losses.append(loss)
            x = tf.nest.map_structure(tf.stop_gradient, out)  # no gradient crosses a stage boundary
        return losses, grads, correct_count(logits, y)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    return distributed(guarded_decoupled_step(forward_backward, optimizers, variables, statistics), strategy)


def guarded_decoupled_step(forward_backward: Callable, optimizers, variables, statistics) -> Callable:
    """``replica_step(x, y) -> (last stage's loss, correct, finite)`` of a decoupled step:
    ``forward_backward(x, y) -> (losses, grads, correct)`` gives every stage's loss and gradients;
    each optimizer applies its stage's gradients only when every loss is finite, otherwise
    ``statistics`` are put back as they were (:func:`update_if`)."""

    def replica_step(x, y):
        saved = [tf.identity(v.value) for v in statistics]
        losses, grads, correct = forward_backward(x, y)
        finite = all_finite(tf.add_n(losses))

        def apply(grads):
            for optimizer, g, vs in zip(optimizers, grads, variables):
                optimizer.apply_gradients(zip(g, vs))

        update_if(finite, apply, (grads,), assign_all, (statistics, saved))
        return losses[-1], correct, finite

    return replica_step


def all_finite(loss) -> tf.Tensor:
    """True on every replica when no replica's loss is NaN or infinite."""
    context = tf.distribute.get_replica_context()
    bad = context.all_reduce(tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(tf.math.is_finite(loss)), tf.float32))
    return tf.equal(bad, 0.0)


def assign_all(variables, values) -> None:
    """Puts ``values`` back into ``variables`` (the statistics a skipped batch changed)."""
    for variable, value in zip(variables, values):
        variable.assign(value)


def update_if(finite, apply: Callable, apply_args: tuple, restore: Callable, restore_args: tuple) -> None:
    """``apply(*apply_args)`` when ``finite`` (the same on every replica), else ``restore(...)``.

    ``apply_gradients`` all-reduces (a synchronisation point); strategies that need a
    ``merge_call`` for it (MirroredStrategy) do not allow one inside a ``tf.cond`` in replica
    context, so there the ``cond`` runs in cross-replica context and calls back into each
    replica, as Keras's ``LossScaleOptimizer`` does.
    """
    if tf.__internal__.distribute.strategy_supports_no_merge_call():
        tf.cond(finite, lambda: apply(*apply_args), lambda: restore(*restore_args))
        return

    def cross_replica(distribution, finite, apply_args, restore_args):
        flag = distribution.experimental_local_results(finite)[0]
        tf.cond(
            flag,
            lambda: distribution.extended.call_for_each_replica(apply, args=apply_args),
            lambda: distribution.extended.call_for_each_replica(restore, args=restore_args),
        )

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(finite, apply_args, restore_args))


def distributed(replica_step: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step(x, y) -> StepResult``: ``replica_step`` on every replica, loss, correct predictions
    and examples summed, the (replica-agreed) finite flag."""

    def counted(x, y):
        loss, correct, finite = replica_step(x, y)
        return loss, correct, tf.cast(tf.shape(y)[0], tf.float32), finite

    return reduced(counted, strategy)


def reduced(replica_step: Callable, strategy: tf.distribute.Strategy) -> Callable:
    """``step(x, y) -> StepResult``: ``replica_step(x, y) -> (loss, correct, count, finite)`` on
    every replica, the first three summed, the (replica-agreed) finite flag."""

    @tf.function
    def step(x, y):
        loss, correct, count, finite = strategy.run(replica_step, args=(x, y))
        sum_ = tf.distribute.ReduceOp.SUM
        return StepResult(
            strategy.reduce(sum_, loss, axis=None),
            strategy.reduce(sum_, correct, axis=None),
            strategy.reduce(sum_, count, axis=None),
            strategy.experimental_local_results(finite)[0],
        )

    return step


def make_predict_step(classifier: keras.Model) -> Callable:
    """``predict(x) -> probabilities`` in inference mode (softmax over float32 logits)."""

    @tf.function(reduce_retracing=True)  # a pipeline's last batch may be smaller
    def predict(x):
        return tf.nn.softmax(tf.cast(classifier(x, training=False), tf.float32))

    return predict
