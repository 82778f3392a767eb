"""Invertible downsampling (the paper's operator P) and spatial pooling helpers.

Belilovsky et al. (ICML 2019), Sec. 3: P is the invertible 2x2 downsampling of Dinh et al. /
Jacobsen et al.: every 2x2 spatial block becomes 4 channels, so a (H, W, C) map becomes
(H/2, W/2, 4C) and no information is lost. ``tf.nn.space_to_depth(x, 2)`` matches the
reference ordering; ``tf.nn.depth_to_space`` inverts it.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="layerwise")
class SpaceToDepth(keras.layers.Layer):
    """Invertible downsampling P: (B, H, W, C) -> (B, H/b, W/b, b*b*C).

    Example:
        >>> SpaceToDepth(2)(tf.zeros([1, 8, 8, 3])).shape
        TensorShape([1, 4, 4, 12])
    """

    def __init__(self, block_size: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.block_size = block_size

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def compute_output_shape(self, input_shape):
        b, h, w, c = input_shape
        s = self.block_size
        return (b, None if h is None else h // s, None if w is None else w // s, c * s * s)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def depth_to_space(x: tf.Tensor, block_size: int = 2) -> tf.Tensor:
    """The inverse of :class:`SpaceToDepth`."""
    return tf.nn.depth_to_space(x, block_size)
