"""Evaluation recipes of the papers: 10-crop testing and top-k error.

AlexNet (Krizhevsky et al. 2012, Sec. 4.1) and ResNet (He et al. 2016, Sec. 3.4) test on ten
crops of each image: the four corners and the centre, and their horizontal mirrors, averaging
the ten softmax outputs. Their tables report top-1 and top-5 error.

Example:
    >>> probs = ten_crop_probabilities(classifier, images, crop_size=(24, 24))
    >>> top_k_error(probs, labels, k=5)
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

from layerwise.errors import ConfigError


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
