"""Similarity matching: Nøkland & Eidnes, "Training Neural Networks with Local Error Signals"
(ICML 2019), ``similarity_matrix`` and the ``conv_loss`` of ``train.py`` in ``anokland/local-loss``.

A module's features and the one-hot labels each give a ``B x B`` similarity matrix of the batch;
``sim`` is their mean squared difference, taken on the features after a 3x3 conv
(:func:`similarity_head`). The losses that use it are ``Sim`` and ``PredSim`` of
``layerwise.training.local_losses``.

Example:
    >>> similarity_loss(features, labels, num_classes=10)
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.nn.layers import features_input

SIMILARITY = "similarity"  # the similarity conv's output in a training model's outputs


def similarity_matrix(x: tf.Tensor) -> tf.Tensor:
    """The ``(B, B)`` adjusted cosine similarity of the rows of ``x`` (Nøkland & Eidnes 2019).

    Conv features ``(B, H, W, C)`` with ``C > 3`` and ``H > 1`` are first reduced to the standard
    deviation of each channel over the positions (unbiased, as ``torch.std``); other shapes are
    flattened. Each row is centred and scaled to unit norm; the products are clipped to [-1, 1].
    """
    x = tf.cast(x, tf.float32)
    batch = tf.shape(x)[0]
    if x.shape.rank == 4 and x.shape[-1] > 3 and x.shape[1] > 1:
        z = tf.reshape(x, [batch, -1, x.shape[-1]])
        n = tf.cast(tf.shape(z)[1], tf.float32)  # not z.shape[1]: unknown where the batch size is
        centred = z - tf.reduce_mean(z, axis=1, keepdims=True)
        # the tiny constant keeps the gradient finite for a channel without variance
        x = tf.sqrt(tf.reduce_sum(tf.square(centred), axis=1) / (n - 1) + 1e-20)
    elif x.shape.rank != 2:
        x = tf.reshape(x, [batch, -1])
    xc = x - tf.reduce_mean(x, axis=1, keepdims=True)
    xn = xc / (1e-8 + tf.sqrt(tf.reduce_sum(tf.square(xc), axis=1, keepdims=True) + 1e-24))
    return tf.clip_by_value(tf.matmul(xn, xn, transpose_b=True), -1.0, 1.0)


def similarity_loss(features: tf.Tensor, labels: tf.Tensor, num_classes: int) -> tf.Tensor:
    """Nøkland & Eidnes' ``sim``: ``mean((S(features) - S(one_hot(labels)))^2)`` over the ``B x B``
    entries of one replica's batch (:func:`similarity_matrix`)."""
    target = similarity_matrix(tf.one_hot(tf.cast(labels, tf.int32), num_classes))
    return tf.reduce_mean(tf.square(similarity_matrix(features) - target))


def similarity_head(feature_shape: Sequence[int], name: str) -> keras.Model:
    """Nøkland & Eidnes' ``conv_loss``: a bias-free 3x3 conv keeping the width (a dense layer for
    flat features), whose output the similarity matrix is taken of."""
    features = features_input(feature_shape, f"{name}_features")
    width = int(feature_shape[-1])
    if len(feature_shape) == 3:
        out = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_sim_conv")(features)
    else:
        out = keras.layers.Dense(width, use_bias=False, name=f"{name}_sim_dense")(features)
    return keras.Model(features, {SIMILARITY: out}, name=name)
