"""VGG-11/13/16/19 with and without BatchNorm (Simonyan & Zisserman, ICLR 2015), as stages.

A depth is one entry of :data:`VGG_VARIANTS` (3x3 convs per block, five blocks of widths
64-128-256-512-512, each followed by a 2x2 max-pooling). The final head is VGG's classifier:
adaptive average pooling to 7x7 (an identity at 224 x 224; smaller maps are never up-sampled, so
32 x 32 images give 512 features), flatten, 4096 -> ReLU -> dropout -> 4096 -> ReLU -> dropout ->
classes, as in torchvision, whose parameter counts these models reproduce (the ``_bn`` variants
keep the conv biases, as torchvision does).

Stages. By default a stage is one conv block (conv ... conv, pool). Belilovsky et al. (ICML
2019, Sec. 4.2) train VGG-11 layerwise with one stage per conv layer and every max-pooling
folded into the *start* of the next stage, so that the stage right before a pooling still sees
the full-resolution map (8 trainable stages; the last pooling then opens the final head):
``build_model("vgg11", shape, classes, stage_granularity="conv", fold_pooling=True)``.
"""

from __future__ import annotations

from typing import Sequence

import keras

from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import FusedBatchNormalization
from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork
from models.blocks import chain_stages, check_image_shape, mlp_classifier
from models.zoo import MODELS, forward_signature

# depth -> number of 3x3 convs in each of the five blocks
VGG_VARIANTS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)
STAGE_GRANULARITIES = ("block", "conv")


def _conv_layers(x, convs: Sequence[tuple[int, int, int]], batchnorm: bool):
    for block, i, width in convs:
        prefix = f"block{block + 1}"
        x = keras.layers.Conv2D(width, 3, padding="same", name=f"{prefix}_conv{i + 1}")(x)
        if batchnorm:
            x = FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{prefix}_bn{i + 1}")(x)
        x = keras.layers.ReLU(name=f"{prefix}_relu{i + 1}")(x)
    return x


def _stage_body(convs, batchnorm: bool, pool_before: int | None, pool_after: int | None):
    """``[pool of block pool_before] -> convs -> [pool of block pool_after]``."""

    def body(x):
        if pool_before is not None:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{pool_before + 1}_pool")(x)
        x = _conv_layers(x, convs, batchnorm)
        if pool_after is not None:
            x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{pool_after + 1}_pool")(x)
        return x

    return body


def build_vgg(input_shape: Sequence[int], num_classes: int, depth: int, batchnorm: bool = False,
              widths: Sequence[int] = VGG_WIDTHS, head_units: Sequence[int] = (4096, 4096), dropout: float = 0.5,
              pooled_size: int | None = 7, stage_granularity: str = "block",
              fold_pooling: bool = False) -> StagedNetwork:
    """Builds VGG-``depth`` as a list of stages and its fully connected final head.

    Args:
        input_shape: ``(H, W, C)``, at least 32 x 32 (five 2x2 poolings); 224 is the paper's.
        num_classes: classes of the final head.
        depth: a key of :data:`VGG_VARIANTS` (11, 13, 16, 19).
        batchnorm: BatchNorm between every conv and its ReLU (the ``vggXX_bn`` models).
        widths: filters of the five conv blocks.
        head_units: widths of the final head's hidden layers (VGG: 4096, 4096).
        dropout: dropout after each hidden layer of the final head (0.5).
        pooled_size: the final head averages the last map adaptively to at most this size per
            side before flattening (torchvision: 7); ``None`` flattens the map as it is.
        stage_granularity: ``"block"`` (default): one stage per conv block; ``"conv"``: one stage
            per conv layer (VGG-11: 8 stages).
        fold_pooling: put each block's max-pooling at the start of the next stage instead of the
            end of its own; the last pooling opens the final head (Belilovsky et al. Sec. 4.2).

    Returns:
        A :class:`StagedNetwork`; ``net.compose(head=net.final_head(net.output_shape(J - 1),
        num_classes))`` is the complete VGG.

    Raises:
        ConfigError: unknown depth or granularity, wrong widths, or an image below 32 x 32.

    Example:
        >>> net = build_vgg((224, 224, 3), 1000, depth=11, stage_granularity="conv",
        ...                 fold_pooling=True)
        >>> net.num_stages, net.output_shape(7)
        (8, (14, 14, 512))
    """
    name = f"vgg{depth}{'_bn' if batchnorm else ''}"
    input_shape = check_image_shape(input_shape, name)
    widths = tuple(int(w) for w in widths)
    _check_options(name, input_shape, depth, widths, pooled_size, stage_granularity)
    head_units = tuple(int(u) for u in head_units)
    bodies = _stage_bodies(VGG_VARIANTS[depth], widths, batchnorm, stage_granularity, fold_pooling)
    return StagedNetwork(
        name,
        input_shape,
        num_classes,
        chain_stages(input_shape, bodies, name),
        final_head=_final_head(head_units, dropout, fold_pooling, pooled_size),
        options=dict(
            widths=list(widths),
            head_units=list(head_units),
            dropout=dropout,
            pooled_size=pooled_size,
            stage_granularity=stage_granularity,
            fold_pooling=fold_pooling,
        ),
    )


