"""Training-time augmentation inside the tf.data pipeline, seeded per example.

Policies (the papers' recipes): ``crop`` pads by 1/8 of the image side (4 pixels at 32x32, as in
the CIFAR recipes of Belilovsky et al. and He et al.) and takes a random crop back to the
original size; ``crop_flip`` adds a random horizontal flip; ``resized_crop_flip`` is the ImageNet
recipe (random-resized-crop: 8%-100% of the area, aspect ratio 3/4-4/3, resized to the output
size, + flip); :func:`center_crop` is its test-time counterpart (resize the short side to 256,
centre crop 224); ``flip`` is a random horizontal flip alone (AlexNet's random crops come from
``TrainConfig.crop_size``, see ``layerwise.data.crops``). Flips are never used for digits (a
mirrored 3 is not a 3). ``pca``, ``crop_pca``, ``crop_flip_pca`` and ``flip_pca`` add AlexNet's PCA
colour augmentation (Krizhevsky et al. 2012, Sec. 4.1) after the crop/flip: every pixel of an image gets ``sum_i alpha_i s_i p_i`` with
one ``alpha_i ~ N(0, 0.1)`` per image and eigenvector ``p_i`` of the training set's channel
covariance (see :class:`PCAColour`). ``cutout``, ``crop_cutout`` and ``crop_flip_cutout`` add cutout
(DeVries & Taylor 2017; Nøkland & Eidnes' best CIFAR-10 result uses it) after the crop/flip: a square
of half the image side, centred anywhere in the image (clipped at the border), is set to the training
set's mean colour, which is zero after normalisation, as in DeVries & Taylor's code (it cuts after
normalising). ``reflect_crop`` and ``reflect_crop_flip`` pad the crop by reflection instead of zeros
(``tf.pad(mode="REFLECT")``, PyTorch's ``F.pad(mode="reflect")``, edge pixel not repeated), as
InfoPro's CIFAR recipe does (Wang et al. 2021, ``Experiments on CIFAR-SVHN-STL10/train.py`` of
``blackfeather-wang/InfoPro-Pytorch``: pad 4 by reflection, ``RandomCrop(32)``, flip). Every random
choice is a stateless op keyed on (epoch seed, example index), so an epoch's augmented batches are a
pure function of the seed and the epoch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.config import AUGMENTATIONS

__all__ = ["AUGMENTATIONS", "PCAColour", "augment_image", "center_crop", "pca_colour", "random_resized_crop_flip"]
PCA_ALPHA_STD = 0.1  # the paper's sigma of alpha_i


@dataclasses.dataclass(frozen=True)
class PCAColour:
    """Eigen-decomposition of the training pixels' channel covariance, for colour augmentation.

    Attributes:
        directions: ``(C, C)``; column i is the unit eigenvector ``p_i``.
        eigenvalues: ``(C,)`` eigenvalues ``lambda_i`` of the covariance (raw pixel units^2).
        magnitudes: ``(C,)`` the ``s_i`` that multiply ``alpha_i p_i``. ``scale="std"``
            (default) uses ``sqrt(lambda_i)``, the spread along ``p_i`` in pixel units, so the
            jitter is the same fraction of it whatever the pixel range; ``scale="eigenvalue"``
            uses ``lambda_i`` itself, the paper's literal formula, which only makes sense for
            pixels in [0, 1] (in 0..255 units it shifts colours by hundreds).
    """

    directions: np.ndarray
    eigenvalues: np.ndarray
    magnitudes: np.ndarray

    @classmethod
    def from_images(cls, images: np.ndarray, scale: str = "std", max_pixels: int = 1_000_000,
                    seed: int = 0) -> "PCAColour":
        """Fits the decomposition to ``(N, H, W, C)`` raw training images.

        Args:
            images: the training split's raw pixels (``ArraySource.arrays("train")[0]``).
            scale: ``"std"`` or ``"eigenvalue"`` (see the class doc).
            max_pixels: a seeded subsample of at most this many pixels is used.
            seed: seeds that subsample.

        Raises:
            ConfigError: an unknown ``scale`` or no images.
        """
        if scale not in ("std", "eigenvalue"):
            raise ConfigError(f"PCA colour scale must be 'std' or 'eigenvalue', got {scale!r}")
        pixels = np.asarray(images, np.float64).reshape(-1, np.shape(images)[-1])
        if len(pixels) == 0:
            raise ConfigError("PCA colour augmentation needs training images")
        if len(pixels) > max_pixels:
            pixels = pixels[np.random.default_rng(seed).choice(len(pixels), max_pixels, replace=False)]
        covariance = np.atleast_2d(np.cov(pixels, rowvar=False))
        eigenvalues, directions = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1]
        eigenvalues = np.maximum(eigenvalues[order], 0.0)
        directions = directions[:, order]
        magnitudes = np.sqrt(eigenvalues) if scale == "std" else eigenvalues
        return cls(directions.astype(np.float32), eigenvalues.astype(np.float32), magnitudes.astype(np.float32))

    def shift(self, alpha: tf.Tensor) -> tf.Tensor:
        """The per-pixel colour shift ``sum_i alpha_i s_i p_i`` (shape ``(C,)``)."""
        return tf.linalg.matvec(tf.constant(self.directions), tf.cast(alpha, tf.float32) * self.magnitudes)


def pca_colour(image: tf.Tensor, pca: PCAColour, seed: tf.Tensor, alpha_std: float = PCA_ALPHA_STD) -> tf.Tensor:
    """Adds one stateless-random colour shift along ``pca``'s eigenvectors to an ``(H, W, C)`` image."""
    alpha = tf.random.stateless_normal([len(pca.magnitudes)], seed=tf.cast(seed, tf.int64), stddev=alpha_std)
    return tf.cast(image, tf.float32) + pca.shift(alpha)


