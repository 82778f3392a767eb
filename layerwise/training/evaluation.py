"""Evaluation: a trained problem's probabilities and accuracies, and the papers' recipes.

:class:`Evaluator` gives a classifier's softmax probabilities on a split of the data (the
validation pass calls the Keras callbacks' test hooks, as ``keras.Model.fit``'s does), and a
finished problem's test evaluation (one centre crop, or ten crops).

AlexNet (Krizhevsky et al. 2012, Sec. 4.1) and ResNet (He et al. 2016, Sec. 3.4) test on ten
crops of each image: the four corners and the centre, and their horizontal mirrors, averaging
the ten softmax outputs. Their tables report top-1 and top-5 error.

Example:
    >>> probs = ten_crop_probabilities(classifier, images, crop_size=(24, 24))
    >>> top_k_error(probs, labels, k=5)
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from layerwise.config import TrainConfig
from layerwise.data.base import DataSource
from layerwise.errors import ConfigError
from layerwise.training.callbacks import RunCallbacks


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, -1) == labels))


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p[label]`` (probabilities clipped at 1e-7, as Keras's losses clip them)."""
    picked = probs[np.arange(len(labels)), np.asarray(labels, np.int64)]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest probabilities."""
    top = np.argsort(-probs, axis=-1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))


def top5_fields(probs: np.ndarray, ensemble: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``test_top5`` and ``ensemble_top5`` for problems with at least 100 classes (ImageNet)."""
    if probs.shape[-1] < 100:
        return {}
    return {"test_top5": top_k_accuracy(probs, labels), "ensemble_top5": top_k_accuracy(ensemble, labels)}


def ten_crops(images, crop_size: Sequence[int]) -> tf.Tensor:
    """``(N, H, W, C)`` -> ``(10, N, h, w, C)``: top-left, top-right, bottom-left, bottom-right,
    centre, then the horizontal mirrors of the same five.

    Raises:
        ConfigError: a crop larger than the images.
    """
    images = tf.convert_to_tensor(images)
    height, width = int(images.shape[1]), int(images.shape[2])
    h, w = (int(s) for s in crop_size)
    if not (0 < h <= height and 0 < w <= width):
        raise ConfigError(f"crop size {(h, w)} does not fit in {height}x{width} images")
    top, left = (height - h) // 2, (width - w) // 2
    corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w), (top, left)]
    crops = [images[:, y: y + h, x: x + w, :] for y, x in corners]
    crops += [tf.reverse(c, axis=[2]) for c in crops]
    return tf.stack(crops)


def ten_crop_probabilities(
    classifier: Callable,
    images,
    crop_size: Sequence[int],
    batch_size: int = 256,
    from_logits: bool = True,
) -> np.ndarray:
    """The softmax of ``classifier`` averaged over the ten crops of every image.

    Args:
        classifier: maps ``(n, h, w, C)`` normalised images to logits (or probabilities with
            ``from_logits=False``), e.g. a Keras model built for ``crop_size`` inputs.
        images: ``(N, H, W, C)`` normalised images, at least ``crop_size``.
        crop_size: ``(h, w)`` of the crops (the training crop size, 224 in the papers).
        batch_size: images per forward pass (each pass sees ``10 x`` as many crops).
        from_logits: apply the softmax to the classifier's outputs.

    Returns:
        ``(N, classes)`` averaged probabilities.
    """
    images = np.asarray(images, np.float32)
    out = []
    for start in range(0, len(images), batch_size):
        crops = ten_crops(images[start: start + batch_size], crop_size)
        n = crops.shape[1]
        flat = tf.reshape(crops, [-1, *crops.shape[2:]])
        outputs = tf.convert_to_tensor(classifier(flat, training=False) if _is_keras(classifier) else classifier(flat))
        probs = tf.nn.softmax(outputs, axis=-1) if from_logits else outputs
        out.append(tf.reduce_mean(tf.reshape(probs, [10, n, -1]), axis=0).numpy())
    return np.concatenate(out)


def _is_keras(fn) -> bool:
    import keras

    return isinstance(fn, keras.layers.Layer)