def _check_options(name: str, input_shape: tuple, depth: int, widths: tuple, pooled_size: int | None,
                   stage_granularity: str) -> None:
    """Raises the ConfigErrors :func:`build_vgg` documents."""
    if depth not in VGG_VARIANTS:
        raise ConfigError(f"unknown VGG depth {depth}; choose one of {sorted(VGG_VARIANTS)}")
    if stage_granularity not in STAGE_GRANULARITIES:
        raise ConfigError(
            f"stage_granularity must be one of {STAGE_GRANULARITIES}, got {stage_granularity!r}"
        )
    if len(widths) != 5 or min(widths) <= 0:
        raise ConfigError(f"{name} needs 5 positive block widths, got {widths}")
    if min(input_shape[:2]) < 32:
        raise ConfigError(
            f"{name} halves the image five times: it needs at least 32x32, got {input_shape[:2]}"
        )
    if pooled_size is not None and pooled_size <= 0:
        raise ConfigError(f"pooled_size must be positive or None, got {pooled_size}")


def _stage_bodies(layout: tuple, widths: tuple, batchnorm: bool, stage_granularity: str, fold_pooling: bool) -> list:
    """One body per stage: a conv block (``"block"``) or a conv (``"conv"``), each block's max-pooling
    at the end of its last stage, or at the start of the next block's first with ``fold_pooling``."""
    blocks = [[(b, i, widths[b]) for i in range(n)] for b, n in enumerate(layout)]
    if stage_granularity == "block":
        units = blocks
    else:
        units = [[conv] for block in blocks for conv in block]
    bodies = []
    for convs in units:
        first_block, first_i, _ = convs[0]
        last_block, last_i, _ = convs[-1]
        opens_block = first_i == 0 and first_block > 0
        closes_block = last_i == layout[last_block] - 1
        pool_before = first_block - 1 if fold_pooling and opens_block else None
        pool_after = last_block if not fold_pooling and closes_block else None
        bodies.append(_stage_body(convs, batchnorm, pool_before, pool_after))
    return bodies


def _final_head(head_units: tuple, dropout: float, fold_pooling: bool, pooled_size: int | None):
    """The ``final_head`` builder: the MLP classifier, opened by the last block's pooling with
    ``fold_pooling``."""

    def final_head(feature_shape: tuple, classes: int) -> keras.Model:
        return mlp_classifier(
            feature_shape,
            classes,
            head_units,
            dropout,
            pre_pool=2 if fold_pooling else None,
            pooled_size=pooled_size,
        )

    return final_head


def _register(depth: int, batchnorm: bool) -> None:
    key = f"vgg{depth}{'_bn' if batchnorm else ''}"

    def builder(input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
        return build_vgg(input_shape, num_classes, depth=depth, batchnorm=batchnorm, **options)

    builder.__name__ = f"build_{key}"
    builder.__doc__ = f"VGG-{depth}{' with BatchNorm' if batchnorm else ''}; see :func:`build_vgg`."
    forward_signature(builder, build_vgg, ("depth", "batchnorm"))
    MODELS.register(key, builder)


for _depth in VGG_VARIANTS:
    for _batchnorm in (False, True):
        _register(_depth, _batchnorm)
