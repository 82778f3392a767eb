"""Filter pruning of a trained stage, and retraining heads on a frozen network.

Belilovsky et al. (ICML 2019, Sec. 4.3): after training each stage (k=3, J=3, M=128 on
CIFAR-10), prune its filters 128 -> 64 with the Taylor criterion of Molchanov et al. ("Pruning
Convolutional Neural Networks for Resource Efficient Inference", 2016), fine-tune the auxiliary
head, and train the next stage on the pruned features.

Scores (one per output filter of the stage's last conv):

- ``taylor``: ``|mean over batch and space of a * dL/da|`` for the stage's output ``a`` (the
  features the head reads), accumulated over a few training batches (first-order estimate of the
  loss change when the feature map is zeroed).
- ``l1``: the L1 norm of the filter's kernel.

Pruning slices the conv kernel (output axis) and bias, the BatchNorm parameters that follow it,
and the input axis of the next consumers: the auxiliary head's first layer (a conv, or the
linear layer after the 2x2 average + flatten) and the next stage's conv. Space-to-depth in
between is mapped exactly: ``tf.nn.space_to_depth`` sends channel ``c`` of a ``C``-channel map
to channels ``p * C + c`` for the 4 block positions ``p``. Layers are rebuilt from their configs
(:func:`slice_chain`), so the pruned stage is a smaller ordinary Keras model.

Example:
    >>> keep = keep_strongest(filter_scores_l1(stage), 64)
    >>> small_stage = slice_chain(stage, output_keep=(last_conv(stage).name, keep))
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.run import checkpoints as ckpt
from layerwise.run.config import TrainConfig
from layerwise.data.base import DataSource, derive_seed
from layerwise.training.downsampling import SpaceToDepth
from layerwise.errors import ConfigError
from layerwise.training.heads import build_aux_head
from layerwise.training.optim import make_optimizer
from layerwise.training.steps import make_predict_step, make_train_step

# Layers that neither mix channels nor hold per-channel weights: a channel selection passes.
_PASS_THROUGH = (
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.AdaptiveAveragePooling2D,
    keras.layers.AdaptiveMaxPooling2D,
)


# ------------------------------------------------------------------------------ slicing
def last_conv(model: keras.Model) -> keras.layers.Conv2D:
    """The last ``Conv2D`` of a chain model (the layer whose filters a stage's output holds)."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    if not convs:
        raise ConfigError(f"{model.name} has no Conv2D layer to prune")
    return convs[-1]


def slice_chain(
    model: keras.Model,
    input_keep: Sequence[int] | None = None,
    output_keep: tuple[str, Sequence[int]] | None = None,
) -> keras.Model:
    """Rebuilds a chain model with some input channels and/or some conv filters removed.

    Args:
        model: a functional model whose layers form a single chain (a stage, an aux head).
        input_keep: indices of the input channels that remain (``None``: all).
        output_keep: ``(conv layer name, indices of its filters that remain)``.

    Returns:
        A new model with the same layer names and the kept slices of the weights: on the kept
        channels it computes exactly what ``model`` computes with the removed input channels
        set to zero, and its pruned conv outputs the kept filters of the original.

    Raises:
        ConfigError: a layer with weights that mixes a channel selection in an unknown way.
    """
    keep = None if input_keep is None else np.asarray(input_keep, dtype=np.int64)
    shape = list(model.inputs[0].shape[1:])
    channels = shape[-1]  # channel count of the *unpruned* map at this point of the chain
    if keep is not None:
        shape[-1] = len(keep)
    inputs = keras.Input(shape=tuple(shape), name=model.layers[0].name)
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = layer.get_config()
        weights = [np.asarray(w) for w in layer.get_weights()]
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            if keep is not None:
                axis = 2 if isinstance(layer, keras.layers.Conv2D) else 0
                weights[0] = np.take(weights[0], keep, axis=axis)
            keep, channels = None, weights[0].shape[-1]
            if output_keep is not None and layer.name == output_keep[0]:
                keep = np.asarray(output_keep[1], dtype=np.int64)
                weights = [w[..., keep] if w.ndim == weights[0].ndim else w[keep] for w in weights]
                config["filters"] = len(keep)
        elif isinstance(layer, keras.layers.BatchNormalization):
            if keep is not None:
                weights = [w[keep] for w in weights]
        elif isinstance(layer, SpaceToDepth):
            b = layer.block_size
            if keep is not None:
                keep = np.array([p * channels + c for p in range(b * b) for c in keep], dtype=np.int64)
            channels *= b * b
        elif isinstance(layer, keras.layers.Flatten):
            positions = int(np.prod(layer.input.shape[1:-1]))
            if keep is not None:
                keep = np.array([p * channels + c for p in range(positions) for c in keep], dtype=np.int64)
            channels *= positions
        elif not isinstance(layer, _PASS_THROUGH) and (weights or keep is not None):
            raise ConfigError(f"cannot prune through layer {layer.name} ({type(layer).__name__})")
        rebuilt = layer.__class__.from_config(config)
        x = rebuilt(x)
        if weights:
            rebuilt.set_weights(weights)
    return keras.Model(inputs, x, name=model.name)


def keep_strongest(scores: np.ndarray, width: int) -> np.ndarray:
    """Sorted indices of the ``width`` highest scores (ties: lower index first)."""
    if not 0 < width <= len(scores):
        raise ConfigError(f"cannot prune {len(scores)} filters to {width}; choose 1..{len(scores)}")
    order = np.argsort(-np.asarray(scores), kind="stable")
    return np.sort(order[:width])


# ------------------------------------------------------------------------------ scoring
def filter_scores_l1(stage: keras.Model) -> np.ndarray:
    """L1 norm of every filter of the stage's last conv."""
    kernel = np.asarray(last_conv(stage).kernel)
    return np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0)


