"""TensorFlow Datasets: MNIST, Fashion-MNIST, CIFAR-10/100, Imagenette, ImageNet (ILSVRC 2012).

A dataset that is not prepared under ``data_dir`` is downloaded and prepared
(``DatasetBuilder.download_and_prepare``, https://www.tensorflow.org/datasets/api_docs/python/tfds/core/DatasetBuilder)
when ``download`` is true (the default) and the hosts it comes from answer a TCP connection
within :data:`REACHABILITY_TIMEOUT_S` seconds. The check comes first because TFDS's downloader
retries a failing request with back-off for minutes before giving up
(https://www.tensorflow.org/datasets/api_docs/python/tfds/download/DownloadConfig): on a machine
without internet a loader raises :class:`DatasetUnavailableError` at once instead, saying how to
provide the files, as it does with ``download=False`` (``--download=false``). ``imagenet2012`` is
never downloaded (ImageNet's licence): it is prepared offline from the ILSVRC tars in
``<data_dir>/downloads/manual`` (TFDS's manual_dir).

Small datasets (MNIST, Fashion-MNIST, CIFAR) are read into memory as an :class:`ArraySource`;
``cifar10``/``cifar100`` also read the binary directory ``cifar-10-batches-bin`` /
``cifar-100-binary`` when ``data_dir`` holds one (the python pickles only with ``trust_pickle``;
``layerwise.data.local``). Imagenette and
ImageNet stream from disk (:class:`StreamingImageSource`) with the paper's ImageNet recipe:
random-resized-crop 224 + flip for training, resize 256 + centre crop 224 for testing.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse

import numpy as np
import tensorflow as tf

from layerwise.data.augment import center_crop, random_resized_crop_flip
from layerwise.data.base import DATASETS, ArraySource, DataSource, derive_seed
from layerwise.data.local import has_cifar_files, load_cifar_files
from layerwise.errors import DatasetUnavailableError

DEFAULT_DATA_DIR = os.path.join("~", "tensorflow_datasets")
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
ILSVRC_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
REACHABILITY_TIMEOUT_S = 3.0
# Where TFDS keeps prepared copies of its datasets, tried before a dataset's own sources.
TFDS_HOST = "storage.googleapis.com"


def hosts_reachable(hosts, timeout: float = REACHABILITY_TIMEOUT_S) -> bool:
    """True when every host of ``hosts`` accepts a TCP connection on port 443 within ``timeout``
    seconds in all (name resolution included: the check runs in a daemon thread that is
    abandoned when it takes longer)."""
    answered = []

    def connect():
        try:
            for host in hosts:
                socket.create_connection((host, 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


def source_hosts(builder) -> list[str]:
    """The hosts ``builder`` downloads from: TFDS's own, and those of the dataset's recorded URLs."""
    try:
        urls = list(builder.url_infos or ())
    except Exception:  # noqa: BLE001 - url_infos reads checksum files of the dataset's package
        urls = []
    hosts = {urllib.parse.urlsplit(url).hostname for url in urls}
    return [TFDS_HOST] + sorted(h for h in hosts if h and h != TFDS_HOST)


def _how_to_provide(name: str, data_dir: str) -> str:
    if name == "imagenet2012":
        manual = os.path.join(data_dir, "downloads", "manual")
        return (
            f"put {' and '.join(ILSVRC_TARS)} (from image-net.org) in {manual} and rerun; they are "
            "prepared offline on first use"
        )
    return (
        f"prepare it on a machine with internet access (python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}').download_and_prepare()\") and copy ~/tensorflow_datasets/{name} "
        f"to {os.path.join(data_dir, name)}, or pass --data_dir where it already is"
    )


def tfds_builder(name: str, data_dir: str | None):
    """The TFDS builder of ``name`` (imagenet2012 prepared from the ILSVRC tars when they are in
    the manual directory).

    Raises:
        DatasetUnavailableError: tensorflow-datasets is not installed.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # missing importlib_resources on Python >= 3.9 lands here too
        raise DatasetUnavailableError(
            f"dataset {name!r} needs tensorflow-datasets and importlib_resources: pip install "
            f"tensorflow-datasets importlib_resources ({e})"
        ) from e
    data_dir = os.path.expanduser(data_dir or DEFAULT_DATA_DIR)
    builder = tfds.builder(name, data_dir=data_dir)
    if name == "imagenet2012" and not builder.is_prepared():
        manual = os.path.join(data_dir, "downloads", "manual")
        if all(os.path.exists(os.path.join(manual, tar)) for tar in ILSVRC_TARS):
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual))
    return builder, data_dir


