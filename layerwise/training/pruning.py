"""Filter pruning of a trained stage: scoring filters and slicing them out of Keras models.

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

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.nn.downsampling import SpaceToDepth
from layerwise.nn.layers import BlockAveragePooling2D, features_input

# Layers that neither mix channels nor hold per-channel weights: a channel selection passes.
_PASS_THROUGH = (
    keras.layers.ReLU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.AdaptiveAveragePooling2D,
    keras.layers.AdaptiveMaxPooling2D,
    BlockAveragePooling2D,
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
    inputs = features_input(shape, model.layers[0].name, dtype=model.inputs[0].dtype)
    x = inputs
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config, weights, keep, channels = _sliced_layer(layer, keep, channels, output_keep)
        rebuilt = layer.__class__.from_config(config)
        x = rebuilt(x)
        if weights:
            rebuilt.set_weights(weights)
    return keras.Model(inputs, x, name=model.name)


def _sliced_layer(layer: keras.layers.Layer, keep: np.ndarray | None, channels: int,
                  output_keep: tuple[str, Sequence[int]] | None) -> tuple[dict, list[np.ndarray], np.ndarray | None, int]:
    """``layer``'s config and weights on the kept input channels ``keep`` (of ``channels``), and
    the kept channels and channel count of its output (see :func:`slice_chain`)."""
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
    return config, weights, keep, channels


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


def prune_stage(network, heads: dict, j: int, keep: np.ndarray) -> None:
    """Replaces stage j (filters ``keep``), its head, and stage j+1's input channels, in place."""
    stage = network.stages[j]
    network.stages[j] = slice_chain(stage, output_keep=(last_conv(stage).name, keep))
    network.stages[j].trainable = False
    heads[j] = slice_chain(heads[j], input_keep=keep)
    if j + 1 < network.num_stages:
        network.stages[j + 1] = slice_chain(network.stages[j + 1], input_keep=keep)
