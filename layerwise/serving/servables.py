"""SavedModels for every stage, in the TF Serving layout.

``export/<servable>/<version>/saved_model.pb`` with integer versions that only grow: a re-export
writes version N+1 into a temporary directory and renames it, so a served version is never
overwritten or half-written. ``export/models.config`` lists every servable for
``tensorflow_model_server --model_config_file`` (``layerwise.serving.models_config``); its
``base_path``s are absolute, or below ``serving_root`` (e.g. ``/models``, where a container mounts
the export directory). Each export records the label it gives its version
(``layerwise.serving.versions``): ``stable`` moves only when asked, to a complete version.

Every stage classifier is also saved as ``<version>/model.keras`` (the Keras model from normalised
images to logits, without the serving graph's normalisation), beside ``saved_model.pb`` (TF
Serving ignores files it does not load); it is made of standard Keras layers where ours only add
speed (``layerwise.nn.portable``), so ``keras.saving.load_model`` opens it with Keras alone
(a zoo layer with no Keras equivalent needs ``import models`` first). On a workdir that is not
local (``gs://...``), a version is written to a local temporary directory and copied, file by file,
``saved_model.pb`` last.

Signatures (built with ``keras.export.ExportArchive``, which keeps named inputs and outputs and
the uint8 input type; ``tf.saved_model.save`` of a Keras 3 model would lose them):

- ``serving_default``: ``images`` uint8 ``[None, H, W, C]`` raw pixels; normalisation happens
  inside the graph. Returns ``probabilities`` (float32 ``[None, classes]``), ``classes``
  (int64 ``[None]``), ``top_k_scores`` / ``top_k_classes`` (``[None, k]``, k = min(5, classes)).
- ``serving_float``: the same outputs for float32 images already normalised by the caller.

A uint8 signature is offered only where uint8 pixels mean something to the network: the run's data
were raw pixels it normalised (the registered datasets: ``mean``/``std`` of the training split), or
uint8 images (a user's uint8 arrays or pipeline: mean 0, std 1, a plain cast). A run of
``layerwise.fit`` on float images (arrays or a pipeline) trained on a scale the toolkit does not
know, so its exports are exported with ``uint8=False``: ``serving_default`` (and a cascade's
``serving_threshold``) then take float32 images on the training scale, exactly like
``serving_float``; nothing casts pixels to a scale the network never saw
(``DataSource.uint8_pixels``, recorded with the run in ``network.json``).

Every signature checks its input inside the graph, because TF Serving feeds a request's tensor to
the graph without comparing it with the signature (and ``tf.saved_model.load`` signatures do not
either): ``tf.ensure_shape`` fails a batch of the wrong rank, size or channels with an
``InvalidArgumentError`` naming the expected shape (without it, other sizes gave confident
answers and a rank-3 tensor aborted the whole server process in a convolution kernel);
``serving_float`` rejects NaN and infinite pixels (``tf.debugging.check_numerics``); a cascade
rejects thresholds outside (0, 1] or of another length than the batch. An empty batch returns
empty outputs (BatchNormalization's CPU kernel fails on one, so no stage runs on it). One
malformed request gets an error answer; the server keeps serving.

Two more servables combine the stages of a layerwise run (``layerwise.export.export_run``
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

import json
import os
import shutil
import tempfile
import warnings
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.errors import StorageError
import layerwise.files as files
from layerwise.serving.cascade import cascade_probabilities, ensemble_graph_probabilities
from layerwise.serving.versions import KERAS_FILE, STABLE_LABEL, VERSION_INFO, record_label, versions
from layerwise.nn.network import primary
from layerwise.nn.portable import standard_layers

SIGNATURES = ("serving_default", "serving_float")
CASCADE_SIGNATURES = SIGNATURES + ("serving_threshold", "serving_float_threshold")
DEFAULT_CASCADE_THRESHOLD = 0.9


def checked(images: tf.Tensor, image_shape: Sequence[int], finite: bool = False) -> tf.Tensor:
    """``images`` after the checks a server does not do: rank, size and channels
    (``InvalidArgumentError`` naming the expected shape) and, for float inputs, finiteness."""
    images = tf.ensure_shape(images, (None, *image_shape), name="check_image_shape")
    if finite:
        images = tf.debugging.check_numerics(
            images, "serving_float takes finite normalised pixels; the batch holds NaN or infinite values"
        )
    return images


def checked_thresholds(thresholds: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """The cascade's per-example thresholds, checked: one per image, each in (0, 1]."""
    thresholds = tf.ensure_shape(thresholds, (None,), name="check_threshold_shape")
    checks = [
        tf.debugging.assert_equal(tf.shape(thresholds)[0], tf.shape(images)[0],
                                  message="threshold needs one value per image"),
        tf.debugging.assert_greater(thresholds, 0.0, message="thresholds must be in (0, 1]"),
        tf.debugging.assert_less_equal(thresholds, 1.0, message="thresholds must be in (0, 1]"),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(thresholds)


def unless_empty(images: tf.Tensor, probabilities: Callable[[tf.Tensor], tf.Tensor], num_classes: int) -> tf.Tensor:
    """``probabilities(images)``, or a ``[0, num_classes]`` result for an empty batch."""
    return tf.cond(
        tf.shape(images)[0] > 0,
        lambda: probabilities(images),
        lambda: tf.zeros([0, num_classes], tf.float32),
    )


def _outputs(probabilities: tf.Tensor, k: int) -> dict[str, tf.Tensor]:
    top = tf.math.top_k(probabilities, k=k)
    return {
        "probabilities": probabilities,
        "classes": tf.argmax(probabilities, axis=-1),
        "top_k_scores": top.values,
        "top_k_classes": tf.cast(top.indices, tf.int64),
    }


def export_classifier(
    classifier: keras.Model,
    servable_dir: str,
    mean: Sequence[float],
    std: Sequence[float],
    label: str = STABLE_LABEL,
    uint8: bool = True,
) -> str:
    """Exports ``classifier`` (normalised images -> logits) as the next version of a servable.

    Args:
        classifier: functional model from normalised images to logits.
        servable_dir: ``export/<servable name>``.
        mean, std: per-channel statistics used to normalise raw pixels inside the graph.
        label: the version label the new version gets (:func:`write_next_version`).
        uint8: ``serving_default`` takes uint8 pixels (normalised with ``mean``, ``std``);
            ``False``: float32 images on the training scale, as ``serving_float`` (see the
            module doc: data that never were uint8).

    Returns:
        The path of the new version directory (with ``model.keras``, the classifier itself).
    """
    num_classes = int(classifier.outputs[0].shape[-1])

    def probabilities(x):
        return unless_empty(x, lambda x: tf.nn.softmax(tf.cast(classifier(x, training=False), tf.float32)),
                            num_classes)

    archive = _image_archive(classifier, probabilities, tuple(classifier.inputs[0].shape[1:]), num_classes,
                             mean, std, uint8)
    return write_next_version(archive, servable_dir, keras_model=classifier, label=label)


def _image_archive(model: keras.Model, probabilities: Callable, image_shape: tuple, num_classes: int,
                   mean, std, uint8: bool) -> keras.export.ExportArchive:
    """An archive tracking ``model`` with the two :data:`SIGNATURES` of ``probabilities``
    (normalised images -> probabilities): ``serving_default`` on uint8 pixels normalised with
    ``mean`` and ``std`` (float32 images where ``uint8`` is false), ``serving_float`` on float32."""
    k = min(5, num_classes)
    mean_t, std_t = tf.constant(np.asarray(mean, np.float32)), tf.constant(np.asarray(std, np.float32))

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *image_shape), tf.uint8, name="images")])
    def serve_uint8(images):
        images = checked(images, image_shape)
        return _outputs(probabilities((tf.cast(images, tf.float32) - mean_t) / std_t), k)

    @tf.function(autograph=False, input_signature=[tf.TensorSpec((None, *image_shape), tf.float32, name="images")])
    def serve_float(images):
        return _outputs(probabilities(checked(images, image_shape, finite=True)), k)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SIGNATURES[0], serve_uint8 if uint8 else serve_float)
    archive.add_endpoint(SIGNATURES[1], serve_float)
    return archive


