"""A user's own data for ``layerwise.fit``: ``tf.data`` pipelines or NumPy arrays, as they are.

``layerwise.fit`` takes what ``keras.Model.fit`` takes: a ``tf.data.Dataset`` of ``(images,
integer labels)`` batches, or an ``(x, y)`` pair of arrays. Nothing is normalised or augmented
behind the user's back: the images reach the network as the pipeline yields them (exports then
take float images on that scale; their uint8 signature passes pixel values through unchanged).

- A pipeline is used as it is, every epoch: its shuffling and augmentation are its own, so a
  resumed run gives the uninterrupted run's numbers only if the pipeline is deterministic. The
  frozen prefix is not cached (the toolkit cannot know the pipeline's example order).
- Arrays get the toolkit's own seeded, resumable pipeline (:class:`~layerwise.data.base.ArraySource`
  without normalisation): shuffled per epoch, batched to ``batch_size``, cacheable.

Example:
    >>> source = as_source(train_ds, validation=val_ds, num_classes=10, batch_size=64)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from layerwise.data.base import ArraySource, DataSource
from layerwise.errors import ConfigError

Data = Any  # tf.data.Dataset | tuple[np.ndarray, np.ndarray] | DataSource


def _check_spec(dataset: tf.data.Dataset, where: str) -> tuple[int, ...]:
    """The image shape of a pipeline of ``(images, labels)`` batches, or a ConfigError."""
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ConfigError(f"the {where} dataset must yield (images, labels) pairs, got elements {spec}")
    images, labels = spec
    if images.shape.rank != 4 or None in images.shape[1:]:
        raise ConfigError(
            f"the {where} dataset must yield batches of images (batch, height, width, channels), got "
            f"shape {images.shape}: batch it (dataset.batch(64)) and give images a channel axis"
        )
    if labels.shape.rank not in (1, 2) or not labels.dtype.is_integer:
        raise ConfigError(
            f"the {where} dataset's labels must be a batch of integer class indices, got {labels.dtype.name} "
            f"of shape {labels.shape}"
        )
    return tuple(int(d) for d in images.shape[1:])


class DatasetSource(DataSource):
    """The user's ``tf.data`` pipelines of ``(images, integer labels)`` batches.

    Args:
        train: the training batches (one epoch per iteration).
        validation, test: optional evaluation batches.
        num_classes: number of classes.
        name: a name for logs and records.
    """

    fixed_batch_size = False  # the last batch may be smaller: the loss divides by each batch's size

    def __init__(self, train: tf.data.Dataset, validation: tf.data.Dataset | None = None,
                 test: tf.data.Dataset | None = None, *, num_classes: int, name: str = "tf.data"):
        self.name = name
        self.image_shape = _check_spec(train, "training")
        self._datasets = {"train": train}
        for split, dataset in (("val", validation), ("test", test)):
            if dataset is not None:
                if _check_spec(dataset, {"val": "validation", "test": "test"}[split]) != self.image_shape:
                    raise ConfigError(
                        f"the {split} images have shape {dataset.element_spec[0].shape[1:]}, the training "
                        f"images {self.image_shape}"
                    )
                self._datasets[split] = dataset
        self.num_classes = int(num_classes)
        channels = self.image_shape[-1]
        self.mean, self.std = np.zeros(channels, np.float32), np.ones(channels, np.float32)
        self.augment = "pipeline"  # whatever the pipeline does: never cached
        self._labels: dict[str, np.ndarray] = {}
        cardinality = int(train.cardinality())
        if cardinality < 0:  # unknown or infinite: count one epoch
            cardinality = sum(1 for _ in train)
        first = next(iter(train.take(1)), None)
        if first is None:
            raise ConfigError("the training dataset is empty")
        self._steps = cardinality
        self.batch_size = int(first[1].shape[0])
        self.num_train = cardinality * self.batch_size  # batches x the first batch's size
        self.num_val = len(self.labels("val")) if "val" in self._datasets else 0
        self.num_test = len(self.labels("test")) if "test" in self._datasets else 0

    def steps_per_epoch(self, batch_size: int) -> int:
        return self._steps

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        return self._datasets["train"].map(lambda x, y: (x, tf.cast(tf.reshape(y, [-1]), tf.int32)))

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        if split not in self._datasets:
            raise ConfigError(f"no {split!r} data was given")
        return self._datasets[split].map(lambda x, y: (tf.cast(x, tf.float32), tf.reshape(y, [-1])))

    def labels(self, split: str) -> np.ndarray:
        if split not in self._labels:
            batches = self.eval_batches(split, 0)
            self._labels[split] = np.concatenate([np.asarray(y).reshape(-1) for _, y in batches]).astype(np.int64)
        return self._labels[split]


def _pair(value: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays (a pipeline is read out once), checked."""
    if isinstance(value, tf.data.Dataset):
        _check_spec(value, where)
        xs, ys = zip(*[(np.asarray(x), np.asarray(y).reshape(-1)) for x, y in value])
        return np.concatenate(xs), np.concatenate(ys)
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ConfigError(
            f"the {where} data must be a tf.data.Dataset of (images, labels) batches or an (x, y) pair of "
            f"arrays, got {type(value).__name__}"
        )
    x, y = np.asarray(value[0]), np.asarray(value[1]).reshape(-1)
    if x.ndim != 4:
        raise ConfigError(
            f"the {where} images must be an array (examples, height, width, channels), got shape {x.shape}"
        )
    if len(x) != len(y):
        raise ConfigError(f"the {where} data has {len(x)} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"the {where} labels must be integer class indices, got {y.dtype}")
    return x, y


def as_source(train: Data, validation: Data = None, test: Data = None, *, num_classes: int,
              name: str | None = None, shuffle: bool = True) -> DataSource:
    """The :class:`DataSource` of a user's data (see the module doc); a ``DataSource`` passes.

    ``shuffle=False`` keeps the order of training arrays; a pipeline's order is always its own
    (as ``keras.Model.fit`` ignores ``shuffle`` for a ``tf.data.Dataset``).

    Raises:
        ConfigError: data of the wrong form (not batched, no channel axis, labels that are not
            integers, mismatched lengths or shapes).
    """
    if isinstance(train, DataSource):
        if validation is not None or test is not None:
            raise ConfigError("a DataSource carries its own validation and test splits; pass neither")
        return train
    if isinstance(train, tf.data.Dataset):
        def batched(value, where):
            if value is None or isinstance(value, tf.data.Dataset):
                return value
            x, y = _pair(value, where)
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(256)

        return DatasetSource(train, batched(validation, "validation"), batched(test, "test"),
                             num_classes=num_classes, name=name or "tf.data")
    x, y = _pair(train, "training")
    return ArraySource(
        name or "arrays", (x, y), None if test is None else _pair(test, "test"), num_classes,
        validation=None if validation is None else _pair(validation, "validation"), normalize=False,
        shuffle=shuffle,
    )
