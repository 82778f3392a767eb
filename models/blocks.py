"""Building blocks shared by the zoo's families: stage assembly and the fully connected classifier.

Every family builds its stages the same way (a functional ``keras.Model`` whose input has the
previous stage's output shape) and AlexNet and VGG end in the same kind of classifier
(``[pool] -> flatten -> (Dense -> ReLU -> Dropout) x n -> Dense``). Both live here so the family
modules only describe their architecture. ``layerwise.nn.heads.build_aux_head`` is not reused for the
classifier: it is an auxiliary head (dropout *before* each hidden layer, optional BatchNorm, default
initializers), while both papers drop out after each hidden ReLU and AlexNet needs its own init.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras

from layerwise.errors import ConfigError
from layerwise.nn.layers import features_input

StageBody = Callable[[keras.KerasTensor], keras.KerasTensor]


def check_image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Returns ``input_shape`` as an ``(H, W, C)`` tuple of positive ints.

    Raises:
        ConfigError: the shape is not ``(H, W, C)`` or has a non-positive entry.
    """
    shape = tuple(input_shape)
    if len(shape) != 3 or any(d is None or int(d) <= 0 for d in shape):
        raise ConfigError(f"{model} needs (H, W, C) images with positive sizes, got {shape}")
    return tuple(int(d) for d in shape)


def chain_stages(
    input_shape: Sequence[int], bodies: Sequence[StageBody], model: str
) -> list[keras.Model]:
    """Builds ``stage_00, stage_01, ...`` from ``bodies``; stage j reads stage j-1's output.

    Args:
        input_shape: ``(H, W, C)`` of the image.
        bodies: one function per stage mapping its symbolic input to its symbolic output.
        model: model name, for error messages.

    Returns:
        The functional stage models, in order.

    Raises:
        ConfigError: a stage's output has lost its spatial extent (the image is too small).
    """
    stages, shape = [], tuple(input_shape)
    for j, body in enumerate(bodies):
        name = f"stage_{j:02d}"
        inputs = features_input(shape, f"{name}_in")
        outputs = body(inputs)
        shape = tuple(outputs.shape[1:])
        if any(d is not None and d < 1 for d in shape[:-1]):
            raise ConfigError(
                f"{model}: the image {tuple(input_shape)} is too small, stage {j} outputs {shape}"
            )
        stages.append(keras.Model(inputs, outputs, name=name))
    return stages


def mlp_classifier(
    feature_shape: Sequence[int],
    num_classes: int,
    hidden_units: Sequence[int],
    dropout: float,
    *,
    pre_pool: int | None = None,
    pooled_size: int | None = None,
    kernel_initializer="glorot_uniform",
    hidden_bias_initializer="zeros",
    name: str = "final_head",
) -> keras.Model:
    """AlexNet's and VGG's classifier: ``[pool] -> flatten -> (Dense, ReLU, Dropout)* -> Dense``.

    Args:
        feature_shape: shape of the features the head reads (no batch dimension).
        num_classes: number of logits.
        hidden_units: widths of the hidden fully connected layers (4096, 4096 in both papers).
        dropout: dropout rate after every hidden layer's ReLU (0.5 in both papers).
        pre_pool: if set, a ``pre_pool x pre_pool`` max-pooling with that stride first (VGG's
            last pooling when pooling is folded into the start of the next stage).
        pooled_size: if set, adaptive average pooling to at most ``pooled_size`` per side
            before flattening (torchvision's VGG uses 7); a smaller map is never up-sampled.
        kernel_initializer: initializer of every Dense kernel.
        hidden_bias_initializer: initializer of the hidden layers' biases (the logits' bias is 0).
        name: model name.

    Returns:
        A functional model ``features -> logits``; the last Dense is float32 under mixed precision.
    """
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if pooled_size is not None and pooled_size <= 0:
        raise ConfigError(f"pooled_size must be positive or None, got {pooled_size}")
    if any(int(u) <= 0 for u in hidden_units):
        raise ConfigError(f"head_units must be positive, got {tuple(hidden_units)}")
    features = features_input(feature_shape, f"{name}_features")
    x = features
    if pre_pool is not None:
        x = keras.layers.MaxPooling2D(pre_pool, strides=pre_pool, name=f"{name}_pool")(x)
    if pooled_size is not None and len(x.shape) == 4:
        h, w = x.shape[1], x.shape[2]
        target = (min(pooled_size, h), min(pooled_size, w))
        if target != (h, w):
            x = keras.layers.AdaptiveAveragePooling2D(target, name=f"{name}_avg")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    for i, units in enumerate(hidden_units):
        x = keras.layers.Dense(
            int(units),
            kernel_initializer=kernel_initializer,
            bias_initializer=hidden_bias_initializer,
            name=f"{name}_fc{i}",
        )(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"{name}_dropout{i}")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=kernel_initializer, dtype="float32", name=f"{name}_logits"
    )(x)
    return keras.Model(features, logits, name=name)
