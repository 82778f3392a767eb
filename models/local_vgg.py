"""The VGG-like networks of Nøkland & Eidnes, "Training Neural Networks with Local Error Signals"
(ICML 2019; code ``anokland/local-loss``), one stage per layer.

A variant is one entry of :data:`LOCAL_VGG_VARIANTS`: widths of the 3x3 convs, ``"M"`` a 2x2
max-pooling. Every conv is followed by BatchNorm and a ReLU (their default non-linearity; their
CIFAR runs may use leaky ReLU, *unverified*: ``activation="leaky_relu"``), then the convs' features
are flattened into one fully connected hidden layer of ``hidden_units`` (1024) with BatchNorm and
ReLU, and a linear output layer. ``width_multiplier`` multiplies every conv width ("VGG11b (3x)"
is ``width_multiplier=3``; their ``--feat-mult``), dropout (their ``--dropout``, 0.2 on CIFAR-10
*unverified*) follows every hidden layer.

Stages: one per layer, as the paper trains them (every layer has its own local loss): a conv stage
is ``[max-pool] -> conv -> BN -> ReLU [-> dropout]``, the max-pooling that follows a conv put at the
start of the next stage so that the local loss sees the conv's full-resolution output (their
local loss is taken before the pooling); the last pooling and the flattening open the fully
connected stage. The final head is the linear output layer.

Example:
    >>> net = build_model("vgg8b", (32, 32, 3), 10)
    >>> net.num_stages, net.output_shape(5), net.output_shape(6)
    (7, (4, 4, 512), (1024,))
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from layerwise.errors import ConfigError
from layerwise.training.heads import BN_MOMENTUM
from layerwise.training.layers import features_input
from layerwise.training.network import StagedNetwork
from models.blocks import chain_stages, check_image_shape
from models.registry import MODELS, forward_signature

# their cfg dictionary: conv widths, "M" = 2x2 max-pooling
LOCAL_VGG_VARIANTS: dict[str, tuple] = {
    "vgg8b": (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"),
    "vgg11b": (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
}
ACTIVATIONS = ("relu", "leaky_relu")


def _activation(kind: str, name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(name=name) if kind == "relu" else keras.layers.LeakyReLU(0.01, name=name)


def _conv_stage(width: int, pool_before: bool, i: int, activation: str, dropout: float):
    def body(x):
        if pool_before:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"conv{i}_pool")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        x = _activation(activation, f"conv{i}_act")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name=f"conv{i}_dropout")(x)
        return x

    return body


def _dense_stage(units: int, pool_before: bool, activation: str, dropout: float):
    def body(x):
        if pool_before:
            x = keras.layers.MaxPooling2D(2, strides=2, name="fc_pool")(x)
        x = keras.layers.Flatten(name="fc_flatten")(x)
        x = keras.layers.Dense(units, use_bias=False, name="fc")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="fc_bn")(x)
        x = _activation(activation, "fc_act")(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="fc_dropout")(x)
        return x

    return body


def _output_layer(feature_shape: tuple, num_classes: int) -> keras.Model:
    features = features_input(feature_shape, "final_head_features")
    logits = keras.layers.Dense(num_classes, dtype="float32", name="final_head_logits")(features)
    return keras.Model(features, logits, name="final_head")


def build_local_vgg(
    input_shape: Sequence[int],
    num_classes: int,
    variant: str,
    width_multiplier: float = 1.0,
    hidden_units: int = 1024,
    dropout: float = 0.0,
    activation: str = "relu",
) -> StagedNetwork:
    """Builds Nøkland & Eidnes' ``variant`` (``vgg8b``, ``vgg11b``) as one stage per layer.

    Args:
        input_shape: ``(H, W, C)`` (32 x 32 x 3 in the paper; each ``"M"`` halves it).
        num_classes: classes of the output layer.
        variant: a key of :data:`LOCAL_VGG_VARIANTS`.
        width_multiplier: multiplies every conv width (their ``--feat-mult``; VGG11b (3x): 3).
        hidden_units: width of the fully connected hidden layer (1024).
        dropout: dropout after every hidden layer (0: none).
        activation: ``relu`` or ``leaky_relu`` (slope 0.01).

    Raises:
        ConfigError: an unknown variant or activation, a non-positive width, or an image too small
            for the poolings.
    """
    input_shape = check_image_shape(input_shape, variant)
    if variant not in LOCAL_VGG_VARIANTS:
        raise ConfigError(f"unknown local-loss VGG {variant!r}; choose one of {sorted(LOCAL_VGG_VARIANTS)}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not width_multiplier > 0 or hidden_units <= 0 or not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"need width_multiplier > 0, hidden_units > 0 and 0 <= dropout < 1, got {width_multiplier}, "
            f"{hidden_units}, {dropout}")
    layout = LOCAL_VGG_VARIANTS[variant]
    poolings = layout.count("M")
    if min(input_shape[:2]) < 2**poolings:
        raise ConfigError(f"{variant} halves the image {poolings} times: it needs at least "
                          f"{2 ** poolings}x{2 ** poolings}, got {input_shape[:2]}")
    bodies, pool_next, i = [], False, 0
    for item in layout:
        if item == "M":
            pool_next = True
            continue
        width = max(1, int(round(item * width_multiplier)))
        bodies.append(_conv_stage(width, pool_next, i, activation, dropout))
        pool_next, i = False, i + 1
    bodies.append(_dense_stage(int(hidden_units), pool_next, activation, dropout))
    stages = chain_stages(input_shape, bodies, variant)
    return StagedNetwork(
        variant, input_shape, num_classes, stages, final_head=_output_layer,
        options=dict(width_multiplier=width_multiplier, hidden_units=hidden_units, dropout=dropout,
                     activation=activation),
    )


def _register(variant: str) -> None:
    def builder(input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
        return build_local_vgg(input_shape, num_classes, variant=variant, **options)

    builder.__name__ = f"build_{variant}"
    builder.__doc__ = f"Nøkland & Eidnes' {variant.upper()}; see :func:`build_local_vgg`."
    forward_signature(builder, build_local_vgg, ("variant",))
    MODELS.register(variant, builder)


for _variant in LOCAL_VGG_VARIANTS:
    _register(_variant)
