"""Forward-pass FLOPs of a Keras model: its conv and dense layers, and what custom layers compute.

FLOPs = 2 x multiply-accumulates per example (the convention of most papers); Keras's own batch
norm, activations, pooling and additions are ignored (they are a few percent of a conv net's
cost). A layer neither Keras nor this package defines (a user's custom layer, a ``Lambda``) is
traced once for one example and costed by TensorFlow's graph cost model (the ``float_ops`` of
``tf.compat.v1.profiler``, https://www.tensorflow.org/api_docs/python/tf/compat/v1/profiler/profile),
and at least its output's size: a custom conv costs what it computes, and no layer that computes
something counts as free (``split_model`` balances stages by these numbers and merges cuts with
no cost between them).
Used for the per-stage report, for pruning's before/after comparison and for ``split_model``.
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf
from keras import tree

# the package under which this project registers its layers (``register_keras_serializable``):
# they, like Keras's own, are costed by their type (convs and dense layers; the rest is free)
PACKAGE = "layerwise"


def _layer_macs(layer: keras.layers.Layer) -> int:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        # (kh, kw, cin / groups, cout) or, depthwise, (kh, kw, cin, multiplier): one MAC per
        # kernel entry and output position
        kernel = layer.kernel.shape
        out = layer.output.shape  # (None, h, w, channels)
        return int(np.prod(out[1:3]) * np.prod(kernel))
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    return 0


def is_known(layer: keras.layers.Layer) -> bool:
    """Whether ``layer`` is costed by its type: a Keras layer other than ``Lambda``, or one this
    project registers (its package in ``keras.saving.get_registered_name``); the zoo's shortcuts,
    scalars and normalisations keep the cost the reports have always given them."""
    kind = type(layer)
    if keras.saving.get_registered_name(kind).startswith(f"{PACKAGE}>"):
        return True
    return kind.__module__.split(".")[0] == "keras" and not isinstance(layer, keras.layers.Lambda)


def _output_size(layer: keras.layers.Layer) -> int:
    """Elements per example of the layer's outputs (an unknown dimension counts 1)."""
    return sum(int(np.prod([d or 1 for d in t.shape[1:]])) for t in tree.flatten(layer.output))


def traced_flops(layer: keras.layers.Layer) -> int:
    """Forward FLOPs per example of a layer of any type, from its traced TensorFlow graph (one
    example, the shapes it was called on), and at least its output's size."""
    floor = _output_size(layer)
    try:
        specs = tree.map_structure(lambda t: tf.TensorSpec((1, *t.shape[1:]), t.dtype), layer.input)
        graph = tf.function(lambda inputs: layer(inputs)).get_concrete_function(specs).graph
        options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
                   .with_empty_output().build())
        logger, level = tf.get_logger(), tf.get_logger().level
        logger.setLevel(logging.ERROR)  # the profiler's v1 deprecation notice
        try:
            counted = tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops
        finally:
            logger.setLevel(level)
    except (TypeError, ValueError, tf.errors.OpError):  # a layer that cannot be traced alone: its output
        return floor
    return max(int(counted), floor)


def layer_flops(layer) -> int:
    """Forward FLOPs per example of one layer (a nested model counts all of its layers)."""
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    if not isinstance(layer, keras.layers.Layer):
        return 0
    return 2 * _layer_macs(layer) if is_known(layer) else traced_flops(layer)


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs per example of ``model`` (nested functional models included)."""
    return sum(layer_flops(layer) for layer in model.layers)
