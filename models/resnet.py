"""Residual networks and their plain counterparts (He, Zhang, Ren & Sun, "Deep Residual Learning
for Image Recognition", CVPR 2016), as stages.

A block computes ``y = ReLU(F(x) + shortcut(x))`` with BatchNorm after every conv and the ReLU
after the addition; a *plain* block is the same ``F`` without the addition (``y = ReLU(F(x))``),
so ``plainN`` has exactly the layers of ``resnetN`` minus the shortcuts. Shortcut options (Sec.
4.1): ``"A"`` identity, zero-padded channels and stride by subsampling where the shape changes
(no parameters, so a ResNet with option A has as many parameters as its plain net); ``"B"``
projections (1x1 conv + BN) only where the shape changes; ``"C"`` projections everywhere.

Families (a new depth is one entry of a variant table):

- ImageNet (:data:`IMAGENET_VARIANTS`): ``resnet18/34`` (basic blocks: 3x3, 3x3) and
  ``resnet50/101/152`` (bottlenecks: 1x1, 3x3, 1x1 with 4x expansion); stem 7x7/2 conv + 3/2
  max-pooling; widths 64-128-256-512; default shortcut ``"B"`` (the paper's choice for 50+).
- CIFAR (:data:`CIFAR_DEPTHS`, 6n + 2 layers): ``resnet20/32/44/56/110`` (and ``resnet8``, not in
  the paper, for tiny runs); 3x3 stem, three
  groups of n basic blocks with 16-32-64 filters; default shortcut ``"A"`` (the paper's).
- Plain counterparts of all of them: ``plain18 ... plain152``, ``plain8 ... plain110``.

Stages: stage 0 is the stem; then, with ``stage_granularity="block"`` (the default), one stage
per residual block, or with ``"group"`` one stage per group of blocks (conv2_x ... conv5_x).
The final head is global average pooling + a float32 fully connected layer.

Layer names, for the layer-response analysis (Sec. 4.2: std of each layer's output after BN,
before the addition/ReLU): block ``conv{g}_{b}`` (the paper's names, e.g. ``conv3_1``) has convs
``conv3_1_conv{i}`` each followed by BatchNorm ``conv3_1_bn{i}`` (i = 1, 2 for basic blocks; 1, 2,
3 for bottlenecks, whose 3x3 conv is i = 2), projections ``conv3_1_proj_conv``/``_proj_bn``, the
addition ``conv3_1_add`` and the block output ``conv3_1_out``.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import FusedBatchNormalization, features_input
from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork
from models.blocks import chain_stages, check_image_shape
from models.zoo import MODELS, forward_signature

BASIC, BOTTLENECK = "basic", "bottleneck"
# depth -> (block kind, blocks per group); widths 64-128-256-512
IMAGENET_VARIANTS: dict[int, tuple[str, tuple[int, ...]]] = {
    18: (BASIC, (2, 2, 2, 2)),
    34: (BASIC, (3, 4, 6, 3)),
    50: (BOTTLENECK, (3, 4, 6, 3)),
    101: (BOTTLENECK, (3, 4, 23, 3)),
    152: (BOTTLENECK, (3, 8, 36, 3)),
}
# the registered 6n + 2 layer CIFAR nets (n basic blocks per group; widths 16-32-64); 8 is not in
# the paper: the smallest member, for MNIST-sized CPU runs and tests
CIFAR_DEPTHS: tuple[int, ...] = (8, 20, 32, 44, 56, 110)
SHORTCUTS = ("A", "B", "C")
STAGE_GRANULARITIES = ("block", "group")


@keras.saving.register_keras_serializable(package="layerwise")
class ZeroPadShortcut(keras.layers.Layer):
    """Option-A shortcut: subsample by ``stride``, then append zero channels up to ``channels``.

    He et al. (CVPR 2016), Sec. 3.3: "the shortcut still performs identity mapping, with extra
    zero entries padded for increasing dimensions ... performed with a stride of 2". It has no
    parameters. The new channels are appended after the existing ones.

    Example:
        >>> ZeroPadShortcut(2, 32)(tf.ones([1, 8, 8, 16])).shape
        TensorShape([1, 4, 4, 32])
    """

    def __init__(self, stride: int = 1, channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.stride = int(stride)
        self.channels = None if channels is None else int(channels)

    def call(self, inputs):
        x = inputs[:, :: self.stride, :: self.stride, :] if self.stride > 1 else inputs
        extra = (self.channels or 0) - x.shape[-1]
        if extra > 0:
            x = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])
        return x

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.stride
        return (
            b,
            None if h is None else -(-h // s),
            None if w is None else -(-w // s),
            max(c, self.channels or 0),
        )

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "channels": self.channels}


def _conv_bn(x, filters: int, kernel: int, stride: int, conv_name: str, bn_name: str):
    x = keras.layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=conv_name,
    )(x)
    return FusedBatchNormalization(momentum=BN_MOMENTUM, name=bn_name)(x)


def _shortcut(x, channels: int, stride: int, option: str, name: str):
    changes_shape = stride != 1 or x.shape[-1] != channels
    if option == "C" or (option == "B" and changes_shape):
        return _conv_bn(x, channels, 1, stride, f"{name}_proj_conv", f"{name}_proj_bn")
    if changes_shape:
        return ZeroPadShortcut(stride, channels, name=f"{name}_pad")(x)
    return x


def residual_block(
    x,
    kind: str,
    filters: int,
    stride: int,
    name: str,
    residual: bool = True,
    shortcut: str = "B",
    stride_in_3x3: bool = False,
):
    """One basic or bottleneck block; ``residual=False`` gives its plain counterpart.

    Args:
        x: input tensor.
        kind: ``"basic"`` (3x3, 3x3; ``filters`` outputs) or ``"bottleneck"`` (1x1, 3x3, 1x1;
            ``4 * filters`` outputs).
        filters: width of the block's 3x3 convs.
        stride: stride of the block (2 in the first block of a downsampling group).
        name: layer-name prefix (``conv3_1``).
        residual: add the shortcut (False: plain block).
        shortcut: ``"A"``, ``"B"`` or ``"C"``.
        stride_in_3x3: bottleneck only: stride on the 3x3 conv (torchvision's "v1.5") instead
            of the first 1x1 conv (the paper's Caffe models).

    Returns:
        The block output, after the final ReLU.
    """
    if kind == BASIC:
        y = _conv_bn(x, filters, 3, stride, f"{name}_conv1", f"{name}_bn1")
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        y = _conv_bn(y, filters, 3, 1, f"{name}_conv2", f"{name}_bn2")
        channels = filters
    else:
        s1, s3 = (1, stride) if stride_in_3x3 else (stride, 1)
        y = _conv_bn(x, filters, 1, s1, f"{name}_conv1", f"{name}_bn1")
        y = keras.layers.ReLU(name=f"{name}_relu1")(y)
        y = _conv_bn(y, filters, 3, s3, f"{name}_conv2", f"{name}_bn2")
        y = keras.layers.ReLU(name=f"{name}_relu2")(y)
        channels = 4 * filters
        y = _conv_bn(y, channels, 1, 1, f"{name}_conv3", f"{name}_bn3")
    if residual:
        skip = _shortcut(x, channels, stride, shortcut, name)
        y = keras.layers.Add(name=f"{name}_add")([y, skip])
    return keras.layers.ReLU(name=f"{name}_out")(y)


def _imagenet_stem(width: int):
    def body(x):
        x = _conv_bn(x, width, 7, 2, "stem_conv", "stem_bn")
        x = keras.layers.ReLU(name="stem_relu")(x)
        return keras.layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)

    return body


def _cifar_stem(width: int):
    def body(x):
        x = _conv_bn(x, width, 3, 1, "stem_conv", "stem_bn")
        return keras.layers.ReLU(name="stem_relu")(x)

    return body


def _blocks_body(blocks: Sequence[dict], **common):
    def body(x):
        for spec in blocks:
            x = residual_block(x, **spec, **common)
        return x

    return body


def _global_pool_head(feature_shape: tuple, num_classes: int) -> keras.Model:
    """ResNet's classifier: global average pooling + fully connected logits (float32)."""
    features = features_input(feature_shape, "final_head_features")
    x = keras.layers.GlobalAveragePooling2D(name="final_head_avg")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="final_head_logits")(x)
    return keras.Model(features, logits, name="final_head")


def _build(
    name: str,
    input_shape: Sequence[int],
    num_classes: int,
    stem,
    kind: str,
    blocks_per_group: Sequence[int],
    widths: Sequence[int],
    residual: bool,
    shortcut: str,
    stage_granularity: str,
    stride_in_3x3: bool,
    options: dict,
) -> StagedNetwork:
    input_shape = check_image_shape(input_shape, name)
    shortcut = str(shortcut).upper()
    if shortcut not in SHORTCUTS:
        raise ConfigError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if stage_granularity not in STAGE_GRANULARITIES:
        raise ConfigError(
            f"stage_granularity must be one of {STAGE_GRANULARITIES}, got {stage_granularity!r}"
        )
    groups = [
        [
            dict(
                kind=kind,
                filters=width,
                stride=2 if g > 0 and b == 0 else 1,
                name=f"conv{g + 2}_{b + 1}",
            )
            for b in range(n)
        ]
        for g, (n, width) in enumerate(zip(blocks_per_group, widths))
    ]
    units = groups if stage_granularity == "group" else [[blk] for grp in groups for blk in grp]
    common = dict(residual=residual, shortcut=shortcut, stride_in_3x3=stride_in_3x3)
    bodies = [stem] + [_blocks_body(unit, **common) for unit in units]
    stages = chain_stages(input_shape, bodies, name)
    return StagedNetwork(
        name,
        input_shape,
        num_classes,
        stages,
        final_head=_global_pool_head,
        options=dict(options, shortcut=shortcut, stage_granularity=stage_granularity),
    )


def build_imagenet_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int,
    residual: bool = True,
    shortcut: str = "B",
    width: int = 64,
    stage_granularity: str = "block",
    stride_in_3x3: bool = False,
) -> StagedNetwork:
    """Builds the ImageNet ResNet-``depth`` (or its plain net) as a list of stages.

    Args:
        input_shape: ``(H, W, C)`` (224 x 224 x 3 in the paper; any size works, 32 x 32 ends at
            1 x 1).
        num_classes: classes of the final head.
        depth: a key of :data:`IMAGENET_VARIANTS` (18, 34, 50, 101, 152).
        residual: ``False`` builds the plain counterpart (no shortcuts).
        shortcut: ``"A"``, ``"B"`` (default) or ``"C"``; ignored by plain nets.
        width: stem and first-group width; groups use width x (1, 2, 4, 8).
        stage_granularity: ``"block"`` (default): stem + one stage per block; ``"group"``:
            stem + one stage per group.
        stride_in_3x3: bottlenecks stride on their 3x3 conv (torchvision v1.5), not the 1x1.

    Returns:
        A :class:`StagedNetwork` whose ``final_head`` is global average pooling + FC.

    Raises:
        ConfigError: unknown depth, shortcut or granularity, or a non-positive width.

    Example:
        >>> net = build_imagenet_resnet((224, 224, 3), 1000, depth=18)
        >>> net.num_stages, net.output_shape(8)
        (9, (7, 7, 512))
    """
    name = f"{'resnet' if residual else 'plain'}{depth}"
    if depth not in IMAGENET_VARIANTS:
        raise ConfigError(
            f"unknown ImageNet ResNet depth {depth}; choose one of {sorted(IMAGENET_VARIANTS)}"
        )
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    kind, blocks_per_group = IMAGENET_VARIANTS[depth]
    options = dict(width=width, stride_in_3x3=stride_in_3x3)
    widths = [width * 2**g for g in range(len(blocks_per_group))]
    return _build(
        name,
        input_shape,
        num_classes,
        _imagenet_stem(width),
        kind,
        blocks_per_group,
        widths,
        residual,
        shortcut,
        stage_granularity,
        stride_in_3x3,
        options,
    )


