"""Faster kernels for what every stage problem runs: BatchNorm, the head's 2x2 average, stage inputs.

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
  ``AvgPool`` kernel whose window and stride are the block.
- Under mixed precision, stage and head models whose ``Input`` is ``float32`` cast their
  ``bfloat16`` features to ``float32`` and back at every boundary; :func:`features_input` makes
  their inputs in the compute dtype, and :class:`FusedBatchNormalization`'s inference path (the
  frozen prefix, evaluation) is the fused kernel too.

The layers compute the same functions as the Keras layers they replace (the same parameters and
moving statistics); float results differ in the last bits, as any change of kernel does. See
``docs/performance.md`` for the measurements.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="layerwise")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization`` computed by TensorFlow's fused kernel.

    Same weights, configuration, moving-statistics update (with the biased batch variance, as
    Keras does) and inference function (the moving statistics) as the Keras layer; both training
    and inference run the fused kernel. Cases the fused kernel does not cover
    (inputs that are not NHWC images, masks, batch renormalisation, cross-replica
    ``synchronized`` statistics) run the Keras layer unchanged.

    Example:
        >>> bn = FusedBatchNormalization(momentum=0.9)
        >>> y = bn(tf.random.normal([8, 4, 4, 16]), training=True)
    """

    def call(self, inputs, training=None, mask=None):
        if not self.fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        if not (training and self.trainable):  # inference: the moving statistics, in one kernel
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32), epsilon=self.epsilon,
                data_format="NHWC", is_training=False,
            )
            return tf.cast(outputs, self.compute_dtype)
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


def features_input(shape, name: str, dtype=None):
    """``keras.Input`` for the features a stage or head receives, in the global dtype policy's
    compute dtype (``bfloat16`` under ``mixed_bfloat16``) unless ``dtype`` is given.

    A functional Keras model converts every input to its ``Input``'s dtype. A ``float32`` input
    between two ``bfloat16`` layers casts the features to ``float32`` and back again in the first
    layer, forward and backward: at the default network's 28x28x64 features, about a tenth of
    a mixed-precision training step. Under ``float32`` this is ``keras.Input(shape)``.
    """
    dtype = dtype or keras.config.dtype_policy().compute_dtype
    return keras.Input(shape=tuple(shape), dtype=dtype, name=name)


def _pair(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


@keras.saving.register_keras_serializable(package="layerwise")
class BlockAveragePooling2D(keras.layers.Layer):
    """Averages ``(H, W, C)`` features over an ``output_size`` grid of equal non-overlapping blocks.

    Equals ``keras.layers.AdaptiveAveragePooling2D(output_size)`` (PyTorch's
    ``AdaptiveAvgPool2d``) when ``output_size`` (an int or ``(h, w)``) divides ``H`` and ``W``;
    faster to train (one ``AvgPool`` kernel whose window is the block; no float32 round trip
    under mixed precision, as ``keras.ops.mean`` makes). Use
    :func:`average_pool_to`, which falls back to the adaptive layer where the sizes do not divide.

    Example:
        >>> BlockAveragePooling2D(2)(tf.ones([1, 28, 28, 3])).shape
        TensorShape([1, 2, 2, 3])
    """

    def __init__(self, output_size, **kwargs):
        super().__init__(**kwargs)
        self.output_size = _pair(output_size)

    def call(self, inputs):
        height, width = inputs.shape[1:3]
        block = (height // self.output_size[0], width // self.output_size[1])
        return keras.ops.average_pool(inputs, block, strides=block, padding="valid")

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.output_size, input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_size": list(self.output_size)}


def average_pool_to(output_size, feature_shape, name: str) -> keras.layers.Layer:
    """A layer averaging ``feature_shape`` features to ``output_size`` (an int or ``(h, w)``),
    adaptively: :class:`BlockAveragePooling2D` where it divides both sides, else
    ``keras.layers.AdaptiveAveragePooling2D`` (overlapping windows, PyTorch's semantics).
    """
    h, w = _pair(output_size)
    if feature_shape[0] % h == 0 and feature_shape[1] % w == 0:
        return BlockAveragePooling2D((h, w), name=name)
    return keras.layers.AdaptiveAveragePooling2D((h, w), name=name)


def padded_average_pool(x, block: tuple[int, int], name: str):
    """PyTorch's ``AvgPool2d(block, padding=pad)`` (stride = block, ``count_include_pad=True``,
    ``ceil_mode=False``) on ``(H, W, C)`` features, with Nøkland & Eidnes' padding
    ``pad = block * (ceil(H / block) - floor(H / block)) // 2`` per axis (``train.py`` of
    ``anokland/local-loss``, ``LocalLossBlockConv.__init__``): the zero padding counts in every mean
    and the rows and columns past the last whole window are left out. Output
    ``ceil(H / block) x ceil(W / block)``.

    Built from ``keras.layers.ZeroPadding2D`` and ``keras.layers.AveragePooling2D`` (``"valid"``:
    each window's sum over its full size, padding included).
    """
    height, width = x.shape[1:3]
    pads = [k * (-(-size // k) - size // k) // 2 for size, k in zip((height, width), block)]
    if any(pads):
        x = keras.layers.ZeroPadding2D(((pads[0], pads[0]), (pads[1], pads[1])), name=f"{name}_pad")(x)
    return keras.layers.AveragePooling2D(tuple(block), strides=tuple(block), padding="valid", name=name)(x)
