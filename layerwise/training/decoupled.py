"""Decoupled Greedy Learning: every stage takes a step on every batch.

Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs", ICML 2020. Stage j and
its auxiliary head are trained on the ``tf.stop_gradient`` output of stage j-1 with their own
optimizer, all stages on the same batch in one pass, so one epoch trains all J stages (against J
sequential stage epochs in layerwise mode). No gradient crosses a stage boundary; the stages
could run on different devices, pipelined.

Like layerwise mode, each stage gets the 2^j-weighted ensemble evaluation, a record, a per-stage
SavedModel (``<model>_stage_XX``) and the epoch checkpoints (one problem, ``decoupled``, holding
every stage, head and optimizer) that make a rerun resume.

Example:
    >>> trainer = GreedyTrainer(network, data, config.replace(mode="decoupled"), "runs/dgl")
    >>> records = trainer.run()   # calls run_decoupled(trainer)
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import tensorflow as tf

from layerwise.run import checkpoints as ckpt
from layerwise.data.base import derive_seed
from layerwise.training.optim import make_optimizer
from layerwise.training.network import primary, symbolic_inputs_like
from layerwise.training.steps import _loss_fn, all_finite, correct_count, distributed, make_predict_step, update_if


def build_stage_models(trainer) -> list[keras.Model]:
    """Stage j + its new head as ``inputs -> [stage output, logits]``, for every stage."""
    network = trainer.network
    network.freeze_below(0)
    models = []
    for j, stage in enumerate(network.stages):
        keras.utils.set_random_seed(derive_seed(trainer.config.seed, 1, j))
        with trainer.strategy.scope():
            head = trainer._make_head(j)
            inputs = symbolic_inputs_like(stage, f"stage_{j:02d}_input")
            out = stage(inputs)
            models.append(keras.Model(inputs, [out, head(primary(out))], name=f"stage_{j:02d}_decoupled"))
        trainer.heads[j] = head
    return models


def make_decoupled_step(models, optimizers, *, weight_decay, global_batch_size, strategy, jit_compile=False):
    """``step(x, y) -> (loss, correct, finite)`` of the last stage; every stage is updated.

    A non-finite loss in any stage skips the update of every stage (and puts back the BatchNorm
    statistics), like the layerwise step.
    """
    variables = [m.trainable_variables for m in models]
    statistics = [v for m in models for v in m.non_trainable_variables if v.trainable is False]
    losses_of = [_loss_fn(m, vs, weight_decay, global_batch_size) for m, vs in zip(models, variables)]
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
            x = tf.nest.map_structure(tf.stop_gradient, out)
        return losses, grads, correct_count(logits, y)

    if jit_compile:
        forward_backward = tf.function(forward_backward, jit_compile=True)

    def replica_step(x, y):
        saved = [tf.identity(v.value) for v in statistics]
        losses, grads, correct = forward_backward(x, y)
        finite = all_finite(tf.add_n(losses))

        def apply(grads):
            for optimizer, g, vs in zip(optimizers, grads, variables):
                optimizer.apply_gradients(zip(g, vs))

        def restore(saved):
            for v, value in zip(statistics, saved):
                v.assign(value)

        update_if(finite, apply, (grads,), restore, (saved,))
        return losses[-1], correct, finite

    return distributed(replica_step, strategy)


def run_decoupled(trainer) -> list[dict[str, Any]]:
    """Trains every stage of ``trainer.network`` at once; returns one record per stage."""
    from layerwise.training.trainer import Problem, ensemble_probabilities

    config, network = trainer.config, trainer.network
    last = network.num_stages - 1
    models = build_stage_models(trainer)
    stage_problems = [
        Problem(f"stage_{j:02d}", j, m, network.prefix(j), config.epochs_per_stage) for j, m in enumerate(models)
    ]
    run = Problem("decoupled", last, models[-1], None, config.epochs_per_stage)
    checkpoints = trainer._checkpoints(run)
    all_variables = [v for m in models for v in m.variables]
    if checkpoints is not None and checkpoints.has_final():
        arrays, meta = checkpoints.load_final()
        ckpt.assign_arrays("model", all_variables, arrays, checkpoints.final_path)
        trainer.log(f"decoupled: finished earlier, loaded from {checkpoints.final_path}")
        for problem, record in zip(stage_problems, meta["records"]):
            trainer._test_probs.append(arrays[f"test_probs_{problem.stage}"])
            trainer._complete(problem, _classifier(trainer, problem), record)
        return trainer.records

    with trainer.strategy.scope():
        optimizers = []
        for m in models:
            optimizer = make_optimizer(config, trainer.steps_per_epoch, config.epochs_per_stage)
            optimizer.build(m.trainable_variables)
            optimizers.append(optimizer)
    optimizer_variables = [v for o in optimizers for v in o.variables]
    history = trainer.restore_epoch(run.name, run.epochs, all_variables, optimizer_variables, checkpoints)
    step = make_decoupled_step(
        models, optimizers, weight_decay=config.weight_decay, global_batch_size=config.batch_size,
        strategy=trainer.strategy, jit_compile=trainer.options.jit_compile,
    )
    classifiers = [_classifier(trainer, p) for p in stage_problems]
    predicts = [make_predict_step(c) for c in classifiers]
    for epoch in range(len(history), run.epochs):
        batches = trainer.train_batches(run, epoch)
        history.append(trainer._train_epoch(run, step, predicts[-1], optimizers[-1], epoch, batches))
        if checkpoints is not None:
            arrays = {
                **ckpt.variables_to_arrays("model", all_variables),
                **ckpt.variables_to_arrays("optimizer", optimizer_variables),
            }
            checkpoints.save_epoch(epoch, arrays, {"history": history})

    labels = trainer.data.labels("test")
    seconds = float(sum(r["seconds"] for r in history))
    records, final = [], ckpt.variables_to_arrays("model", all_variables)
    probs_so_far = []
    for problem, classifier, predict in zip(stage_problems, classifiers, predicts):
        probs = trainer._probabilities(predict, "test")
        probs_so_far.append(probs)
        final[f"test_probs_{problem.stage}"] = probs
        records.append({
            "event": "stage",
            "problem": problem.name,
            "stage": problem.stage,
            "params": int(classifier.count_params()),
            "trainable_params": int(problem.trainable.count_params()),
            "train_acc": history[-1]["train_acc"] if problem.stage == last else None,
            "test_acc": float(np.mean(np.argmax(probs, -1) == labels)),
            "ensemble_acc": float(np.mean(np.argmax(ensemble_probabilities(probs_so_far), -1) == labels)),
            "epochs": run.epochs,
            "seconds": seconds,  # the one pass that trained every stage
        })
    if checkpoints is not None:
        checkpoints.save_final(final, {"records": records})
        checkpoints.clear_epochs()
    for problem, classifier, record, probs in zip(stage_problems, classifiers, records, probs_so_far):
        trainer._test_probs.append(probs)
        trainer._complete(problem, classifier, record)
    return trainer.records


def _classifier(trainer, problem) -> keras.Model:
    """Image -> logits of stage ``problem.stage``'s head (drops the stage-output branch)."""
    images = trainer.network.image_input()
    x = images if problem.frozen is None else problem.frozen(images)
    return keras.Model(images, problem.trainable(x)[1], name=f"{problem.name}_classifier")
