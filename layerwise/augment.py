"""Training-time augmentation inside the tf.data pipeline, seeded per example.

Policies (the papers' recipes): ``crop`` pads by 1/8 of the image side (4 pixels at 32x32, as in
the CIFAR recipes of Belilovsky et al. and He et al.) and takes a random crop back to the
original size; ``crop_flip`` adds a random horizontal flip; ``resized_crop_flip`` is the ImageNet
recipe (random-resized-crop: 8%-100% of the area, aspect ratio 3/4-4/3, resized to the output
size, + flip); :func:`center_crop` is its test-time counterpart (resize the short side to 256,
centre crop 224). Flips are never used for digits
(a mirrored 3 is not a 3). Every random choice is a stateless op keyed on (epoch seed, example
index), so an epoch's augmented batches are a pure function of the seed and the epoch.
"""

from __future__ import annotations

import tensorflow as tf

AUGMENTATIONS = ("none", "crop", "crop_flip", "resized_crop_flip")


def augment_image(image: tf.Tensor, policy: str, seed: tf.Tensor) -> tf.Tensor:
    """Augments one ``(H, W, C)`` image with the stateless ``seed`` (shape ``[2]``, int)."""
    if policy == "none":
        return image
    if policy == "resized_crop_flip":
        return random_resized_crop_flip(image, (image.shape[0], image.shape[1]), seed)
    height, width = image.shape[0], image.shape[1]
    pad = max(1, height // 8)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
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