def filter_scores_taylor(
    stage: keras.Model,
    head: keras.Model,
    batches,
    frozen: keras.Model | None = None,
    max_batches: int = 20,
) -> np.ndarray:
    """Molchanov et al.'s Taylor criterion ``|mean_{batch, space}(a * dL/da)|`` per channel.

    ``a`` is the stage output (post-activation), ``L`` the head's cross-entropy. Valid when the
    stage output's channels are the last conv's filters (conv -> [BN] -> ReLU [-> pool]).
    """

    @tf.function
    def contribution(x, y):
        if frozen is not None:
            x = frozen(x, training=False)
        features = stage(x, training=False)
        with tf.GradientTape() as tape:
            tape.watch(features)
            logits = head(features, training=False)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        grad = tape.gradient(loss, features)
        return tf.reduce_sum(features * grad, axis=[0, 1, 2]), tf.cast(tf.size(features[..., 0]), tf.float32)

    total, count = 0.0, 0.0
    for i, (x, y) in enumerate(batches):
        if i >= max_batches:
            break
        s, n = contribution(x, y)
        total, count = total + s.numpy(), count + float(n)
    return np.abs(np.asarray(total) / max(count, 1.0))


# ------------------------------------------------------------------------------ costs
def count_flops(model: keras.Model) -> int:
    """Floating-point operations of one forward pass: 2 x multiply-adds of convs and dense layers."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            macs += count_flops(layer) // 2
        elif isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape
            macs += int(np.prod(out[1:3])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, keras.layers.Dense):
            macs += int(np.prod(layer.kernel.shape))
    return 2 * macs


# ------------------------------------------------------------------------------ training heads
def train_head(
    head: keras.Model,
    frozen: keras.Model,
    data: DataSource,
    config: TrainConfig,
    epochs: int,
    seed: int,
) -> None:
    """Trains ``head`` on the features of the frozen ``frozen`` model (SGD/Adam as configured)."""
    steps = data.num_train // config.batch_size
    optimizer = make_optimizer(config, steps, epochs)
    optimizer.build(head.trainable_variables)
    step = make_train_step(
        head, optimizer, frozen=frozen, weight_decay=config.weight_decay, global_batch_size=config.batch_size
    )
    for epoch in range(epochs):
        for x, y in data.train_batches(config.batch_size, seed, epoch):
            step(x, y)


def _constant_lr(config: TrainConfig, lr: float) -> TrainConfig:
    """``config`` with a constant learning rate ``lr`` (no decay, milestones or warm-up)."""
    return config.replace(lr=lr, lr_schedule="step", lr_decay_every=0, lr_milestones=[], warmup_steps=0)


def predict_test(model: keras.Model, data: DataSource, batch_size: int = 256) -> np.ndarray:
    predict = make_predict_step(model)
    return np.concatenate([predict(x).numpy() for x, _ in data.eval_batches("test", batch_size)])


def _accuracy(probs: np.ndarray, data: DataSource) -> float:
    return float(np.mean(np.argmax(probs, -1) == data.labels("test")))


def _classifier(network, upto: int, head: keras.Model) -> keras.Model:
    images = network.image_input()
    prefix = network.prefix(upto)
    return keras.Model(images, head(prefix(images, training=False)), name=f"classifier_{upto:02d}")


# ------------------------------------------------------------------------------ trainer hooks
def prune_stage(network, heads: dict, j: int, keep: np.ndarray) -> None:
    """Replaces stage j (filters ``keep``), its head, and stage j+1's input channels, in place."""
    stage = network.stages[j]
    network.stages[j] = slice_chain(stage, output_keep=(last_conv(stage).name, keep))
    network.stages[j].trainable = False
    heads[j] = slice_chain(heads[j], input_keep=keep)
    if j + 1 < network.num_stages:
        network.stages[j + 1] = slice_chain(network.stages[j + 1], input_keep=keep)