def cutout(image: tf.Tensor, seed: tf.Tensor, fill=None, size: int | None = None) -> tf.Tensor:
    """DeVries & Taylor (2017): sets a ``size`` x ``size`` square (default half the image side) of
    an ``(H, W, C)`` image to ``fill`` (per channel; default 0); its centre is uniform over the image
    and the square is clipped at the border (stateless ``seed``)."""
    height, width = image.shape[0], image.shape[1]
    size = size or max(1, height // 2)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    cy = tf.random.stateless_uniform([], seed=seeds[0], minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seed=seeds[1], minval=0, maxval=width, dtype=tf.int32)
    rows, cols = tf.range(height), tf.range(width)
    inside = ((rows >= cy - size // 2) & (rows < cy + size // 2))[:, None] & \
        ((cols >= cx - size // 2) & (cols < cx + size // 2))[None, :]
    fill = tf.zeros([image.shape[-1]]) if fill is None else tf.constant(fill, tf.float32)
    image = tf.cast(image, tf.float32)
    return tf.where(inside[..., None], fill + tf.zeros_like(image), image)


def augment_image(image: tf.Tensor, policy: str, seed: tf.Tensor, pca: PCAColour | None = None,
                  fill=None) -> tf.Tensor:
    """Augments one ``(H, W, C)`` image with the stateless ``seed`` (shape ``[2]``, int).

    Args:
        fill: the cutout square's value per channel (the training set's mean colour); default 0.

    Raises:
        ConfigError: a ``*pca`` policy without ``pca``.
    """
    if policy == "none":
        return image
    if policy.endswith("cutout"):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        base = policy.removesuffix("cutout").rstrip("_") or "none"
        return cutout(augment_image(image, base, seeds[0], pca), seeds[1], fill)
    if policy.endswith("pca"):
        if pca is None:
            raise ConfigError(f"augmentation {policy!r} needs the training set's PCAColour")
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        base = policy.removesuffix("pca").rstrip("_") or "none"
        return pca_colour(augment_image(image, base, seeds[0]), pca, seeds[1])
    if policy == "flip":  # with TrainConfig.crop_size: AlexNet's random crop + flip
        return tf.image.stateless_random_flip_left_right(image, seed=tf.cast(seed, tf.int64))
    if policy == "resized_crop_flip":
        return random_resized_crop_flip(image, (image.shape[0], image.shape[1]), seed)
    height, width = image.shape[0], image.shape[1]
    pad = max(1, height // 8)
    mode = "REFLECT" if policy.startswith("reflect_") else "CONSTANT"
    policy = policy.removeprefix("reflect_")
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode=mode)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[0])
    image = tf.ensure_shape(image, (height, width, None))
    if policy == "crop_flip":
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image


def random_resized_crop_flip(image: tf.Tensor, size: tuple[int, int], seed: tf.Tensor) -> tf.Tensor:
    """Inception-style random-resized-crop to ``size`` plus a random flip (stateless)."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seeds[0],
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    crop = tf.image.resize(tf.cast(crop, tf.float32), size)
    crop = tf.image.stateless_random_flip_left_right(crop, seed=seeds[1])
    return tf.ensure_shape(crop, (size[0], size[1], image.shape[-1]))


def center_crop(image: tf.Tensor, size: int = 224, resize: int = 256) -> tf.Tensor:
    """Test-time ImageNet preprocessing: short side to ``resize``, then a central ``size`` crop."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), new)
    top = (new[0] - size) // 2
    left = (new[1] - size) // 2
    return tf.ensure_shape(image[top : top + size, left : left + size], (size, size, image.shape[-1]))
