"""Training on random crops, testing on the centre crop or on ten crops (AlexNet's recipe).

Krizhevsky et al. (2012, Sec. 4.1) train on random 224 x 224 patches of the 256 x 256 images
(and their mirrors) and test on ten patches: the four corners and the centre, and their
mirrors, averaging the softmax outputs. :class:`CroppedSource` wraps any :class:`DataSource`:

- ``image_shape`` is the crop's, so the network is built for crops;
- ``train_batches``: a random ``crop_size`` crop of every (already augmented, normalised)
  training image, stateless and keyed on (seed, epoch, example), so an epoch stays a pure
  function of its seed (resumable); flips and PCA colour come from the wrapped source's policy
  (``flip``, ``flip_pca``);
- ``eval_batches`` and ``arrays``: the centre crop (the single-crop evaluation that the epoch
  metrics, analyses, exports and clients see);
- ``full_eval_batches``: the whole images, for :func:`layerwise.training.evaluation.ten_crop_probabilities`.

The ratio 224/256 = 0.875 maps to 28 of 32 pixels (CIFAR) or 7 of 8 (digits).

Example:
    >>> data = CroppedSource(load_dataset("cifar10", augment="flip_pca"), 28)
    >>> data.image_shape
    (28, 28, 3)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from layerwise.data.base import DataSource, derive_seed
from layerwise.errors import ConfigError


def random_crops(images: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """One random ``size`` x ``size`` crop of each image of a ``(N, H, W, C)`` batch (stateless)."""
    offsets = _offsets(tf.shape(images), size, seed)
    rows = offsets[:, :1] + tf.range(size)[None, :]
    cols = offsets[:, 1:] + tf.range(size)[None, :]
    out = tf.gather(images, rows, axis=1, batch_dims=1)
    out = tf.gather(out, cols, axis=2, batch_dims=1)
    return tf.ensure_shape(out, [None, size, size, images.shape[-1]])


def _offsets(shape: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """``(N, 2)`` top-left corners, uniform over the valid positions."""
    u = tf.random.stateless_uniform(tf.stack([shape[0], 2]), seed=tf.cast(seed, tf.int64))
    room = tf.cast(tf.stack([shape[1], shape[2]]) - size + 1, tf.float32)
    return tf.minimum(tf.cast(tf.floor(u * room), tf.int32), tf.cast(room, tf.int32) - 1)


def centre_crop(images, size: int):
    """The central ``size`` x ``size`` crop of a ``(N, H, W, C)`` batch (tensor or array)."""
    height, width = int(images.shape[1]), int(images.shape[2])
    top, left = (height - size) // 2, (width - size) // 2
    return images[:, top: top + size, left: left + size, :]


class CroppedSource(DataSource):
    """``data`` seen through ``crop_size`` crops (see the module doc).

    Raises:
        ConfigError: ``crop_size`` does not fit in the images.
    """

    def __init__(self, data: DataSource, crop_size: int):
        height, width, channels = data.image_shape
        if not 0 < crop_size <= min(height, width):
            raise ConfigError(
                f"crop_size {crop_size} does not fit in the {height}x{width} images of {data.name!r}; "
                f"use at most {min(height, width)} (e.g. {int(0.875 * min(height, width))}, AlexNet's 224/256)"
            )
        self.inner = data
        self.crop_size = int(crop_size)
        self.name = data.name
        self.image_shape = (self.crop_size, self.crop_size, channels)
        self.full_image_shape = tuple(data.image_shape)
        self.num_classes = data.num_classes
        self.mean, self.std = data.mean, data.std
        self.uint8_pixels = data.uint8_pixels
        self.augment = f"{data.augment}+random_crop{self.crop_size}"  # never "none": not cacheable
        self.num_train, self.num_test, self.num_val = data.num_train, data.num_test, data.num_val

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        base = tf.constant(derive_seed(seed, epoch, 3), tf.int64)
        size = self.crop_size
        return self.inner.train_batches(batch_size, seed, epoch).enumerate().map(
            lambda i, xy: (random_crops(xy[0], size, tf.stack([base, i])), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        size = self.crop_size
        return self.inner.eval_batches(split, batch_size).map(lambda x, y: (centre_crop(x, size), y))

    def full_eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        """Whole normalised images (``full_image_shape``), for 10-crop testing."""
        return self.inner.eval_batches(split, batch_size)

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Raw pixels of ``split``, centre-cropped (what the network sees at test time)."""
        images, labels = self.inner.arrays(split)
        return centre_crop(images, self.crop_size), labels

    def labels(self, split: str) -> np.ndarray:
        return self.inner.labels(split)


def with_crops(data: DataSource, crop_size: int) -> DataSource:
    """``data`` itself when ``crop_size`` is 0, else a :class:`CroppedSource`."""
    return CroppedSource(data, crop_size) if crop_size else data