def prune_after_stage(trainer, j: int) -> dict[str, Any]:
    """Prunes the just-trained stage j to ``config.prune_to_width`` filters (GreedyTrainer hook).

    Scores the filters, slices stage j, its head and stage j+1's input, fine-tunes the head
    for ``config.prune_finetune_epochs`` epochs at a tenth of the learning rate, makes the
    pruned head's predictions stage j's ensemble member, and records params, FLOPs and test
    accuracy before pruning, right after it and after fine-tuning. Deterministic, so a resumed
    run re-prunes identically before loading the next stage.
    """
    config, network, data = trainer.config, trainer.network, trainer.data
    start = time.perf_counter()
    stage, head = network.stages[j], trainer.heads[j]
    frozen = network.prefix(j)
    before = _classifier(network, j + 1, head)
    params_before, flops_before = int(before.count_params()), count_flops(before)
    acc_before = _accuracy(predict_test(before, data), data)
    if config.prune_criterion == "l1":
        scores = filter_scores_l1(stage)
    else:
        batches = data.train_batches(config.batch_size, derive_seed(config.seed, 4, j), 0)
        scores = filter_scores_taylor(stage, head, batches, frozen=frozen)
    keep = keep_strongest(scores, min(config.prune_to_width, len(scores)))
    prune_stage(network, trainer.heads, j, keep)
    head = trainer.heads[j]
    after = _classifier(network, j + 1, head)
    acc_pruned = _accuracy(predict_test(after, data), data)
    keras.utils.set_random_seed(derive_seed(config.seed, 5, j))
    train_head(
        head, network.prefix(j + 1), data, _constant_lr(config, config.lr * 0.1),
        config.prune_finetune_epochs, derive_seed(config.seed, 6, j),
    )
    probs = predict_test(after, data)
    trainer._test_probs[-1] = probs  # the pruned network's head is stage j's ensemble member
    from layerwise.training.trainer import ensemble_probabilities

    record = {
        "event": "prune",
        "problem": f"stage_{j:02d}_pruned",
        "stage": j,
        "criterion": config.prune_criterion,
        "filters_before": int(len(scores)),
        "filters_after": int(len(keep)),
        "kept_filters": [int(k) for k in keep],
        "params_before": params_before,
        "params": int(after.count_params()),
        "flops_before": flops_before,
        "flops": count_flops(after),
        "acc_before_pruning": acc_before,
        "acc_pruned_no_finetune": acc_pruned,
        "test_acc": _accuracy(probs, data),
        "ensemble_acc": _accuracy(ensemble_probabilities(trainer._test_probs), data),
        "seconds": time.perf_counter() - start,
    }
    if trainer.workdir is not None:
        path = os.path.join(trainer.workdir, "checkpoints", f"stage_{j:02d}", "pruned.npz")
        arrays = {
            "keep": np.asarray(keep),
            **ckpt.variables_to_arrays("stage", network.stages[j].variables),
            **ckpt.variables_to_arrays("head", head.variables),
        }
        ckpt.save_arrays(path, arrays, {"record": record})
        _export_once(trainer, f"stage_{j:02d}_pruned", after)
    trainer.log(
        f"stage_{j:02d} pruned {len(scores)} -> {len(keep)} filters ({config.prune_criterion}): test acc "
        f"{acc_before:.2%} -> {acc_pruned:.2%} (no fine-tuning) -> {record['test_acc']:.2%}; "
        f"params {params_before} -> {record['params']}, FLOPs {flops_before} -> {record['flops']}"
    )
    _record(trainer, record)
    return record


