"""SavedModels for every stage, in the TF Serving layout.

``export/<servable>/<version>/saved_model.pb`` with integer versions that only grow: a re-export
writes version N+1 into a temporary directory and renames it, so a served version is never
overwritten or half-written. ``export/models.config`` lists every servable for
``tensorflow_model_server --model_config_file``.

Signatures (built with ``keras.export.ExportArchive``, which keeps named inputs and outputs and
the uint8 input type; ``tf.saved_model.save`` of a Keras 3 model would lose them):

- ``serving_default``: ``images`` uint8 ``[None, H, W, C]`` raw pixels; normalisation happens
  inside the graph. Returns ``probabilities`` (float32 ``[None, classes]``), ``classes``
  (int64 ``[None]``), ``top_k_scores`` / ``top_k_classes`` (``[None, k]``, k = min(5, classes)).
- ``serving_float``: the same outputs for float32 images already normalised by the caller.

Two more servables combine the stages of a layerwise run (``layerwise.run.exports.export_run``
writes all of them from a run directory):

- ``<model>_ensemble``: the paper's ensemble, sum_j 2^j p_j / sum_j 2^j over every stage's
  probabilities (as ``layerwise.training.problems.ensemble_probabilities``); the same two signatures.
- ``<model>_cascade``: early exit. Stages run in order; an example leaves at the first stage whose
  highest probability reaches its threshold (the last stage answers the rest). Extra output
  ``exit_stage`` (int32 ``[None]``). ``serving_default`` / ``serving_float`` use the threshold
  baked in at export time; ``serving_threshold`` (uint8) / ``serving_float_threshold`` take a
  second input ``threshold`` (float32 ``[None]``, one per example, so the REST row format works).
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.serving.cascade import cascade_probabilities, ensemble_graph_probabilities
from layerwise.run.checkpoints import atomic_write_text
from layerwise.training.network import primary

SIGNATURES = ("serving_default", "serving_float")
CASCADE_SIGNATURES = SIGNATURES + ("serving_threshold", "serving_float_threshold")
DEFAULT_CASCADE_THRESHOLD = 0.9


def _outputs(probabilities: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
    top = tf.math.top_k(probabilities, k=k)
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1),
        "top_k_scores": top.values,
        "top_k_classes": tf.cast(top.indices, tf.int64),
    }


def versions(servable_dir: str) -> list[int]:
    """Integer versions present under ``servable_dir`` (ascending)."""
    if not os.path.isdir(servable_dir):
        return []
    return sorted(int(d) for d in os.listdir(servable_dir) if re.fullmatch(r"\d+", d))


def export_classifier(
    classifier: keras.Model,
    servable_dir: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> str:
    """Exports ``classifier`` (normalised images -> logits) as the next version of a servable.

    Args:
        classifier: functional model from normalised images to logits.
        servable_dir: ``export/<servable name>``.
        mean, std: per-channel statistics used to normalise raw pixels inside the graph.

    Returns:
        The path of the new version directory.
    """
    image_shape = tuple(classifier.inputs[0].shape[1:])
    num_classes = int(classifier.outputs[0].shape[-1])
    k = min(5, num_classes)
    mean_t = tf.constant(np.asarray(mean, np.float32))
    std_t = tf.constant(np.asarray(std, np.float32))

    def probabilities(x):
        return tf.nn.softmax(tf.cast(classifier(x, training=False), tf.float32))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="images")])
    def serve_uint8(images):
        return _outputs(probabilities((tf.cast(images, tf.float32) - mean_t) / std_t), k)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name="images")])
    def serve_float(images):
        return _outputs(probabilities(images), k)

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(SIGNATURES[0], serve_uint8)
    archive.add_endpoint(SIGNATURES[1], serve_float)
    return write_next_version(archive, servable_dir)


def write_next_version(archive: keras.export.ExportArchive, servable_dir: str) -> str:
    """Writes ``archive`` as version N+1 of ``servable_dir`` (temp dir + rename); returns its path.

    Version N is never touched, and a crash leaves no half-written version behind.
    """
    existing = versions(servable_dir)
    version = (existing[-1] + 1) if existing else 1
    final = os.path.join(servable_dir, str(version))
    tmp = os.path.join(servable_dir, f".tmp-{version}-{os.getpid()}")
    os.makedirs(servable_dir, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        archive.write_out(tmp, verbose=False)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _all_heads_model(network, heads) -> keras.Model:
    """Image -> [logits of every head]: one Keras model that owns every variable to export."""
    images = network.image_input()
    x, outputs = images, []
    for j, head in enumerate(heads):
        x = network.stages[j](x)
        outputs.append(head(primary(x)))
    return keras.Model(images, outputs, name=f"{network.name}_all_heads")


def export_ensemble(network, heads: Sequence[keras.Model], servable_dir: str, mean, std) -> str:
    """Exports the 2^j-weighted probability ensemble of ``heads`` as the next version.

    Args:
        network: the ``StagedNetwork`` whose first ``len(heads)`` stages are trained.
        heads: the trained head of each stage, in order.
        servable_dir, mean, std: as in :func:`export_classifier`.
    """
    model = _all_heads_model(network, heads)
    k = min(5, network.num_classes)
    mean_t, std_t = tf.constant(np.asarray(mean, np.float32)), tf.constant(np.asarray(std, np.float32))
    shape = network.input_shape

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *shape), tf.uint8, name="images")])
    def serve_uint8(images):
        x = (tf.cast(images, tf.float32) - mean_t) / std_t
        return _outputs(ensemble_graph_probabilities(network.stages, heads, x), k)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="images")])
    def serve_float(images):
        return _outputs(ensemble_graph_probabilities(network.stages, heads, images), k)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURES[0], serve_uint8)
    archive.add_endpoint(SIGNATURES[1], serve_float)
    return write_next_version(archive, servable_dir)


def export_cascade(
    network,
    heads: Sequence[keras.Model],
    servable_dir: str,
    mean,
    std,
    threshold: float = DEFAULT_CASCADE_THRESHOLD,
) -> str:
    """Exports the early-exit cascade over ``heads`` as the next version of ``servable_dir``.

    Args:
        threshold: default exit threshold of ``serving_default`` / ``serving_float``.
        Others: as in :func:`export_ensemble`.
    """
    model = _all_heads_model(network, heads)
    k = min(5, network.num_classes)
    mean_t, std_t = tf.constant(np.asarray(mean, np.float32)), tf.constant(np.asarray(std, np.float32))
    shape = network.input_shape
    default = float(threshold)

    def outputs(x, thresholds):
        probs, exit_stage = cascade_probabilities(network.stages, heads, x, thresholds)
        return {**_outputs(probs, k), "exit_stage": exit_stage}

    def normalise(images):
        return (tf.cast(images, tf.float32) - mean_t) / std_t

    def default_thresholds(images):
        return tf.fill(tf.shape(images)[:1], tf.constant(default, tf.float32))

    uint8 = tf.TensorSpec((None, *shape), tf.uint8, name="images")
    float32 = tf.TensorSpec((None, *shape), tf.float32, name="images")
    thresholds = tf.TensorSpec((None,), tf.float32, name="threshold")

    @tf.function(autograph=False, input_signature=[uint8])
    def serve_uint8(images):
        return outputs(normalise(images), default_thresholds(images))

    @tf.function(autograph=False, input_signature=[float32])
    def serve_float(images):
        return outputs(images, default_thresholds(images))

    @tf.function(autograph=False, input_signature=[uint8, thresholds])
    def serve_uint8_threshold(images, threshold):
        return outputs(normalise(images), threshold)

    @tf.function(autograph=False, input_signature=[float32, thresholds])
    def serve_float_threshold(images, threshold):
        return outputs(images, threshold)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, fn in zip(CASCADE_SIGNATURES, (serve_uint8, serve_float, serve_uint8_threshold, serve_float_threshold)):
        archive.add_endpoint(name, fn)
    return write_next_version(archive, servable_dir)


def write_models_config(export_root: str, label: str = "stable") -> str:
    """Writes ``export_root/models.config`` listing every servable and its newest version.

    The newest version of each servable gets the version label ``label``.
    """
    entries = []
    for name in sorted(os.listdir(export_root)) if os.path.isdir(export_root) else []:
        path = os.path.join(export_root, name)
        found = versions(path)
        if not found:
            continue
        entries.append(
            "  config {\n"
            f"    name: \"{name}\"\n"
            f"    base_path: \"{os.path.abspath(path)}\"\n"
            "    model_platform: \"tensorflow\"\n"
            "    model_version_policy { all {} }\n"
            f"    version_labels {{ key: \"{label}\" value: {found[-1]} }}\n"
            "  }\n"
        )
    config_path = os.path.join(export_root, "models.config")
    atomic_write_text(config_path, "model_config_list {\n" + "".join(entries) + "}\n")
    return config_path
