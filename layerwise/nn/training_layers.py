"""Layers that only a training graph holds: a gradient barrier and a softmax ``Dense``'s logits.

:class:`StopGradient` lets an auxiliary head learn on detached features (the stage below gets no
gradient from it); :class:`DenseLogits` gives a trained model's last ``Dense(..., activation="softmax")``
as logits, so the model's own classifier trains as a head with cross-entropy from logits. Both are
registered Keras layers (``keras.saving.register_keras_serializable``,
https://keras.io/guides/serialization_and_saving/#custom-objects); ``layerwise.nn.portable``
replaces them by standard Keras layers in every saved classifier.
"""

from __future__ import annotations

import keras

__all__ = ["DenseLogits", "StopGradient"]


@keras.saving.register_keras_serializable(package="layerwise")
class StopGradient(keras.layers.Layer):
    """Identity forward, no gradient backward: a head that learns on detached features."""

    def call(self, inputs):
        return keras.ops.stop_gradient(inputs)


@keras.saving.register_keras_serializable(package="layerwise")
class DenseLogits(keras.layers.Wrapper):
    """The logits of a ``Dense`` layer with a softmax activation: ``x @ kernel + bias``.

    Wraps the model's own layer (its variables are shared, not copied), so a classifier that ends
    in ``Dense(classes, activation="softmax")`` trains as a head with cross-entropy from logits,
    while the original model keeps giving its probabilities.
    """

    def call(self, inputs):
        outputs = keras.ops.matmul(inputs, self.layer.kernel)
        if self.layer.use_bias:
            outputs = keras.ops.add(outputs, self.layer.bias)
        return keras.ops.cast(outputs, "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.layer.units)
