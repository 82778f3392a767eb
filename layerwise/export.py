"""SavedModels for every stage, in the TF Serving layout.

``export/<servable>/<version>/saved_model.pb`` with integer versions that only grow: a re-export
writes version N+1 into a temporary directory and renames it, so a served version is never
overwritten or half-written. ``export/models.config`` lists every servable for
``tensorflow_model_server --model_config_file``.

Signatures (built with ``keras.export.ExportArchive``, see TF_NOTES):

- ``serving_default``: ``images`` uint8 ``[None, H, W, C]`` raw pixels; normalisation happens
  inside the graph. Returns ``probabilities`` (float32 ``[None, classes]``), ``classes``
  (int64 ``[None]``), ``top_k_scores`` / ``top_k_classes`` (``[None, k]``, k = min(5, classes)).
- ``serving_float``: the same outputs for float32 images already normalised by the caller.
"""

from __future__ import annotations

import os
import re
import shutil
from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.checkpoints import atomic_write_text

SIGNATURES = ("serving_default", "serving_float")


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

    @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="images")])
    def serve_uint8(images):
        return _outputs(probabilities((tf.cast(images, tf.float32) - mean_t) / std_t), k)

    @tf.function(input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name="images")])
    def serve_float(images):
        return _outputs(probabilities(images), k)

    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(SIGNATURES[0], serve_uint8)
    archive.add_endpoint(SIGNATURES[1], serve_float)

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