def top_k_error(probabilities, labels, k: int = 1) -> float:
    """The fraction of examples whose label is not among the ``k`` highest scores.

    Ties are broken in favour of the lower class index (``np.argsort``'s stable order), so a
    constant output is not counted as correct for every label.

    Raises:
        ConfigError: ``k`` outside ``1..classes`` or mismatched lengths.
    """
    scores = np.asarray(probabilities)
    labels = np.asarray(labels).reshape(-1)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ConfigError(f"need (N, classes) scores and N labels, got {scores.shape} and {labels.shape}")
    if not 1 <= k <= scores.shape[1]:
        raise ConfigError(f"k must be in 1..{scores.shape[1]}, got {k}")
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(1.0 - np.mean(np.any(top == labels[:, None], axis=1)))


class Evaluator:
    """A run's evaluation passes over ``data`` in batches of ``max(config.batch_size, 256)``.

    Args:
        data: the run's dataset.
        config: the run's configuration (``batch_size``, ``eval_crops``, ``crop_size``).
        callbacks: the run's Keras callbacks (their test hooks run during the validation pass).
    """

    def __init__(self, data: DataSource, config: TrainConfig, callbacks: RunCallbacks):
        self.data = data
        self.config = config
        self.callbacks = callbacks
        self.inputs = data  # what the passes read: ``inputs.eval_batches(split, batch_size)``

    @contextlib.contextmanager
    def reading(self, source):
        """Inside the block the passes read ``source.eval_batches(split, batch_size)`` instead of
        the data's images: a ``PrefixCache``'s features of the test and validation splits, for a
        ``predict`` of the stage and its head alone (``None``: the images, unchanged)."""
        previous, self.inputs = self.inputs, source or self.inputs
        try:
            yield
        finally:
            self.inputs = previous

    def probabilities(self, predict, split: str) -> np.ndarray:
        """``predict``'s probabilities on every example of ``split``, in the split's order."""
        batches = self.inputs.eval_batches(split, max(self.config.batch_size, 256))
        return np.concatenate([predict(x).numpy() for x, _ in batches])

    def validation_probabilities(self, predict) -> np.ndarray:
        """``predict``'s probabilities on the validation split, calling the callbacks' test hooks
        (``on_test_begin``, ``on_test_batch_begin`` / ``_end`` with the running ``loss`` and
        ``accuracy``, ``on_test_end``) as ``keras.Model.fit``'s validation pass does."""
        labels = self.data.labels("val")
        parts: list[np.ndarray] = []
        seen, loss_sum, correct = 0, 0.0, 0.0
        self.callbacks.test_begin()
        for batch, (x, _) in enumerate(self.inputs.eval_batches("val", max(self.config.batch_size, 256))):
            self.callbacks.test_batch_begin(batch)
            probs = predict(x).numpy()
            batch_labels = labels[seen:seen + len(probs)]
            seen += len(probs)
            loss_sum += cross_entropy(probs, batch_labels) * len(probs)
            correct += accuracy(probs, batch_labels) * len(probs)
            parts.append(probs)
            self.callbacks.test_batch_end(batch, {"loss": loss_sum / seen, "accuracy": correct / seen})
        self.callbacks.test_end({"loss": loss_sum / seen, "accuracy": correct / seen} if seen else {})
        return np.concatenate(parts)

    def test_evaluation(self, predict) -> tuple[np.ndarray, dict[str, Any]]:
        """A finished problem's test probabilities, and the record fields of ``eval_crops``.

        ``eval_crops=1``: one pass over the test images (their centre crop with ``crop_size``).
        ``eval_crops=10``: the softmax averaged over the ten crops of each whole test image
        (Krizhevsky et al. 2012, Sec. 4.1), with its top-1 and top-5 error and the centre-crop
        accuracy for comparison.
        """
        probs = self.probabilities(predict, "test")
        if self.config.eval_crops != 10:
            return probs, {}
        labels = self.data.labels("test")
        size = (self.config.crop_size, self.config.crop_size)
        batch = max(self.config.batch_size, 256) // 10 or 1
        relaxed = tf.function(predict.python_function, reduce_retracing=True)  # 10 x batch crops
        ten = np.concatenate([
            ten_crop_probabilities(relaxed, x.numpy(), size, batch_size=batch, from_logits=False)
            for x, _ in self.data.full_eval_batches("test", batch)
        ])
        return ten, {
            "eval_crops": 10,
            "centre_crop_accuracy": accuracy(probs, labels),
            "test_top1_error": top_k_error(ten, labels, 1),
            "test_top5_error": top_k_error(ten, labels, min(5, ten.shape[-1])),
        }