def tfds_split(name: str, split: str, data_dir: str | None, download: bool = True) -> tuple[tf.data.Dataset, object]:
    """``(image, label)`` pairs of a prepared split, in file order, and the builder's info; a
    dataset not prepared yet is downloaded first when ``download`` is true and its hosts answer
    (:func:`hosts_reachable`); imagenet2012 never is.

    Raises:
        DatasetUnavailableError: the data is not prepared in ``data_dir`` and cannot be
            downloaded (forbidden, no answer, or imagenet2012 without its tars).
    """
    builder, data_dir = tfds_builder(name, data_dir)
    try:
        return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False), builder.info
    except (AssertionError, FileNotFoundError, ValueError) as e:
        reason = f"{type(e).__name__}: {str(e)[:200]}"
    if name == "imagenet2012" or not download:
        why = "downloads are off (--download=false)" if name != "imagenet2012" else "cannot be downloaded"
        raise DatasetUnavailableError(
            f"dataset {name!r} is not prepared in {data_dir} and {why}; {_how_to_provide(name, data_dir)} ({reason})"
        )
    hosts = source_hosts(builder)
    if not hosts_reachable(hosts):
        raise DatasetUnavailableError(
            f"dataset {name!r} is not prepared in {data_dir} and cannot be downloaded here ({', '.join(hosts)} did "
            f"not answer within {REACHABILITY_TIMEOUT_S:g} s); {_how_to_provide(name, data_dir)}"
        )
    builder.download_and_prepare()
    return builder.as_dataset(split=split, as_supervised=True, shuffle_files=False), builder.info


