"""InfoPro's training-only parts: the reconstruction decoder, the contrastive projection head and
their loss terms (Wang et al., "Revisiting Locally Supervised Learning: an Alternative to End-to-end
Training", ICLR 2021).

Each follows the authors' code, ``networks/auxiliary_nets.py`` of ``blackfeather-wang/InfoPro-Pytorch``
(``Decoder``, the ``1c2f`` auxiliary net, ``SupConLoss``); ``docs/local_learning.md`` lists what was
compared with it and how. The loss that combines them is
:class:`layerwise.training.local_losses.InfoPro`.

Example:
    >>> net = decoder((8, 8, 16), (32, 32, 3), width=12, name="stage0")
    >>> per_example = reconstruction_loss(net(features), images)
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import features_input

INFOPRO_BN_EPSILON = 1e-5  # PyTorch's BatchNorm2d default, in InfoPro's decoder and projection head


def reconstruction_target(images: tf.Tensor, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> tf.Tensor:
    """What InfoPro's decoder reconstructs: the input image with the normalisation undone.

    With the pipeline's per-channel ``mean`` and ``std`` on the 0-1 pixel scale
    (``layerwise.data.DataSource.unit_statistics``): ``images * std + mean``, the authors'
    ``InfoProResNet._image_restore`` (``networks/resnet.py`` of ``blackfeather-wang/InfoPro-Pytorch``),
    not clipped, as theirs. Without them (the pixels' scale unknown, e.g. a user's float images):
    each image and channel min-max stretched to [0, 1], which equals the de-normalised image only
    where a channel spans exactly [0, 1].
    """
    images = tf.cast(images, tf.float32)
    if mean is not None and std is not None:
        return images * tf.constant(std, tf.float32) + tf.constant(mean, tf.float32)
    axes = list(range(1, images.shape.rank - 1))
    low = tf.reduce_min(images, axis=axes, keepdims=True)
    high = tf.reduce_max(images, axis=axes, keepdims=True)
    return tf.math.divide_no_nan(images - low, high - low)


def reconstruction_loss(logits: tf.Tensor, images: tf.Tensor, mean: Sequence[float] | None = None,
                        std: Sequence[float] | None = None) -> tf.Tensor:
    """Per-example binary cross-entropy between ``sigmoid(logits)`` and :func:`reconstruction_target`
    (InfoPro's ``BCELoss(decoder(features), _image_restore(image))``), averaged over the pixels;
    ``mean``, ``std`` as there."""
    target = reconstruction_target(images, mean, std)
    per_pixel = tf.nn.sigmoid_cross_entropy_with_logits(labels=target, logits=tf.cast(logits, tf.float32))
    return tf.reduce_mean(tf.reshape(per_pixel, [tf.shape(per_pixel)[0], -1]), axis=1)


def supervised_contrastive_loss(embeddings: tf.Tensor, labels: tf.Tensor, temperature: float = 0.07) -> tf.Tensor:
    """Per-example supervised contrastive loss (Khosla et al. 2020; InfoPro's ``SupConLoss``).

    Every example is an anchor; its positives are the other examples of its class in the batch:
    ``-mean_{p in P(i)} log(exp(z_i.z_p / T) / sum_{a != i} exp(z_i.z_a / T))`` on L2-normalised
    embeddings. An anchor without a positive contributes 0 (the reference code divides by zero there).
    """
    z = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    logits = tf.matmul(z, z, transpose_b=True) / temperature
    logits -= tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    others = 1.0 - tf.eye(tf.shape(z)[0])
    labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
    positives = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32) * others
    log_prob = logits - tf.math.log(tf.reduce_sum(tf.exp(logits) * others, axis=1, keepdims=True))
    count = tf.reduce_sum(positives, axis=1)
    return -tf.reduce_sum(positives * log_prob, axis=1) / tf.maximum(count, 1.0)


# ----------------------------------------------------------------------------- the layers
@keras.saving.register_keras_serializable(package="layerwise")
class AlignCornersResize(keras.layers.Layer):
    """Bilinear resizing of ``(H, W, C)`` features to ``size`` with the corner pixels aligned:
    PyTorch's ``F.interpolate(mode="bilinear", align_corners=True)``, which InfoPro's decoder uses
    (``Decoder.forward`` in ``networks/auxiliary_nets.py`` of ``blackfeather-wang/InfoPro-Pytorch``).
    Output pixel ``i`` samples input position ``i * (H - 1) / (size - 1)``; Keras's ``Resizing``
    samples half-pixel centres instead. Computed by ``tf.compat.v1.image.resize_bilinear``.
    """

    def __init__(self, size, **kwargs):
        super().__init__(**kwargs)
        self.size = (int(size[0]), int(size[1]))

    def call(self, inputs):
        out = tf.compat.v1.image.resize_bilinear(inputs, self.size, align_corners=True)
        return tf.cast(out, self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "size": list(self.size)}


def decoder(feature_shape: Sequence[int], image_shape: Sequence[int], width: int, name: str) -> keras.Model:
    """InfoPro's decoder: features resized (bilinear, corners aligned: :class:`AlignCornersResize`)
    to the image, 3x3 conv of ``width`` + BN (epsilon 1e-5) + ReLU, 3x3 conv with a bias to the
    image's channels; outputs logits (the loss applies the sigmoid). As their ``Decoder``
    (``networks/auxiliary_nets.py`` of ``blackfeather-wang/InfoPro-Pytorch``); its first conv's
    bias is left out here, which the BatchNorm after it cancels."""
    features = features_input(feature_shape, f"{name}_features")
    height, wide, channels = (int(d) for d in image_shape)
    x = features
    if len(feature_shape) != 3:  # flat features: a linear map to a coarse image
        x = keras.layers.Dense(height * wide * width, name=f"{name}_decoder_dense")(x)
        x = keras.layers.Reshape((height, wide, width), name=f"{name}_decoder_reshape")(x)
    elif tuple(feature_shape[:2]) != (height, wide):
        x = AlignCornersResize((height, wide), name=f"{name}_decoder_resize")(x)
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_decoder_conv0")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=INFOPRO_BN_EPSILON, name=f"{name}_decoder_bn0")(x)
    x = keras.layers.ReLU(name=f"{name}_decoder_relu0")(x)
    x = keras.layers.Conv2D(channels, 3, padding="same", dtype="float32", name=f"{name}_decoder_conv1")(x)
    return keras.Model(features, x, name=f"{name}_decoder")


def projection_head(feature_shape: Sequence[int], dim: int, name: str) -> keras.Model:
    """InfoPro's ``1c2f`` auxiliary net for the contrastive term: a 3x3 conv to
    ``max(C, min(2C, 64))`` channels (stride 2 where it widens) + BN (epsilon 1e-5) + ReLU, global
    average, FC 128, ReLU, FC ``dim`` (``networks/auxiliary_nets.py`` of InfoPro-Pytorch). The
    strided conv pads one pixel on every side, as their ``Conv2d(padding=1)``: Keras's
    ``padding="same"`` would pad only the bottom and right and shift the grid by one pixel."""
    features = features_input(feature_shape, f"{name}_features")
    x = features
    if len(feature_shape) == 3:
        channels = int(feature_shape[-1])
        width = max(channels, min(2 * channels, 64))
        x = keras.layers.ZeroPadding2D(1, name=f"{name}_projection_pad")(x)
        x = keras.layers.Conv2D(width, 3, strides=2 if width > channels else 1, padding="valid", use_bias=False,
                                name=f"{name}_projection_conv")(x)
        x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=INFOPRO_BN_EPSILON,
                                            name=f"{name}_projection_bn")(x)
        x = keras.layers.ReLU(name=f"{name}_projection_relu")(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_projection_avg")(x)
    x = keras.layers.Dense(128, activation="relu", name=f"{name}_projection_fc0")(x)
    x = keras.layers.Dense(dim, dtype="float32", name=f"{name}_projection_fc1")(x)
    return keras.Model(features, x, name=f"{name}_projection")
