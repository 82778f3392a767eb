"""AlexNet (Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012), as a list of five conv stages plus its fc6-fc7-fc8 classifier.

This is the 2012 two-GPU network, not the single-column "one weird trick" variant: conv2, conv4
and conv5 are grouped convolutions (``groups=2``: each half of the filters sees only half of the
input maps, as when the halves lived on two GPUs), conv3 sees all maps.

Input size: the paper says 224, but ``(224 - 11) / 4 + 1 = 54.25`` is not integral; with 227
``(227 - 11) / 4 + 1 = 55`` is, and the rest follows exactly: 55 -> pool 27 -> pool 13 -> pool 6,
so fc6 reads 6 x 6 x 256 features. ``alexnet`` works on any image of at least 67 x 67 (the
smallest size that survives three overlapping poolings), and 227 gives the published network.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork
from models.blocks import chain_stages, check_image_shape, mlp_classifier
from models.zoo import MODELS, forward_signature

ALEXNET_WIDTHS = (96, 256, 384, 384, 256)

# Per conv block: kernel, stride, padding, grouped, LRN, max-pool after it, bias init (paper Sec. 5:
# bias 1 in conv2, conv4, conv5 "accelerates the early stages of learning"), 0 elsewhere.
_ALEXNET_BLOCKS = (
    dict(kernel=11, stride=4, padding="valid", grouped=False, lrn=True, pool=True, bias=0.0),
    dict(kernel=5, stride=1, padding="same", grouped=True, lrn=True, pool=True, bias=1.0),
    dict(kernel=3, stride=1, padding="same", grouped=False, lrn=False, pool=False, bias=0.0),
    dict(kernel=3, stride=1, padding="same", grouped=True, lrn=False, pool=False, bias=1.0),
    dict(kernel=3, stride=1, padding="same", grouped=True, lrn=False, pool=True, bias=1.0),
)
# The CIFAR variant only changes conv1: 5x5, stride 1, 'same' (32 -> 32 -> pool 15 -> 7 -> 3).
_CIFAR_CONV1 = dict(kernel=5, stride=1, padding="same")


@keras.saving.register_keras_serializable(package="layerwise")
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet's local response normalization across channels (Krizhevsky et al. 2012, Sec. 3.3).

    The paper normalizes activity a^i at channel i as
    ``b^i = a^i / (k + alpha * sum_{j = max(0, i - n/2)}^{min(N - 1, i + n/2)} (a^j)^2) ^ beta``
    with k = 2, n = 5, alpha = 1e-4, beta = 0.75. ``tf.nn.local_response_normalization`` computes
    ``input / (bias + alpha * sqr_sum) ** beta`` with ``sqr_sum`` over channels
    ``d - depth_radius .. d + depth_radius``: the same formula, so ``depth_radius = n // 2 = 2``,
    ``bias = k = 2`` and TF's ``alpha`` *is* the paper's alpha (1e-4). Neither divides alpha by n;
    Caffe's and PyTorch's ``LocalResponseNorm`` do, so their alpha is n = 5 times larger for the
    same layer. The normalization runs in float32 (also under mixed precision).

    Example:
        >>> LocalResponseNormalization()(tf.ones([1, 4, 4, 96])).shape
        TensorShape([1, 4, 4, 96])
    """

    def __init__(
        self,
        depth_radius: int = 2,
        bias: float = 2.0,
        alpha: float = 1e-4,
        beta: float = 0.75,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.depth_radius = int(depth_radius)
        self.bias = float(bias)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        normalized = tf.nn.local_response_normalization(
            tf.cast(inputs, tf.float32),
            depth_radius=self.depth_radius,
            bias=self.bias,
            alpha=self.alpha,
            beta=self.beta,
        )
        return tf.cast(normalized, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "depth_radius": self.depth_radius,
            "bias": self.bias,
            "alpha": self.alpha,
            "beta": self.beta,
        }


def _paper_init(bias: float) -> dict:
    """The paper's initialization: weights N(0, 0.01), biases ``bias``."""
    return dict(
        kernel_initializer=keras.initializers.RandomNormal(0.0, 0.01),
        bias_initializer=keras.initializers.Constant(bias),
    )


def _spatial_sizes(size: int, blocks: Sequence[dict]) -> list[int]:
    """Spatial size after each block (convs, then 3/2 'valid' max-pooling)."""
    sizes = []
    for spec in blocks:
        if spec["padding"] == "valid":
            size = (size - spec["kernel"]) // spec["stride"] + 1 if size >= spec["kernel"] else 0
        else:
            size = -(-size // spec["stride"])
        if spec["pool"]:
            size = (size - 3) // 2 + 1 if size >= 3 else 0
        sizes.append(size)
    return sizes


def _block_body(j: int, spec: dict, width: int, groups: int, lrn: bool):
    def body(x):
        name = f"conv{j + 1}"
        x = keras.layers.Conv2D(
            width,
            spec["kernel"],
            strides=spec["stride"],
            padding=spec["padding"],
            groups=groups if spec["grouped"] else 1,
            name=name,
            **_paper_init(spec["bias"]),
        )(x)
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
        if lrn and spec["lrn"]:
            x = LocalResponseNormalization(name=f"{name}_lrn")(x)
        if spec["pool"]:
            x = keras.layers.MaxPooling2D(3, strides=2, name=f"{name}_pool")(x)
        return x

    return body


def _checked_blocks(input_shape: tuple, conv_widths: tuple, groups: int, cifar: bool, name: str) -> list[dict]:
    """The five conv blocks' specs (conv1 the CIFAR one with ``cifar``), once the widths, the
    groups and the image size are checked (see :func:`build_alexnet`'s Raises)."""
    if len(conv_widths) != 5 or min(conv_widths) <= 0:
        raise ConfigError(f"{name} needs 5 positive conv widths, got {conv_widths}")
    if groups <= 0 or any(w % groups for w in conv_widths):
        raise ConfigError(
            f"{name}: every conv width must be divisible by groups={groups}, got {conv_widths}"
        )
    blocks = [dict(spec) for spec in _ALEXNET_BLOCKS]
    if cifar:
        blocks[0].update(_CIFAR_CONV1)
    sizes = [_spatial_sizes(s, blocks)[-1] for s in input_shape[:2]]
    if min(sizes) < 1:
        smallest = next(s for s in range(1, 1000) if _spatial_sizes(s, blocks)[-1] >= 1)
        raise ConfigError(
            f"{name}: a {input_shape[0]}x{input_shape[1]} image does not survive conv1 and three "
            f"3/2 poolings; use at least {smallest} pixels per side"
        )
    return blocks


def _final_head(head_units: tuple, dropout: float):
    """The ``final_head`` builder: fc6 -> ReLU -> dropout -> fc7 -> ReLU -> dropout -> fc8, every
    weight N(0, 0.01), the hidden biases 1."""

    def final_head(feature_shape: tuple, classes: int) -> keras.Model:
        init = _paper_init(1.0)
        return mlp_classifier(
            feature_shape,
            classes,
            head_units,
            dropout,
            kernel_initializer=init["kernel_initializer"],
            hidden_bias_initializer=init["bias_initializer"],
        )

    return final_head


def build_alexnet(input_shape: Sequence[int], num_classes: int, conv_widths: Sequence[int] = ALEXNET_WIDTHS,
                  head_units: Sequence[int] = (4096, 4096), dropout: float = 0.5, groups: int = 2, lrn: bool = True,
                  cifar: bool = False, name: str = "alexnet") -> StagedNetwork:
    """Builds AlexNet as five conv stages and its fc6-fc7-fc8 final head.

    Stage j is conv(j+1) -> ReLU [-> LRN] [-> max-pool 3/2]: LRN follows conv1 and conv2, the
    overlapping poolings follow conv1, conv2 and conv5. ``final_head`` is fc6 -> ReLU -> dropout
    -> fc7 -> ReLU -> dropout -> fc8 (logits; the softmax lives in the loss), whose layers are
    named ``final_head_fc0`` (fc6), ``final_head_fc1`` (fc7; its ReLU ``final_head_relu1`` gives
    the 4096-d fc7 features) and ``final_head_logits`` (fc8). Every weight is N(0, 0.01); biases
    are 1 in conv2, conv4, conv5, fc6, fc7 and 0 elsewhere.

    Args:
        input_shape: ``(H, W, C)``; 227 x 227 x 3 gives the published sizes (see module doc).
        num_classes: classes of the final head (1000 for ImageNet).
        conv_widths: filters of conv1..conv5 (96, 256, 384, 384, 256); all divisible by
            ``groups``.
        head_units: widths of fc6 and fc7 (4096, 4096).
        dropout: dropout rate after fc6 and fc7 (0.5).
        groups: groups of conv2, conv4 and conv5 (2 = the two-GPU split; 1 = all maps).
        lrn: apply local response normalization after conv1 and conv2.
        cifar: the CIFAR variant: conv1 is 5x5 with stride 1 and 'same' padding, so a 32 x 32
            image gives 32 -> 15 -> 7 -> 3 and fc6 reads 3 x 3 x 256 features.
        name: registry name recorded in the network.

    Returns:
        A :class:`StagedNetwork` with 5 stages; ``net.compose(head=net.final_head(
        net.output_shape(4), num_classes))`` is the complete AlexNet.

    Raises:
        ConfigError: wrong number of widths, widths not divisible by ``groups``, or an image too
            small for the three poolings.

    Example:
        >>> net = build_alexnet((227, 227, 3), 1000)
        >>> net.output_shape(4)
        (6, 6, 256)
    """
    input_shape = check_image_shape(input_shape, name)
    conv_widths = tuple(int(w) for w in conv_widths)
    head_units = tuple(int(u) for u in head_units)
    blocks = _checked_blocks(input_shape, conv_widths, groups, cifar, name)
    bodies = [
        _block_body(j, spec, width, groups, lrn)
        for j, (spec, width) in enumerate(zip(blocks, conv_widths))
    ]
    return StagedNetwork(
        name, input_shape, num_classes, chain_stages(input_shape, bodies, name),
        final_head=_final_head(head_units, dropout),
        options=dict(conv_widths=list(conv_widths), head_units=list(head_units), dropout=dropout, groups=groups,
                     lrn=lrn),
    )


@MODELS.register("alexnet")
def build_alexnet_imagenet(
    input_shape: Sequence[int], num_classes: int, **options
) -> StagedNetwork:
    """The 2012 ImageNet AlexNet (use 227 x 227 x 3 inputs); options as :func:`build_alexnet`."""
    return build_alexnet(input_shape, num_classes, cifar=False, name="alexnet", **options)


@MODELS.register("alexnet_cifar")
def build_alexnet_cifar(input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
    """AlexNet for 32 x 32 images: conv1 5x5/1 'same', the rest as the 2012 network.

    Options as :func:`build_alexnet`.
    """
    return build_alexnet(input_shape, num_classes, cifar=True, name="alexnet_cifar", **options)


for _builder in (build_alexnet_imagenet, build_alexnet_cifar):
    forward_signature(_builder, build_alexnet, ("cifar", "name"))
del _builder
