"""The paper's layerwise CNN (Belilovsky, Eickenberg & Oyallon, ICML 2019, Sec. 3).

Stage j computes ``x_{j+1} = ReLU(BN(W_j P_j x_j))``: an optional invertible 2x2 downsampling
P (space-to-depth), a 3x3 convolution W_j of width M (doubled at every downsampling stage), an
optional BatchNorm and a ReLU. With ``downsample_input`` P is also applied to the image before
stage 0 (the paper's ImageNet models: 3x224x224 -> 12x112x112) without doubling the width.
``downsampling="maxpool"`` replaces P by 2x2 max-pooling, as DGL's buffer experiment
(``ds_conv`` with ``ds_type='maxpool'`` in ``buffer_experiments/model_greedy.py`` of ``eugenium/DGL``).
"""

from __future__ import annotations

from typing import Sequence

import keras

from layerwise.nn.downsampling import SpaceToDepth
from layerwise.errors import ConfigError
from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import FusedBatchNormalization, features_input
from layerwise.nn.network import StagedNetwork
from models.zoo import MODELS

DOWNSAMPLINGS = ("space_to_depth", "maxpool")


def stage_widths(num_stages: int, width: int, downsample_at: Sequence[int]) -> list[int]:
    """Width of every stage: M, doubled at each downsampling stage."""
    widths, current = [], width
    for j in range(num_stages):
        if j in downsample_at:
            current *= 2
        widths.append(current)
    return widths


def _validate(input_shape, num_stages, width, downsample_at, downsample_input) -> None:
    if len(input_shape) != 3:
        raise ConfigError(f"layerwise_cnn needs (H, W, C) images, got shape {tuple(input_shape)}")
    if num_stages <= 0:
        raise ConfigError(f"num_stages must be positive, got {num_stages}")
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    bad = [j for j in downsample_at if not 1 <= j < num_stages]
    if bad:
        raise ConfigError(
            f"downsample_at={list(downsample_at)}: stages must be in 1..{num_stages - 1} "
            "(use downsample_input to downsample the image itself)"
        )
    if len(set(downsample_at)) != len(list(downsample_at)):
        raise ConfigError(f"downsample_at={list(downsample_at)} repeats a stage")
    factor = 2 ** (len(set(downsample_at)) + int(downsample_input))
    h, w = input_shape[0], input_shape[1]
    if h % factor or w % factor:
        n = len(set(downsample_at)) + int(downsample_input)
        raise ConfigError(
            f"{n} 2x2 downsamplings need an image size divisible by {factor}, got {h}x{w}; "
            "downsample fewer stages or resize the images"
        )


@MODELS.register("layerwise_cnn")
def build_layerwise_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    num_stages: int = 3,
    width: int = 64,
    downsample_at: Sequence[int] = (1, 2),
    batchnorm: bool = True,
    downsample_input: bool = False,
    downsampling: str = "space_to_depth",
) -> StagedNetwork:
    """Builds the paper's CNN as a list of ``num_stages`` stages.

    Args:
        input_shape: ``(H, W, C)``.
        num_classes: classes of the problem (the stages do not depend on it).
        num_stages: J in the paper.
        width: M, the width of stage 0; doubled at each downsampling stage.
        downsample_at: stages that start with the invertible downsampling P (1-based stage
            indices from 1 to J-1; the paper's CIFAR k=1 net uses (1, 3)).
        batchnorm: BatchNorm after each conv (the paper uses it for k > 1).
        downsample_input: apply P to the image before stage 0 (the paper's ImageNet nets).
        downsampling: P: ``space_to_depth`` (invertible, the paper's) or ``maxpool`` (2x2 max-pooling,
            DGL's buffer experiment).

    Returns:
        A :class:`StagedNetwork` whose stage j is ``[P] -> conv3x3 -> [BN] -> ReLU``.

    Example:
        >>> net = build_layerwise_cnn((28, 28, 1), 10, num_stages=3, width=64)
        >>> [net.output_shape(j) for j in range(3)]
        [(28, 28, 64), (14, 14, 128), (7, 7, 256)]
    """
    downsample_at = tuple(int(j) for j in downsample_at)
    _validate(input_shape, num_stages, width, downsample_at, downsample_input)
    if downsampling not in DOWNSAMPLINGS:
        raise ConfigError(f"downsampling must be one of {', '.join(DOWNSAMPLINGS)}, got {downsampling!r}")
    stages, shape = [], tuple(input_shape)
    for j, stage_width in enumerate(stage_widths(num_stages, width, downsample_at)):
        name = f"stage_{j:02d}"
        inputs = features_input(shape, f"{name}_in")
        x = inputs
        if j in downsample_at or (j == 0 and downsample_input):
            x = (SpaceToDepth(2, name=f"{name}_downsample") if downsampling == "space_to_depth"
                 else keras.layers.MaxPooling2D(2, name=f"{name}_maxpool"))(x)
        x = keras.layers.Conv2D(
            stage_width, 3, padding="same", use_bias=not batchnorm, name=f"{name}_conv"
        )(x)
        if batchnorm:
            x = FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        stage = keras.Model(inputs, x, name=name)
        stages.append(stage)
        shape = tuple(x.shape[1:])
    return StagedNetwork(
        "layerwise_cnn",
        input_shape,
        num_classes,
        stages,
        options=dict(
            num_stages=num_stages,
            width=width,
            downsample_at=list(downsample_at),
            batchnorm=batchnorm,
            downsample_input=downsample_input,
            downsampling=downsampling,
        ),
    )
