"""Faster kernels for two layers every stage problem runs: BatchNorm and the head's 2x2 average.

Profiling a stage-0 training step of the default network (3x3 conv to 64 channels at 28x28,
an auxiliary 3x3 conv to 128 channels, BatchNorm, ReLU, average to 2x2, linear) showed most of
its time outside the convolutions:

- ``keras.layers.BatchNormalization`` computes its batch moments and normalisation from
  elementwise ops (``Mean``, ``SquaredDifference``, ``Mul``, ``Sum``, ``Tile``, and ``Cast`` to
  float32 and back under mixed precision), each a pass over the activations forward and
  backward. :class:`FusedBatchNormalization` runs the training step through TensorFlow's fused
  kernel instead (``tf.compat.v1.nn.fused_batch_norm``, oneDNN's on CPUs and cuDNN's on GPUs,
  the kernels PyTorch's ``BatchNorm2d`` uses; Ioffe & Szegedy, ICML 2015). On the 2-core CPU
  it halved that step under ``mixed_bfloat16`` and cut it by a third in float32.
- ``keras.layers.AdaptiveAveragePooling2D`` averages with two ``AvgPool`` kernels whose
  gradients are as costly as a convolution's at 28x28. When the output size divides the input,
  adaptive averaging is a plain block mean; :class:`BlockAveragePooling2D` takes it with one
  reshape and one reduction, whose gradient is a broadcast.

Both give the same function as the Keras layers they replace (the same parameters, moving
statistics and inference path); float results differ in the last bits, as any change of kernel
does. See ``docs/performance.md`` for the measurements.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="layerwise")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` whose training step uses TensorFlow's fused kernel.

    Same weights, configuration, moving-statistics update (with the biased batch variance, as
    Keras does) and inference path as the Keras layer. Cases the fused kernel does not cover
    (inputs that are not NHWC images, masks, batch renormalisation, cross-replica
    ``synchronized`` statistics) run the Keras layer unchanged.

    Example:
        >>> bn = FusedBatchNormalization(momentum=0.9)
        >>> y = bn(tf.random.normal([8, 4, 4, 16]), training=True)
    """

    def call(self, inputs, training=None, mask=None):
        if not (training and self.trainable) or not self.fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, data_format="NHWC", is_training=True
        )
        # The kernel returns the Bessel-corrected variance; Keras tracks the biased one.
        count = tf.cast(tf.size(inputs) // channels, tf.float32)
        variance = tf.where(count > 1, unbiased_variance * (count - 1) / tf.maximum(count, 1), 0.0)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return tf.cast(outputs, self.compute_dtype)

    def fusable(self, inputs, mask) -> bool:
        """Whether the fused kernel computes exactly this layer's training step for ``inputs``."""
        axis = self.axis if isinstance(self.axis, int) else None
        return (
            mask is None
            and len(inputs.shape) == 4
            and axis in (-1, 3)
            and not self.renorm
            and not self.synchronized
            and self.epsilon >= 1.001e-5  # the kernel's floor (cuDNN's CUDNN_BN_MIN_EPSILON)
        )


@keras.saving.register_keras_serializable(package="layerwise")
class BlockAveragePooling2D(keras.layers.Layer):
    """Averages ``(H, W, C)`` features over an ``output_size`` grid of equal non-overlapping blocks.

    Equals ``keras.layers.AdaptiveAveragePooling2D(output_size)`` (PyTorch's
    ``AdaptiveAvgPool2d``) when ``output_size`` divides ``H`` and ``W``; faster to train (one
    reshape and one mean; the gradient is a broadcast). Use :func:`average_pool_to`, which
    falls back to the adaptive layer where the sizes do not divide.

    Example:
        >>> BlockAveragePooling2D(2)(tf.ones([1, 28, 28, 3])).shape
        TensorShape([1, 2, 2, 3])
    """

    def __init__(self, output_size: int, **kwargs):
        super().__init__(**kwargs)
        self.output_size = int(output_size)

    def call(self, inputs):
        height, width, channels = inputs.shape[1:]
        n = self.output_size
        blocks = keras.ops.reshape(inputs, (-1, n, height // n, n, width // n, channels))
        return keras.ops.mean(blocks, axis=(2, 4))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size, self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": self.output_size}


def average_pool_to(output_size: int, feature_shape, name: str) -> keras.layers.Layer:
    """A layer averaging ``feature_shape`` features to ``output_size x output_size``, adaptively.

    :class:`BlockAveragePooling2D` where ``output_size`` divides both sides, else
    ``keras.layers.AdaptiveAveragePooling2D`` (overlapping windows, PyTorch's semantics).
    """
    height, width = feature_shape[0], feature_shape[1]
    if height % output_size == 0 and width % output_size == 0:
        return BlockAveragePooling2D(output_size, name=name)
    return keras.layers.AdaptiveAveragePooling2D(output_size, name=name)
