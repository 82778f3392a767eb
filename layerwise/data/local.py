"""Datasets from local files: CIFAR python pickles and image folders.

- CIFAR-10/100 in the python-pickle layout of https://www.cs.toronto.edu/~kriz/cifar.html:
  ``cifar-10-batches-py/{data_batch_1..5, test_batch}`` (``b"data"``: N x 3072 uint8, channel
  planes R, G, B of 32 x 32 row-major; ``b"labels"``) and ``cifar-100-python/{train, test}``
  (``b"fine_labels"``). Used by ``cifar10``/``cifar100`` when ``data_dir`` holds them.
- ``image_folder``: ``data_dir/<class_name>/*.jpg|png`` read with
  ``keras.utils.image_dataset_from_directory``; ``data_dir/train`` and ``data_dir/test``
  subfolders give the split, otherwise a seeded stratified 20% test split is taken.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from layerwise.data.base import DATASETS, ArraySource, stratified_split
from layerwise.errors import DatasetUnavailableError

CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}


def find_cifar_pickles(name: str, data_dir: str) -> str | None:
    """The pickle directory of ``name`` in (or at) ``data_dir``, or ``None``."""
    folder = CIFAR_LAYOUT[name][0]
    data_dir = os.path.expanduser(data_dir)
    for candidate in (os.path.join(data_dir, folder), data_dir):
        if os.path.exists(os.path.join(candidate, CIFAR_LAYOUT[name][2][0])):
            return candidate
    return None


def _read_cifar_batch(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int32)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError) as e:
        raise DatasetUnavailableError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: {e})") from e
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def load_cifar_pickles(name: str, data_dir: str, augment: str = "crop_flip") -> ArraySource:
    """Reads CIFAR-10/100 from the python-pickle directory in ``data_dir``.

    Raises:
        DatasetUnavailableError: the directory or one of its batch files is missing or corrupt.
    """
    folder, train_files, test_files, label_key, num_classes = CIFAR_LAYOUT[name]
    root = find_cifar_pickles(name, data_dir)
    if root is None:
        raise DatasetUnavailableError(
            f"no {folder}/ in {data_dir}: download {name} (python version) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there"
        )

    def read(files):
        missing = [f for f in files if not os.path.exists(os.path.join(root, f))]
        if missing:
            raise DatasetUnavailableError(f"{root} lacks {', '.join(missing)}: re-extract the {name} archive")
        parts = [_read_cifar_batch(os.path.join(root, f), label_key) for f in files]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    return ArraySource(name, read(train_files), read(test_files), num_classes, augment)


def _read_folder(path: str, image_size: int, class_names=None):
    import keras

    ds = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", class_names=class_names, image_size=(image_size, image_size),
        batch_size=256, shuffle=False, verbose=False,
    )
    images, labels = [], []
    for x, y in ds.as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return ds.class_names, np.concatenate(images).astype(np.float32), np.concatenate(labels).astype(np.int32)


@DATASETS.register("image_folder")
def load_image_folder(
    split_seed: int = 0, augment: str = "crop_flip", data_dir: str | None = None, image_size: int = 32
) -> ArraySource:
    """Images in ``data_dir/<class>/`` (or ``data_dir/{train,test}/<class>/``), resized to a square.

    Raises:
        DatasetUnavailableError: no ``data_dir``, or no class folders with images in it.
    """
    if not data_dir or not os.path.isdir(os.path.expanduser(data_dir)):
        raise DatasetUnavailableError(
            f"image_folder needs --data_dir pointing at a folder of class_name/*.jpg, got {data_dir!r}"
        )
    root = os.path.expanduser(data_dir)
    try:
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
            names, x_train, y_train = _read_folder(os.path.join(root, "train"), image_size)
            _, x_test, y_test = _read_folder(os.path.join(root, "test"), image_size, class_names=names)
        else:
            names, x, y = _read_folder(root, image_size)
            train, test = stratified_split(y, 0.2, split_seed)
            x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    except ValueError as e:  # keras: "No images found in directory ..."
        raise DatasetUnavailableError(f"image_folder {root}: {e}; expected {root}/<class_name>/*.jpg") from e
    return ArraySource("image_folder", (x_train, y_train), (x_test, y_test), len(names), augment)