def _export_once(trainer, suffix: str, classifier: keras.Model) -> None:
    """Exports ``classifier`` as the servable ``<model>_<suffix>`` unless it already has a version."""
    from layerwise.serving.export import export_classifier, versions

    servable = os.path.join(trainer.workdir, "export", f"{trainer.network.name}_{suffix}")
    if not versions(servable):
        export_classifier(classifier, servable, trainer.data.mean, trainer.data.std)


def refit_final_head(trainer) -> dict[str, Any]:
    """After the last stage: trains a new head (``config.refit_head_spec()``) on the frozen net."""
    config, network, data = trainer.config, trainer.network, trainer.data
    start = time.perf_counter()
    last = network.num_stages - 1
    keras.utils.set_random_seed(derive_seed(config.seed, 7, last))
    head = build_aux_head(network.output_shape(last), network.num_classes, config.refit_head_spec(), name="refit_head")
    prefix = network.prefix(network.num_stages)
    path = None if trainer.workdir is None else os.path.join(trainer.workdir, "checkpoints", "refit_head", "final.npz")
    if path is not None and os.path.exists(path):
        arrays, _ = ckpt.load_arrays(path)
        ckpt.assign_arrays("head", head.variables, arrays, path)
    else:
        train_head(head, prefix, data, config, config.refit_head_epochs, derive_seed(config.seed, 8, last))
        if path is not None:
            ckpt.save_arrays(path, ckpt.variables_to_arrays("head", head.variables), {})
    trainer.heads["refit"] = head
    classifier = _classifier(network, network.num_stages, head)
    if trainer.workdir is not None:
        _export_once(trainer, "refit_head", classifier)
    record = {
        "event": "refit",
        "problem": "final_head_refit",
        "stage": last,
        "head_params": int(head.count_params()),
        "replaced_head_params": int(trainer.heads[last].count_params()),
        "params": int(classifier.count_params()),
        "flops": count_flops(classifier),
        "test_acc": _accuracy(predict_test(classifier, data), data),
        "epochs": config.refit_head_epochs,
        "seconds": time.perf_counter() - start,
    }
    trainer.log(
        f"final head refit ({record['head_params']} params instead of {record['replaced_head_params']}): "
        f"test acc {record['test_acc']:.2%}"
    )
    _record(trainer, record)
    return record


def _record(trainer, record: dict[str, Any]) -> None:
    if trainer.workdir is not None:
        if not any(r.get("problem") == record["problem"] for r in trainer.runlog.records):
            trainer.runlog.write(record)
    else:
        trainer.runlog.records.append(record)
    trainer.records.append(record)