def build_cifar_resnet(
    input_shape: Sequence[int],
    num_classes: int,
    depth: int,
    residual: bool = True,
    shortcut: str = "A",
    width: int = 16,
    stage_granularity: str = "block",
) -> StagedNetwork:
    """Builds the 6n + 2 layer CIFAR ResNet-``depth`` (or its plain net) as a list of stages.

    Args:
        input_shape: ``(H, W, C)`` (32 x 32 x 3 in the paper).
        num_classes: classes of the final head.
        depth: ``6n + 2`` (registered: :data:`CIFAR_DEPTHS`, i.e. 20, 32, 44, 56, 110).
        residual: ``False`` builds the plain counterpart (no shortcuts).
        shortcut: ``"A"`` (default, the paper's CIFAR choice), ``"B"`` or ``"C"``.
        width: filters of the stem and first group; groups use width x (1, 2, 4).
        stage_granularity: ``"block"`` (default) or ``"group"``; the stem is always stage 0.

    Returns:
        A :class:`StagedNetwork` whose ``final_head`` is global average pooling + FC.

    Raises:
        ConfigError: a depth that is not 6n + 2, a bad shortcut/granularity or width.

    Example:
        >>> net = build_cifar_resnet((32, 32, 3), 10, depth=20)
        >>> net.num_stages, net.output_shape(9)
        (10, (8, 8, 64))
    """
    name = f"{'resnet' if residual else 'plain'}{depth}"
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"a CIFAR ResNet has 6n + 2 layers (20, 32, 44, 56, 110), got {depth}")
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    n = (depth - 2) // 6
    options = dict(width=width)
    return _build(
        name,
        input_shape,
        num_classes,
        _cifar_stem(width),
        BASIC,
        (n, n, n),
        (width, 2 * width, 4 * width),
        residual,
        shortcut,
        stage_granularity,
        False,
        options,
    )


def _register(key: str, build, depth: int, residual: bool) -> None:
    def builder(input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
        return build(input_shape, num_classes, depth=depth, residual=residual, **options)

    builder.__name__ = f"build_{key}"
    builder.__doc__ = f"{key}; options as :func:`{build.__name__}`."
    forward_signature(builder, build, ("depth", "residual"))
    MODELS.register(key, builder)


for _depth in IMAGENET_VARIANTS:
    _register(f"resnet{_depth}", build_imagenet_resnet, _depth, True)
    _register(f"plain{_depth}", build_imagenet_resnet, _depth, False)
for _depth in CIFAR_DEPTHS:
    _register(f"resnet{_depth}", build_cifar_resnet, _depth, True)
    _register(f"plain{_depth}", build_cifar_resnet, _depth, False)
