"""Auxiliary classifier heads: the paper's k-hidden-layer auxiliary problems.

Belilovsky et al. (ICML 2019), Sec. 3: the auxiliary classifier of stage j is
``C = L o A o (ReLU W~)^(k-1)``: ``k - 1`` constant-width 3x3 convolutions (width M~), a spatial
average to 2x2 (A) and a linear layer (L). ``k = 1`` is the linear model on 2x2-averaged features.
The reference code puts BatchNorm after every auxiliary conv and before the linear layer; here
that follows ``AuxHead.batchnorm``. Spatial averaging is adaptive (PyTorch
``AdaptiveAvgPool2d`` semantics), so odd sizes such as 7x7 average overlapping windows.

``AuxHead.pre_pool`` (default 1: off, the paper's text) first averages the features down by that
factor before the hidden convs, as the ImageNet reference code of Decoupled Greedy Learning does
(``auxillary_classifier2``: adaptive average to ``ceil(size / 4)``, Belilovsky et al. ICML 2020).
At 112x112 a width-256 head is otherwise the largest activation of the whole stage problem;
``pre_pool=4`` divides the head's activation memory and FLOPs by 16.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import keras

from layerwise.errors import ConfigError
from layerwise.config import recorded
from layerwise.config import AUX_POOLINGS, TrainConfig, check_head_shape
from layerwise.nn.layers import (
    FusedBatchNormalization,
    average_pool_to,
    features_input,
    padded_average_pool,
)
from layerwise.nn.network import HeadBuilder

# PyTorch's BatchNorm momentum 0.1 (the reference code) is Keras momentum 0.9; Keras's 0.99
# default leaves the moving statistics far from the data after a few hundred steps.
BN_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class AuxHead:
    """An auxiliary classifier: the paper's k-hidden-layer auxiliary problem, as a head builder.

    Calling it builds the head for a stage's features: ``AuxHead(k=2, width=128)(shape,
    num_classes)`` is a functional ``features -> logits`` model (see :func:`build_aux_head`).
    Any callable ``(feature_shape, num_classes) -> keras.Model`` can stand in for it where a head
    is expected (``layerwise.fit(head=...)``). Every field has a configuration field
    (``aux_conv_layers`` = k - 1, ``aux_width``, ...: :func:`head_options`), so a run's
    ``config.json`` records the head whole; the fields are checked when it is made.

    Attributes:
        k: depth of the auxiliary problem (Belilovsky et al., Sec. 3): ``k - 1`` hidden 3x3 conv
            layers, then the 2x2 average and the linear layer; ``k = 1`` is the linear model.
        width: width of those conv layers, M~ in the paper.
        batchnorm: BatchNorm after each hidden conv and before the linear layer.
        pooled_size: spatial size after averaging (the paper uses 2).
        hidden_units: optional fully connected layers before the classifier (e.g. VGG's
            ``(4096, 4096)``); empty for the paper's conv heads.
        dropout: dropout rate before each hidden fully connected layer.
        pre_pool: average the features down by this factor (to ``ceil(H / f) x ceil(W / f)``)
            before the hidden convs; 1 = off (the paper), 4 = the DGL ImageNet reference code.
        max_features: instead of ``pooled_size``, average down only as far as needed for at most
            this many features to reach the linear layer, halving the height, then the width, in
            turn (Nøkland & Eidnes 2019, ``dim_in_decoder``, 4096 in their code); 0 = off.
        pooling: with ``max_features``, how a block that does not divide the features averages:
            ``"adaptive"`` (PyTorch's ``AdaptiveAvgPool2d``: overlapping windows over every row
            and column) or ``"padded"``, Nøkland & Eidnes' ``AvgPool2d((kh, kw), padding)``
            (``LocalLossBlockConv.__init__`` in ``train.py`` of ``anokland/local-loss``): windows
            of the block's size at its stride, half a block of zero padding on each side counted
            in the mean, and the rows and columns past the last whole window left out (at 28
            pixels with a 16-row block: windows over rows -8..7 and 8..23, rows 24-27 unread).
            Where the block divides the features both are the block mean.
        zero_init: the linear layer's weights start at zero (Nøkland & Eidnes zero
            ``decoder_y.weight`` in ``LocalLossBlockConv.__init__``); ``False``: Keras's default.
    """

    # the defaults are the configuration's (aux_conv_layers=1, aux_width=128): one default head,
    # whether it comes from AuxHead(), layerwise.fit or the CLI
    k: int = 2
    width: int = 128
    batchnorm: bool = True
    pooled_size: int = 2
    hidden_units: tuple[int, ...] = ()
    dropout: float = 0.0
    pre_pool: int = 1
    max_features: int = 0
    pooling: str = "adaptive"
    zero_init: bool = False

    @property
    def conv_layers(self) -> int:
        """Hidden 3x3 conv layers: ``k - 1`` (``--aux_conv_layers``)."""
        return self.k - 1

    def __call__(self, feature_shape: Sequence[int], num_classes: int, name: str = "aux_head") -> keras.Model:
        """The head for features of ``feature_shape`` (see :func:`build_aux_head`)."""
        return build_aux_head(feature_shape, num_classes, self, name)

    def __post_init__(self):
        if isinstance(self.hidden_units, list):  # a list from a config or a user: the same head
            object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        self.validate()

    def validate(self) -> "AuxHead":
        """Checks every field's type and range.

        Raises:
            ConfigError: naming the AuxHead argument and what it takes.
        """
        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        for name, low, note in (("k", 1, " (k - 1 hidden convs)"), ("width", 1, ""), ("pooled_size", 1, ""),
                                ("pre_pool", 1, " (1: off)"), ("max_features", 0, " (0: off)")):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ConfigError(f"AuxHead {name} must be an integer >= {low}{note}, got {value!r}")
        for name in ("batchnorm", "zero_init"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"AuxHead {name} must be True or False, got {getattr(self, name)!r}")
        units = self.hidden_units
        if not isinstance(units, tuple) or not all(is_int(u) and u > 0 for u in units):
            raise ConfigError(f"AuxHead hidden_units must be a tuple of positive integers, got {units!r}")
        dropout = self.dropout
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"AuxHead dropout must be a number in [0, 1), got {dropout!r}")
        if dropout and not units:
            raise ConfigError(f"AuxHead dropout={dropout!r} applies before the hidden_units layers, and there are none: "
                              "give hidden_units too, or leave dropout at 0")
        if self.pooling not in AUX_POOLINGS:
            raise ConfigError(f"AuxHead pooling must be one of {AUX_POOLINGS}, got {self.pooling!r}")
        if self.pooling != "adaptive" and not self.max_features:
            raise ConfigError(f"AuxHead pooling={self.pooling!r} sizes its windows from max_features: pass "
                              "max_features (e.g. 4096) or pooling='adaptive'")
        check_head_shape(self.conv_layers, self.width, self.pre_pool)
        return self

    def pooled_shape(self, height: int, width: int, channels: int) -> tuple[int, int]:
        """The spatial size the features are averaged to before the linear layer."""
        if not self.max_features:
            side = min(self.pooled_size, height, width)
            return side, side
        return self.decoder_blocks(height, width, channels)[0]

    def decoder_blocks(self, height: int, width: int, channels: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """With ``max_features``: the pooled ``(h, w)`` and the block ``(kh, kw)`` averaged into each
        pooled cell, ``h = ceil(height / kh)`` (Nøkland & Eidnes' loop, ``LocalLossBlockConv.__init__``)."""
        h, w, kh, kw = height, width, 1, 1
        while channels * h * w > self.max_features and kh < height:  # Nøkland & Eidnes' loop
            kh *= 2
            h = math.ceil(height / kh)
            if channels * h * w > self.max_features:
                kw *= 2
                w = math.ceil(width / kw)
        return (h, w), (kh, kw)

    def conv_size(self, feature_shape: Sequence[int]) -> tuple[int, int]:
        """Spatial size the hidden convs run at: the features' after ``pre_pool``."""
        return math.ceil(feature_shape[0] / self.pre_pool), math.ceil(feature_shape[1] / self.pre_pool)

    def too_deep_for(self, feature_shape: Sequence[int]) -> bool:
        """Whether the hidden 3x3 convs would run on a map under 2x2 (after ``pre_pool``)."""
        return bool(self.conv_layers) and len(feature_shape) == 3 and min(self.conv_size(feature_shape)) < 2

    def fitted_to(self, feature_shape: Sequence[int]) -> "AuxHead":
        """This head, or its linear version (``k=1``) where :meth:`too_deep_for` the features:
        what the default heads of ``layerwise.fit`` and the CLI do on 1x1 maps."""
        return dataclasses.replace(self, k=1) if self.too_deep_for(feature_shape) else self

    def check_fits(self, feature_shape: Sequence[int], where: str) -> None:
        """Raises ConfigError when k - 1 hidden 3x3 convs would run on a 1-pixel map.

        A 3x3 conv on a 1x1 map only ever sees its centre tap (the rest is zero padding): k > 1
        is then a waste of eight ninths of its weights, and almost surely a mistake of size. The
        message names Python arguments (this head was given as one).
        """
        if self.too_deep_for(feature_shape):
            h, w = self.conv_size(feature_shape)
            raise ConfigError(
                f"AuxHead(k={self.conv_layers + 1}) needs 3x3 auxiliary convs, but {where}'s features are "
                f"{h}x{w}{' after pre_pool' if self.pre_pool > 1 else ''}: pass head=layerwise.AuxHead(k=1, ...) "
                "or leave head unset (the default head turns linear where the features are 1x1), or downsample "
                "less, use a smaller pre_pool or larger images"
            )


# the configuration fields of an AuxHead (besides ``final_aux_width``, the last stage's own width)
AUX_FIELDS = ("aux_conv_layers", "aux_width", "aux_batchnorm", "aux_pooled_size", "aux_hidden_units", "aux_dropout",
              "aux_pre_pool", "aux_max_features", "aux_pooling", "aux_zero_init", "aux_head_object")


def head_options(head: AuxHead | HeadBuilder, required: bool) -> dict[str, Any]:
    """The configuration fields (flat names) that record ``head``: an :class:`AuxHead` field by
    field, any other head builder as a Keras-serialised object (``aux_head_object``).

    Args:
        head: what ``layerwise.fit(head=...)`` was given.
        required: the run is written to a workdir, so a head that cannot be recorded is refused
            (in memory, it is marked as not recorded: :func:`layerwise.config.recorded.record`).

    Raises:
        ConfigError: ``required`` and ``head`` cannot be serialised (``layerwise.config.recorded``).
    """
    if type(head) is AuxHead:
        values = (head.conv_layers, head.width, head.batchnorm, head.pooled_size, list(head.hidden_units),
                  float(head.dropout), head.pre_pool, head.max_features, head.pooling, head.zero_init, {})
        return dict(zip(AUX_FIELDS, values))  # final_aux_width: as given
    if not callable(head):
        raise ConfigError(f"head must be an AuxHead or a function (feature_shape, num_classes) -> keras.Model, "
                          f"got {head!r}")
    return {"aux_head_object": recorded.record(head, "head", required=required)}


def config_heads(config: TrainConfig) -> tuple[AuxHead | HeadBuilder, AuxHead | HeadBuilder]:
    """The auxiliary head of every stage but the last, and the last stage's (``final_aux_width``):
    the recorded head builder (``aux_head_object``) or the AuxHead of the ``aux_*`` fields.

    Raises:
        ConfigError: a recorded head builder that cannot be rebuilt (its class is not imported).
    """
    heads = config.heads
    if heads.object:
        builder = recorded.rebuild(heads.object, "head")
        return builder, builder
    head = AuxHead(k=heads.conv_layers + 1, width=heads.width, batchnorm=heads.batchnorm,
                   pooled_size=heads.pooled_size, hidden_units=tuple(heads.hidden_units), dropout=heads.dropout,
                   pre_pool=heads.pre_pool, max_features=heads.max_features, pooling=heads.pooling,
                   zero_init=heads.zero_init)
    return head, dataclasses.replace(head, width=heads.final_width) if heads.final_width else head


def refit_head(config: TrainConfig) -> AuxHead:
    """The head ``--refit_head_epochs`` trains on the finished network."""
    refit = config.refit
    return AuxHead(k=refit.conv_layers + 1, width=refit.width, batchnorm=config.heads.batchnorm,
                   pre_pool=config.heads.pre_pool)


def build_aux_head(
    feature_shape: Sequence[int],
    num_classes: int,
    spec: AuxHead = AuxHead(),
    name: str = "aux_head",
) -> keras.Model:
    """Builds the k-hidden-layer auxiliary classifier for features of ``feature_shape``.

    Args:
        feature_shape: ``(H, W, C)`` of the stage output the head reads.
        num_classes: number of output logits.
        spec: the head's shape (``spec.conv_layers`` = k - 1).
        name: model name.

    Returns:
        A functional model ``features -> logits`` (float32 logits, also under mixed precision).

    Example:
        >>> head = build_aux_head((7, 7, 256), 10, AuxHead(k=2, width=128))
        >>> head.output.shape
        (None, 10)
    """
    spec.validate().check_fits(feature_shape, name)
    features = features_input(feature_shape, f"{name}_features")
    x = features
    if len(feature_shape) == 3:
        if spec.conv_layers and spec.pre_pool > 1:
            x = keras.layers.AdaptiveAveragePooling2D(spec.conv_size(feature_shape), name=f"{name}_pre_pool")(x)
        for i in range(spec.conv_layers):
            x = keras.layers.Conv2D(
                spec.width, 3, padding="same", use_bias=not spec.batchnorm, name=f"{name}_conv{i}"
            )(x)
            if spec.batchnorm:
                x = FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
        pooled = spec.pooled_shape(*x.shape[1:4])
        if spec.pooling == "padded" and pooled != tuple(x.shape[1:3]):
            x = padded_average_pool(x, spec.decoder_blocks(*x.shape[1:4])[1], name=f"{name}_avg")
        elif not spec.max_features or pooled != tuple(x.shape[1:3]):
            x = average_pool_to(pooled, x.shape[1:3], name=f"{name}_avg")(x)
    elif spec.conv_layers:
        raise ConfigError(f"conv auxiliary layers need (H, W, C) features, got shape {tuple(feature_shape)}")
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    for i, units in enumerate(spec.hidden_units):
        if spec.dropout:
            x = keras.layers.Dropout(spec.dropout, name=f"{name}_dropout{i}")(x)
        x = keras.layers.Dense(units, activation="relu", name=f"{name}_fc{i}")(x)
    if spec.dropout and spec.hidden_units:
        x = keras.layers.Dropout(spec.dropout, name=f"{name}_dropout_out")(x)
    if spec.batchnorm and spec.conv_layers:
        x = FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn_out")(x)
    initializer = "zeros" if spec.zero_init else "glorot_uniform"
    logits = keras.layers.Dense(num_classes, dtype="float32", kernel_initializer=initializer, name=f"{name}_logits")(x)
    return keras.Model(features, logits, name=name)
