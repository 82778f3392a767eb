"""Graph functions that combine the heads of a layerwise network: ensemble and early exit.

Both run inside exported SavedModels (``layerwise.serving.servables``) and are plain TensorFlow, so the
same code is what the tests compare against the Keras model.

The cascade computes stage by stage and only for the examples still in play: after stage j the
examples whose highest probability reached their threshold are written to the output with
``tf.tensor_scatter_nd_update`` and dropped with ``tf.boolean_mask`` before stage j+1. Deeper
stages therefore cost nothing for examples that left early (the point of a cascade: on
``mnist5k`` most examples leave at stage 0 at threshold 0.9, see docs/serving.md). Computing all
stages and selecting afterwards would be simpler but always pays for the full network. Stages
run in inference mode, so an example's output does not depend on which others share its batch.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.nn.network import primary


def _probabilities(head: keras.Model, features) -> tf.Tensor:
    return tf.nn.softmax(tf.cast(head(primary(features), training=False), tf.float32))


def ensemble_graph_probabilities(stages: Sequence[keras.Model], heads: Sequence[keras.Model], images) -> tf.Tensor:
    """sum_j 2^j p_j / sum_j 2^j over the heads' probabilities (``layerwise.training.problems.ensemble_probabilities``)."""
    x, total = images, 0.0
    norm = float(sum(2.0**j for j in range(len(heads))))
    for j, head in enumerate(heads):
        x = stages[j](x, training=False)
        total = total + (2.0**j / norm) * _probabilities(head, x)
    return total


def _stage_and_head(stage: keras.Model, head: keras.Model, x):
    """(stage features, head probabilities); skipped via ``tf.cond`` when no example is left.

    Besides saving the work, the skip is needed: BatchNormalization's inference kernel fails on
    an empty batch ("Incompatible shapes: [C] vs. [0,H,W,C]") on CPU.
    """

    def run():
        features = stage(x, training=False)
        return features, _probabilities(head, features)

    def empty():
        features = tf.nest.map_structure(lambda t: tf.zeros([0, *t.shape[1:]], t.dtype), stage.output)
        return features, tf.zeros([0, head.output.shape[-1]], tf.float32)

    return tf.cond(tf.shape(tf.nest.flatten(x)[0])[0] > 0, run, empty)


def cascade_probabilities(
    stages: Sequence[keras.Model], heads: Sequence[keras.Model], images, thresholds
) -> tuple[tf.Tensor, tf.Tensor]:
    """Early-exit predictions.

    Args:
        stages: the network's stages (at least ``len(heads)``).
        heads: the trained head of stages ``0..len(heads)-1``.
        images: normalised images ``[N, H, W, C]``.
        thresholds: float32 ``[N]``; example i leaves at the first stage whose highest
            probability is ``>= thresholds[i]``; the last stage answers every example left.

    Returns:
        ``(probabilities [N, classes] of each example's exit stage, exit_stage int32 [N])``.
    """
    last = len(heads) - 1
    n = tf.shape(images)[0]
    index = tf.range(n)
    thresholds = tf.cast(thresholds, tf.float32)
    x = images
    probs_out = exit_out = None
    for j, head in enumerate(heads):
        x, p = _stage_and_head(stages[j], head, x)
        if probs_out is None:
            probs_out = tf.zeros([n, tf.shape(p)[1]], tf.float32)
            exit_out = tf.fill([n], tf.constant(last, tf.int32))
        if j == last:
            done = tf.ones(tf.shape(p)[:1], tf.bool)
        else:
            done = tf.reduce_max(p, axis=-1) >= thresholds
        rows = tf.expand_dims(tf.boolean_mask(index, done), -1)
        probs_out = tf.tensor_scatter_nd_update(probs_out, rows, tf.boolean_mask(p, done))
        exit_out = tf.tensor_scatter_nd_update(exit_out, rows, tf.fill(tf.shape(rows)[:1], tf.constant(j, tf.int32)))
        if j < last:
            keep = tf.logical_not(done)
            index = tf.boolean_mask(index, keep)
            thresholds = tf.boolean_mask(thresholds, keep)
            x = tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), x)
    return probs_out, exit_out
