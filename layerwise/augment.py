"""Training-time augmentation inside the tf.data pipeline, seeded per example.

Policies (the papers' recipes): ``crop`` pads by 1/8 of the image side (4 pixels at 32x32, as in
the CIFAR recipes of Belilovsky et al. and He et al.) and takes a random crop back to the
original size; ``crop_flip`` adds a random horizontal flip. Flips are never used for digits
(a mirrored 3 is not a 3). Every random choice is a stateless op keyed on (epoch seed, example
index), so an epoch's augmented batches are a pure function of the seed and the epoch.
"""

from __future__ import annotations

import tensorflow as tf

AUGMENTATIONS = ("none", "crop", "crop_flip")


def augment_image(image: tf.Tensor, policy: str, seed: tf.Tensor) -> tf.Tensor:
    """Augments one ``(H, W, C)`` image with the stateless ``seed`` (shape ``[2]``, int)."""
    if policy == "none":
        return image
    height, width = image.shape[0], image.shape[1]
    pad = max(1, height // 8)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[0])
    image = tf.ensure_shape(image, (height, width, None))
    if policy == "crop_flip":
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    return image