def write_next_version(archive: keras.export.ExportArchive, servable_dir: str, info: dict[str, Any] | None = None,
                       keras_model: keras.Model | None = None, label: str = STABLE_LABEL) -> str:
    """Writes ``archive`` as version N+1 of ``servable_dir`` (temp dir + rename); returns its path.

    Version N is never touched, and a crash leaves no half-written version behind. ``info``
    (what the version covers, e.g. ``{"complete": False}``; ``{"complete": True}`` by default)
    goes to ``assets.extra``, which also marks the version as written by layerwise;
    ``keras_model`` is saved beside the SavedModel as ``model.keras``. The version is then
    recorded with ``label`` (``layerwise.serving.versions.record_label``: a partial version is
    ``unfinished`` whatever ``label`` says).

    Raises:
        StorageError: the version could not be written (full disk, permissions); nothing of it
            is left behind.
    """
    existing = versions(servable_dir)
    version = (existing[-1] + 1) if existing else 1
    final = files.join(servable_dir, str(version))
    local = files.is_local(servable_dir)
    tmp = files.temporary_name(os.path.join(servable_dir, f".{version}")) if local else tempfile.mkdtemp(".export")
    try:
        if local:
            os.makedirs(servable_dir, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
        archive.write_out(tmp, verbose=False)
        if keras_model is not None:
            save_keras(keras_model, os.path.join(tmp, KERAS_FILE))
        os.makedirs(os.path.join(tmp, os.path.dirname(VERSION_INFO)), exist_ok=True)
        with open(os.path.join(tmp, VERSION_INFO), "w", encoding="utf-8") as f:
            json.dump({"complete": True} if info is None else info, f)
        if local:
            os.replace(tmp, final)
        else:
            copy_tree(tmp, final)
    except (OSError, tf.errors.OpError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else (getattr(e, "message", "") or str(e))
        raise StorageError(
            f"could not write {final} ({reason.splitlines()[0][:200]}); free disk space or fix permissions, then "
            "export again: the versions already there are intact"
        ) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record_label(servable_dir, version, label)
    return final


def save_keras(model: keras.Model, path: str) -> None:
    """Saves ``model`` as a ``.keras`` file of standard Keras layers where ours only add speed
    (:func:`~layerwise.nn.portable.standard_layers`), so that it loads with Keras alone; a
    model Keras cannot serialise (a custom layer without ``get_config``) is exported without it,
    with a warning, not refused."""
    try:
        standard_layers(model).save(path)
    except (TypeError, NotImplementedError, ValueError) as e:
        if os.path.exists(path):
            os.remove(path)
        warnings.warn(f"{model.name} is exported without {KERAS_FILE}: Keras cannot serialise it ({e})"[:400])


def copy_tree(source: str, target: str) -> None:
    """Copies the local directory ``source`` to ``target`` on any file system, ``saved_model.pb``
    last (a server that polls ``target`` sees no SavedModel before its variables are there)."""
    found = sorted((os.path.relpath(os.path.join(d, f), source) for d, _, fs in os.walk(source) for f in fs),
                   key=lambda name: name == "saved_model.pb")
    for name in found:
        destination = files.join(target, *name.split(os.sep))
        files.makedirs(os.path.dirname(destination))
        files.gfile.copy(os.path.join(source, name), destination, overwrite=True)


def _all_heads_model(network, heads) -> keras.Model:
    """Image -> [logits of every head]: one Keras model that owns every variable to export."""
    images = network.image_input()
    x, outputs = images, []
    for j, head in enumerate(heads):
        x = network.stages[j](x)
        outputs.append(head(primary(x)))
    return keras.Model(images, outputs, name=f"{network.name}_all_heads")


def export_ensemble(network, heads: Sequence[keras.Model], servable_dir: str, mean, std,
                    info: dict[str, Any] | None = None, label: str = STABLE_LABEL, uint8: bool = True) -> str:
    """Exports the 2^j-weighted probability ensemble of ``heads`` as the next version.

    Args:
        network: the ``StagedNetwork`` whose first ``len(heads)`` stages are trained.
        heads: the trained head of each stage, in order.
        servable_dir, mean, std, uint8: as in :func:`export_classifier`.
        info: what the version covers (:func:`write_next_version`).
        label: the version label the new version gets, if complete (:func:`write_next_version`).
    """
    def probabilities(x):
        return unless_empty(x, lambda x: ensemble_graph_probabilities(network.stages, heads, x), network.num_classes)

    archive = _image_archive(_all_heads_model(network, heads), probabilities, tuple(network.input_shape),
                             network.num_classes, mean, std, uint8)
    return write_next_version(archive, servable_dir, info, label=label)


def export_cascade(
    network,
    heads: Sequence[keras.Model],
    servable_dir: str,
    mean,
    std,
    threshold: float = DEFAULT_CASCADE_THRESHOLD,
    info: dict[str, Any] | None = None,
    label: str = STABLE_LABEL,
    uint8: bool = True,
) -> str:
    """Exports the early-exit cascade over ``heads`` as the next version of ``servable_dir``.

    Args:
        threshold: default exit threshold of ``serving_default`` / ``serving_float``.
        uint8: ``False``: ``serving_default`` and ``serving_threshold`` take float32 images, as
            their float counterparts (:func:`export_classifier`).
        Others: as in :func:`export_ensemble`.
    """
    archive = keras.export.ExportArchive()
    archive.track(_all_heads_model(network, heads))
    for name, fn in zip(CASCADE_SIGNATURES, _cascade_functions(network, heads, mean, std, threshold, uint8)):
        archive.add_endpoint(name, fn)
    return write_next_version(archive, servable_dir, info, label=label)


def _cascade_functions(network, heads: Sequence[keras.Model], mean, std, threshold: float, uint8: bool) -> tuple:
    """The cascade's serving functions, in the order of ``CASCADE_SIGNATURES``."""
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

    uint8_images = tf.TensorSpec((None, *shape), tf.uint8, name="images")
    float_images = tf.TensorSpec((None, *shape), tf.float32, name="images")
    thresholds = tf.TensorSpec((None,), tf.float32, name="threshold")

    @tf.function(autograph=False, input_signature=[uint8_images])
    def serve_uint8(images):
        images = checked(images, shape)
        return outputs(normalise(images), default_thresholds(images))

    @tf.function(autograph=False, input_signature=[float_images])
    def serve_float(images):
        images = checked(images, shape, finite=True)
        return outputs(images, default_thresholds(images))

    @tf.function(autograph=False, input_signature=[uint8_images, thresholds])
    def serve_uint8_threshold(images, threshold):
        images = checked(images, shape)
        return outputs(normalise(images), checked_thresholds(threshold, images))

    @tf.function(autograph=False, input_signature=[float_images, thresholds])
    def serve_float_threshold(images, threshold):
        images = checked(images, shape, finite=True)
        return outputs(images, checked_thresholds(threshold, images))

    if uint8:
        return serve_uint8, serve_float, serve_uint8_threshold, serve_float_threshold
    return serve_float, serve_float, serve_float_threshold, serve_float_threshold
