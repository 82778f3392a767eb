"""The VGG-like networks of Nøkland & Eidnes, "Training Neural Networks with Local Error Signals"
(ICML 2019; code ``anokland/local-loss``), one stage per layer.

A variant is one entry of :data:`LOCAL_VGG_VARIANTS`: widths of the 3x3 convs, ``"M"`` a 2x2
max-pooling. Every conv is followed by BatchNorm and a ReLU (their default non-linearity; their
CIFAR predsim commands pass ``--nonlin leakyrelu``: ``activation="leaky_relu"``), then the convs' features
are flattened into one fully connected hidden layer of ``hidden_units`` (1024) with BatchNorm and
ReLU, and a linear output layer. ``width_multiplier`` multiplies every conv width ("VGG11b (3x)"
is ``width_multiplier=3``; their ``--feat-mult``), dropout (their ``--dropout``: 0.2 for VGG8b on
CIFAR-10, 0.3 for VGG11b (3x), in their ``run_experiments.sh``) follows every hidden layer.

Stages: one per layer, as the paper trains them (every layer has its own local loss): a conv stage
is ``[dropout ->] [max-pool ->] conv -> BN -> ReLU``. What follows a layer's activation (its dropout,
then the max-pooling) opens the next stage, so that the local loss reads the layer's output as
their code does: at full resolution (before the pooling) and *before dropout*. Their
``LocalLossBlockConv.forward`` (``train.py`` of ``anokland/local-loss``) keeps the activation
``h`` for the local loss and applies ``Dropout2d`` only to ``h_return``, what the next layer
reads; ``LocalLossBlockLinear`` does the same with ``Dropout``. Here the dropout of a conv's
features is channel-wise (``keras.layers.SpatialDropout2D``, PyTorch's ``Dropout2d``: whole
feature maps) unless ``spatial_dropout=False``, and the fully connected layer's (element-wise
``keras.layers.Dropout``) opens the final head, the linear output layer (their ``layer_out``
reads the dropped-out features). Channel dropout and max-pooling commute, so dropping before or
after the pooling is the same function.

Example:
    >>> net = build_model("vgg8b", (32, 32, 3), 10)
    >>> net.num_stages, net.output_shape(5), net.output_shape(6)
    (7, (4, 4, 512), (1024,))
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from layerwise.errors import ConfigError
from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import features_input
from layerwise.nn.network import StagedNetwork
from models.blocks import chain_stages, check_image_shape
from models.zoo import MODELS, forward_signature

# their cfg dictionary: conv widths, "M" = 2x2 max-pooling
LOCAL_VGG_VARIANTS: dict[str, tuple] = {
    "vgg8b": (128, 256, "M", 256, 512, "M", 512, "M", 512, "M"),
    "vgg11b": (128, 128, 128, 256, "M", 256, 512, "M", 512, 512, "M", 512, "M"),
}
ACTIVATIONS = ("relu", "leaky_relu")


def _activation(kind: str, name: str) -> keras.layers.Layer:
    return keras.layers.ReLU(name=name) if kind == "relu" else keras.layers.LeakyReLU(0.01, name=name)


def _feature_dropout(rate: float, spatial: bool, name: str) -> keras.layers.Layer:
    """The dropout of a conv's features: whole channels (PyTorch's ``Dropout2d``) or elements."""
    return keras.layers.SpatialDropout2D(rate, name=name) if spatial else keras.layers.Dropout(rate, name=name)


def _conv_stage(width: int, pool_before: bool, i: int, activation: str, dropout_before: keras.layers.Layer | None):
    def body(x):
        if dropout_before is not None:  # the previous conv's dropout: its local loss read x without it
            x = dropout_before(x)
        if pool_before:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"conv{i}_pool")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn")(x)
        return _activation(activation, f"conv{i}_act")(x)

    return body


def _dense_stage(units: int, pool_before: bool, activation: str, dropout_before: keras.layers.Layer | None):
    def body(x):
        if dropout_before is not None:
            x = dropout_before(x)
        if pool_before:
            x = keras.layers.MaxPooling2D(2, strides=2, name="fc_pool")(x)
        x = keras.layers.Flatten(name="fc_flatten")(x)
        x = keras.layers.Dense(units, use_bias=False, name="fc")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name="fc_bn")(x)
        return _activation(activation, "fc_act")(x)

    return body


def _output_layer(dropout: float, zero_init: bool):
    def build(feature_shape: tuple, num_classes: int) -> keras.Model:
        features = features_input(feature_shape, "final_head_features")
        x = keras.layers.Dropout(dropout, name="fc_dropout")(features) if dropout else features
        logits = keras.layers.Dense(num_classes, dtype="float32", kernel_initializer="zeros" if zero_init else
                                    "glorot_uniform", name="final_head_logits")(x)
        return keras.Model(features, logits, name="final_head")

    return build


def _check_options(input_shape: tuple, variant: str, width_multiplier: float, hidden_units: int, dropout: float,
                   activation: str, spatial_dropout: bool, zero_init_output: bool) -> None:
    """Raises the ConfigErrors :func:`build_local_vgg` documents."""
    if variant not in LOCAL_VGG_VARIANTS:
        raise ConfigError(f"unknown local-loss VGG {variant!r}; choose one of {sorted(LOCAL_VGG_VARIANTS)}")
    if activation not in ACTIVATIONS:
        raise ConfigError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not width_multiplier > 0 or hidden_units <= 0 or not 0.0 <= dropout < 1.0:
        raise ConfigError(
            f"need width_multiplier > 0, hidden_units > 0 and 0 <= dropout < 1, got {width_multiplier}, "
            f"{hidden_units}, {dropout}")
    poolings = LOCAL_VGG_VARIANTS[variant].count("M")
    if min(input_shape[:2]) < 2**poolings:
        raise ConfigError(f"{variant} halves the image {poolings} times: it needs at least "
                          f"{2 ** poolings}x{2 ** poolings}, got {input_shape[:2]}")
    for name, value in (("spatial_dropout", spatial_dropout), ("zero_init_output", zero_init_output)):
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be True or False, got {value!r}")


def build_local_vgg(
    input_shape: Sequence[int],
    num_classes: int,
    variant: str,
    width_multiplier: float = 1.0,
    hidden_units: int = 1024,
    dropout: float = 0.0,
    activation: str = "relu",
    spatial_dropout: bool = True,
    zero_init_output: bool = False,
) -> StagedNetwork:
    """Builds Nøkland & Eidnes' ``variant`` (``vgg8b``, ``vgg11b``) as one stage per layer.

    Args:
        input_shape: ``(H, W, C)`` (32 x 32 x 3 in the paper; each ``"M"`` halves it).
        num_classes: classes of the output layer.
        variant: a key of :data:`LOCAL_VGG_VARIANTS`.
        width_multiplier: multiplies every conv width (their ``--feat-mult``; VGG11b (3x): 3).
        hidden_units: width of the fully connected hidden layer (1024).
        dropout: dropout after every hidden layer (0: none), applied to what the next layer reads
            only: each layer's local loss reads its output before dropout (see the module doc).
        activation: ``relu`` or ``leaky_relu`` (slope 0.01).
        spatial_dropout: drop whole channels of the conv features (their ``Dropout2d``; the
            default); ``False``: single elements (``keras.layers.Dropout``).
        zero_init_output: the output layer's weights start at zero, as their ``layer_out`` when it
            trains on local losses (``Net.__init__`` of their ``train.py``: ``if not args.backprop``);
            the Nøkland & Eidnes presets set it.

    Raises:
        ConfigError: an unknown variant or activation, a non-positive width, or an image too small
            for the poolings.
    """
    input_shape = check_image_shape(input_shape, variant)
    _check_options(input_shape, variant, width_multiplier, hidden_units, dropout, activation, spatial_dropout,
                   zero_init_output)
    layout = LOCAL_VGG_VARIANTS[variant]
    bodies, pool_next, i = [], False, 0
    dropout_before = None  # the dropout of the conv before, opening the next stage
    for item in layout:
        if item == "M":
            pool_next = True
            continue
        width = max(1, int(round(item * width_multiplier)))
        bodies.append(_conv_stage(width, pool_next, i, activation, dropout_before))
        dropout_before = _feature_dropout(dropout, spatial_dropout, f"conv{i}_dropout") if dropout else None
        pool_next, i = False, i + 1
    bodies.append(_dense_stage(int(hidden_units), pool_next, activation, dropout_before))
    stages = chain_stages(input_shape, bodies, variant)
    return StagedNetwork(
        variant, input_shape, num_classes, stages, final_head=_output_layer(dropout, zero_init_output),
        options=dict(width_multiplier=width_multiplier, hidden_units=hidden_units, dropout=dropout,
                     activation=activation, spatial_dropout=spatial_dropout, zero_init_output=zero_init_output),
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