def _to_arrays(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for x, y in ds.batch(1024).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def load_tfds_arrays(name: str, data_dir: str | None, augment: str, test_split: str = "test",
                     download: bool = True) -> ArraySource:
    """A small TFDS dataset read into memory (uint8 pixels); downloaded first when ``download``
    allows it (:func:`tfds_builder`)."""
    train, info = tfds_split(name, "train", data_dir, download)
    test, _ = tfds_split(name, test_split, data_dir, download)
    num_classes = info.features["label"].num_classes
    return ArraySource(name, _to_arrays(train), _to_arrays(test), num_classes, augment)


@DATASETS.register("mnist")
def load_mnist(split_seed: int = 0, augment: str = "none", data_dir: str | None = None,
               download: bool = True) -> ArraySource:
    """TFDS ``mnist`` (60,000 / 10,000); ``split_seed`` is unused (the split is fixed)."""
    return load_tfds_arrays("mnist", data_dir, augment, download=download)


@DATASETS.register("fashion_mnist")
def load_fashion_mnist(split_seed: int = 0, augment: str = "none", data_dir: str | None = None,
                       download: bool = True) -> ArraySource:
    """TFDS ``fashion_mnist`` (60,000 / 10,000)."""
    return load_tfds_arrays("fashion_mnist", data_dir, augment, download=download)


def _cifar(name: str, augment: str, data_dir: str | None, trust_pickle: bool, download: bool) -> ArraySource:
    if data_dir and has_cifar_files(name, data_dir):
        return load_cifar_files(name, data_dir, augment, trust_pickle)
    return load_tfds_arrays(name, data_dir, augment, download=download)


@DATASETS.register("cifar10")
def load_cifar10(split_seed: int = 0, augment: str = "crop_flip", data_dir: str | None = None,
                 trust_pickle: bool = False, download: bool = True) -> ArraySource:
    """CIFAR-10 (50,000 / 10,000): ``cifar-10-batches-bin`` in ``data_dir`` (or, with
    ``trust_pickle``, ``cifar-10-batches-py``), else TFDS."""
    return _cifar("cifar10", augment, data_dir, trust_pickle, download)


@DATASETS.register("cifar100")
def load_cifar100(split_seed: int = 0, augment: str = "crop_flip", data_dir: str | None = None,
                 trust_pickle: bool = False, download: bool = True) -> ArraySource:
    """CIFAR-100 (50,000 / 10,000): ``cifar-100-binary`` in ``data_dir`` (or, with
    ``trust_pickle``, ``cifar-100-python``), else TFDS."""
    return _cifar("cifar100", augment, data_dir, trust_pickle, download)


class StreamingImageSource(DataSource):
    """Variable-size images streamed from TFDS with the paper's ImageNet preprocessing.

    Training: a seeded shuffle (buffer ``shuffle_buffer``) that depends only on (seed, epoch),
    random-resized-crop to ``image_size`` + flip keyed on (seed, epoch, example index).
    Evaluation: resize the short side to ``image_size * 256 / 224``, centre crop ``image_size``.
    """

    def __init__(self, name: str, data_dir: str | None, image_size: int = 224, test_split: str = "validation",
                 augment: str = "resized_crop_flip", shuffle_buffer: int = 10_000, download: bool = True):
        self.name = name
        self._data_dir = data_dir
        self._splits = {"train": "train", "test": test_split}
        train, info = tfds_split(name, "train", data_dir, download)
        tfds_split(name, test_split, data_dir)  # fail now, not after an epoch
        self.image_size = int(image_size)
        self.image_shape = (self.image_size, self.image_size, 3)
        self.num_classes = int(info.features["label"].num_classes)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.augment = augment
        self.shuffle_buffer = shuffle_buffer
        self._labels: dict[str, np.ndarray] = {}
        self.num_train = self._count("train", info)
        self.num_test = self._count("test", info)

    def _raw(self, split: str) -> tf.data.Dataset:
        return tfds_split(self.name, self._splits[split], self._data_dir)[0]

    def _count(self, split: str, info) -> int:
        try:
            n = int(info.splits[self._splits[split]].num_examples)
            if n:
                return n
        except (KeyError, TypeError):
            pass
        return len(self.labels(split))

    def labels(self, split: str) -> np.ndarray:
        if split not in self._labels:
            self._labels[split] = np.concatenate(
                list(self._raw(split).map(lambda x, y: y).batch(4096).as_numpy_iterator())
            ).astype(np.int32)
        return self._labels[split]

    def train_batches(self, batch_size: int, seed: int, epoch: int) -> tf.data.Dataset:
        size = (self.image_size, self.image_size)
        ds = self._raw("train").shuffle(self.shuffle_buffer, seed=derive_seed(seed, epoch), reshuffle_each_iteration=False)
        base = derive_seed(seed, epoch, 1)
        if self.augment == "none":
            prep = lambda i, x: center_crop(x, self.image_size, round(self.image_size * 256 / 224))
        else:
            prep = lambda i, x: random_resized_crop_flip(x, size, tf.stack([tf.constant(base, tf.int64), i]))
        ds = ds.enumerate().map(
            lambda i, xy: (prep(i, xy[0]), tf.cast(xy[1], tf.int32)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        ds = ds.batch(batch_size, drop_remainder=True)
        return ds.map(lambda a, b: (self.normalize(a), b)).prefetch(tf.data.AUTOTUNE)

    def eval_batches(self, split: str, batch_size: int) -> tf.data.Dataset:
        resize = round(self.image_size * 256 / 224)
        ds = self._raw(split).map(
            lambda x, y: (center_crop(x, self.image_size, resize), tf.cast(y, tf.int32)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
        return ds.batch(batch_size).map(lambda a, b: (self.normalize(a), b)).prefetch(tf.data.AUTOTUNE)


@DATASETS.register("imagenette")
def load_imagenette(split_seed: int = 0, augment: str = "resized_crop_flip", data_dir: str | None = None,
                    image_size: int = 224, download: bool = True) -> StreamingImageSource:
    """TFDS ``imagenette`` (10 ImageNet classes), ImageNet preprocessing."""
    return StreamingImageSource("imagenette", data_dir, image_size, "validation", augment, download=download)


@DATASETS.register("imagenet2012")
def load_imagenet2012(split_seed: int = 0, augment: str = "resized_crop_flip", data_dir: str | None = None,
                      image_size: int = 224) -> StreamingImageSource:
    """TFDS ``imagenet2012`` from the ILSVRC tars in ``<data_dir>/downloads/manual``."""
    return StreamingImageSource("imagenet2012", data_dir, image_size, "validation", augment)
