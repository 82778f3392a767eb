"""A user's own data for ``layerwise.fit``: ``tf.data`` pipelines or NumPy arrays, as they are.

``layerwise.fit`` takes what ``keras.Model.fit`` takes: a ``tf.data.Dataset`` of ``(images,
integer labels)`` batches, or an ``(x, y)`` pair of arrays. Nothing is normalised or augmented
behind the user's back: the images reach the network as the pipeline yields them. Exports then
take float images on that scale; they also take uint8 pixels, unchanged but for the cast, only
when the training images were uint8 (``DataSource.uint8_pixels``): float images of unknown scale
get no uint8 signature (``layerwise.serving.servables``).

- A pipeline is used as it is, every epoch: its shuffling and augmentation are its own, so a
  resumed run gives the uninterrupted run's numbers only if the pipeline is deterministic. The
  frozen prefix is not cached (the toolkit cannot know the pipeline's example order).
- Arrays get the toolkit's own seeded, resumable pipeline (:class:`~layerwise.data.base.ArraySource`
  without normalisation): shuffled per epoch, batched to ``batch_size``, cacheable.

Example:
    >>> source = as_source(train_ds, validation=val_ds, num_classes=10, batch_size=64)
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import tensorflow as tf

from layerwise.data.base import ArraySource, DataSource
from layerwise.errors import ConfigError

Data = Any  # tf.data.Dataset | tuple[np.ndarray, np.ndarray] | DataSource
# marks the in-pipeline label check's error, so that ``labels_in_range`` can tell it from others
LABEL_CHECK = "layerwise label check: a label is not a class id of the network"


def _one_hot_advice(shape, where: str, pipeline: bool) -> str:
    fix = "dataset.map(lambda x, y: (x, tf.argmax(y, -1)))" if pipeline else "y.argmax(-1)"
    return (
        f"the {where} labels must be integer class ids, one per image, got one-hot (or per-class) labels of shape "
        f"{tuple(shape)}: pass {fix}"
    )


def check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raises ConfigError when a label is not a class id of the network (``0 .. num_classes - 1``)."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        top = int(labels.max())
        fix = f"relabel the data, or give the model {top + 1} outputs" if top >= num_classes else "relabel the data"
        raise ConfigError(
            f"the {where} labels must be class ids 0..{num_classes - 1} (the network has {num_classes} classes), "
            f"got {labels[bad[0]]} (label {bad[0]}, {bad.size} such): {fix}"
        )


def check_image_shape(image_shape: Sequence[int], input_shape: Sequence[int | None], where: str = "training") -> None:
    """Raises ConfigError when images of ``image_shape`` do not fit a network taking
    ``input_shape`` ``(H, W, C)``: channels first, or another size. ``None`` in ``input_shape``
    takes any size."""
    image_shape, input_shape = tuple(image_shape), tuple(input_shape)

    def fits(shape):
        return len(shape) == len(input_shape) and all(a is None or a == b for a, b in zip(input_shape, shape))

    if fits(image_shape):
        return
    channels_last = image_shape[1:] + image_shape[:1]
    if len(image_shape) == 3 and fits(channels_last):
        raise ConfigError(
            f"the {where} images have shape {image_shape} (channels first) but the network takes channels-last "
            f"(H, W, C) = {input_shape}: pass np.moveaxis(x, 1, -1) (a tf.data pipeline: "
            "dataset.map(lambda x, y: (tf.transpose(x, [0, 2, 3, 1]), y)))"
        )
    raise ConfigError(
        f"the {where} images have shape {image_shape} but the network takes {input_shape} (H, W, C): resize "
        "the images (keras.layers.Resizing) or build the model for their shape"
    )


@contextlib.contextmanager
def labels_in_range(num_classes: int) -> Iterator[None]:
    """Turns the error of the label check inside a pipeline (:meth:`DatasetSource.train_batches`,
    ``tf.debugging.assert_less``, raised when a batch is read) into one ConfigError line."""
    try:
        yield
    except tf.errors.InvalidArgumentError as e:
        if LABEL_CHECK not in e.message:
            raise
        raise ConfigError(
            f"the training dataset yields labels outside 0..{num_classes - 1} (the network has {num_classes} "
            "classes), in a batch after the first: relabel the data, or give the model more outputs"
        ) from None


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
    if labels.shape.rank == 2 and labels.shape[-1] not in (1, None):
        raise ConfigError(_one_hot_advice(labels.shape, where, pipeline=True))
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
        self.uint8_pixels = train.element_spec[0].dtype == tf.uint8
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
        # the first batch here; every later one by the check in train_batches (labels_in_range)
        check_label_range(np.asarray(first[1]).reshape(-1), self.num_classes, "training")
        for split, where in (("val", "validation"), ("test", "test")):
            if split in self._datasets:
                check_label_range(self.labels(split), self.num_classes, where)
        self.num_val = len(self.labels("val")) if "val" in self._datasets else 0
        self.num_test = len(self.labels("test")) if "test" in self._datasets else 0

    def steps_per_epoch(self, batch_size: int) -> int:
        return self._steps

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        """The pipeline's batches, labels flattened to int32 and checked to be class ids (a label
        outside them stops the run with a ConfigError through :func:`labels_in_range`)."""
        num_classes = self.num_classes

        def checked(x, y):
            y = tf.reshape(y, [-1])
            with tf.control_dependencies([
                tf.debugging.assert_non_negative(y, message=LABEL_CHECK),
                tf.debugging.assert_less(y, tf.cast(num_classes, y.dtype), message=LABEL_CHECK),
            ]):
                return x, tf.cast(y, tf.int32)

        return self._datasets["train"].map(checked)

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        if split not in self._datasets:
            raise ConfigError(f"no {split!r} data was given")
        return self._datasets[split].map(lambda x, y: (tf.cast(x, tf.float32), tf.reshape(y, [-1])))

    def labels(self, split: str) -> np.ndarray:
        if split not in self._labels:
            batches = self.eval_batches(split, 0)
            self._labels[split] = np.concatenate([np.asarray(y).reshape(-1) for _, y in batches]).astype(np.int64)
        return self._labels[split]


def _pair(value: Any, where: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays (a pipeline is read out once), checked: labels are class ids of
    ``num_classes``."""
    if isinstance(value, tf.data.Dataset):
        _check_spec(value, where)
        xs, ys = zip(*[(np.asarray(x), np.asarray(y).reshape(-1)) for x, y in value])
        x, y = np.concatenate(xs), np.concatenate(ys)
        check_label_range(y, num_classes, where)
        return x, y
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise ConfigError(
            f"the {where} data must be a tf.data.Dataset of (images, labels) batches or an (x, y) pair of "
            f"arrays, got {type(value).__name__}"
        )
    x, y = np.asarray(value[0]), np.asarray(value[1])
    if y.ndim == 2 and y.shape[1] > 1:
        raise ConfigError(_one_hot_advice(y.shape, where, pipeline=False))
    y = y.reshape(-1)
    if x.ndim == 3:
        raise ConfigError(
            f"the {where} images must be an array (examples, height, width, channels), got shape {x.shape}: "
            "give them a channel axis (x[..., None])"
        )
    if x.ndim != 4:
        raise ConfigError(
            f"the {where} images must be an array (examples, height, width, channels), got shape {x.shape}"
        )
    if len(x) != len(y):
        raise ConfigError(f"the {where} data has {len(x)} images but {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        raise ConfigError(f"the {where} labels must be integer class indices, got {y.dtype}")
    check_label_range(y, num_classes, where)
    return x, y


def as_source(train: Data, validation: Data = None, test: Data = None, *, num_classes: int,
              name: str | None = None, shuffle: bool = True) -> DataSource:
    """The :class:`DataSource` of a user's data (see the module doc); a ``DataSource`` passes.

    ``shuffle=False`` keeps the order of training arrays; a pipeline's order is always its own
    (as ``keras.Model.fit`` ignores ``shuffle`` for a ``tf.data.Dataset``).

    Raises:
        ConfigError: data of the wrong form (not batched, no channel axis, labels that are not
            integer class ids of ``num_classes`` (one-hot, out of range), mismatched lengths or
            shapes).
    """
    if isinstance(train, DataSource):
        if validation is not None or test is not None:
            raise ConfigError("a DataSource carries its own validation and test splits; pass neither")
        return train
    if isinstance(train, tf.data.Dataset):
        def batched(value, where):
            if value is None or isinstance(value, tf.data.Dataset):
                return value
            x, y = _pair(value, where, num_classes)
            return tf.data.Dataset.from_tensor_slices((x, y)).batch(256)

        return DatasetSource(train, batched(validation, "validation"), batched(test, "test"),
                             num_classes=num_classes, name=name or "tf.data")
    x, y = _pair(train, "training", num_classes)
    return ArraySource(
        name or "arrays", (x, y), None if test is None else _pair(test, "test", num_classes), num_classes,
        validation=None if validation is None else _pair(validation, "validation", num_classes), normalize=False,
        shuffle=shuffle,
    )
