"""Datasets from local files: CIFAR (binary, or python pickles on request) and image folders.

- CIFAR-10/100 in the *binary* layout of https://www.cs.toronto.edu/~kriz/cifar.html, read with
  NumPy and nothing else: ``cifar-10-batches-bin/{data_batch_1..5, test_batch}.bin`` (records of
  1 label byte + 3072 pixel bytes: channel planes R, G, B of 32 x 32, row-major) and
  ``cifar-100-binary/{train, test}.bin`` (2 label bytes, coarse then fine, + 3072). Used by
  ``cifar10``/``cifar100`` when ``data_dir`` holds them.
- The *python* layout (``cifar-10-batches-py``, ``cifar-100-python``) is a pickle, and unpickling
  runs whatever code the file names (Python docs, ``pickle``: "never unpickle data that could have
  come from an untrusted or unauthenticated source"). It is read only with ``trust_pickle=True``
  (``--trust_pickle``), with a warning; otherwise the loader says to download the binary version.
- ``image_folder``: ``data_dir/<class_name>/*.jpg|png`` read with
  ``keras.utils.image_dataset_from_directory``; ``data_dir/train`` and ``data_dir/test``
  subfolders give the split (with the same class folders), otherwise a seeded stratified 20% test
  split is taken. Damaged or mislabelled files are refused with their path before training.
"""

from __future__ import annotations

import os
import pickle
import sys

import numpy as np

from layerwise.data.base import DATASETS, ArraySource, stratified_split
from layerwise.errors import DatasetUnavailableError

PIXELS = 3 * 32 * 32
# name: (folder, train files, test files, label bytes per record, which label byte, classes)
CIFAR_BINARY = {
    "cifar10": ("cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in range(1, 6)], ["test_batch.bin"], 1, 0, 10),
    "cifar100": ("cifar-100-binary", ["train.bin"], ["test.bin"], 2, 1, 100),
}
CIFAR_LAYOUT = {  # the python-pickle version
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100),
}
ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}


def _find(folder: str, marker: str, data_dir: str) -> str | None:
    data_dir = os.path.expanduser(data_dir)
    for candidate in (os.path.join(data_dir, folder), data_dir):
        if os.path.exists(os.path.join(candidate, marker)):
            return candidate
    return None


def find_cifar_binary(name: str, data_dir: str) -> str | None:
    """The binary-version directory of ``name`` in (or at) ``data_dir``, or ``None``."""
    folder, _, test_files, *_ = CIFAR_BINARY[name]
    return _find(folder, test_files[0], data_dir)


def find_cifar_pickles(name: str, data_dir: str) -> str | None:
    """The pickle directory of ``name`` in (or at) ``data_dir``, or ``None``."""
    return _find(CIFAR_LAYOUT[name][0], CIFAR_LAYOUT[name][2][0], data_dir)


def has_cifar_files(name: str, data_dir: str) -> bool:
    """``data_dir`` holds either version of CIFAR ``name``."""
    return bool(find_cifar_binary(name, data_dir) or find_cifar_pickles(name, data_dir))


def _read_cifar_binary(path: str, label_bytes: int, label_index: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + PIXELS
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise DatasetUnavailableError(f"cannot read {path} ({e.strerror or e})") from e
    if raw.size == 0 or raw.size % record:
        raise DatasetUnavailableError(
            f"{path} is not a CIFAR binary batch ({raw.size} bytes is not a whole number of {record}-byte records); "
            "re-extract the archive"
        )
    rows = raw.reshape(-1, record)
    labels = rows[:, label_index].astype(np.int32)
    if labels.max() >= num_classes:
        raise DatasetUnavailableError(f"{path} has label {labels.max()} for {num_classes} classes: it is not this dataset")
    return rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_cifar_pickle(path: str, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")  # trusted by the caller: trust_pickle=True
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int32)
    except (OSError, pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as e:
        raise DatasetUnavailableError(f"{path} is not a CIFAR python pickle ({type(e).__name__}: {e})") from e
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_all(root: str, files: list[str], name: str, read) -> tuple[np.ndarray, np.ndarray]:
    missing = [f for f in files if not os.path.exists(os.path.join(root, f))]
    if missing:
        raise DatasetUnavailableError(f"{root} lacks {', '.join(missing)}: re-extract the {name} archive")
    parts = [read(os.path.join(root, f)) for f in files]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_cifar_files(name: str, data_dir: str, augment: str = "crop_flip", trust_pickle: bool = False) -> ArraySource:
    """Reads CIFAR-10/100 from ``data_dir``: the binary version, or the python pickles when
    ``trust_pickle`` (with a warning on stderr).

    Raises:
        DatasetUnavailableError: no CIFAR directory, a missing or damaged batch file, or only
            the pickle version without ``trust_pickle``.
    """
    binary = find_cifar_binary(name, data_dir)
    if binary is not None:
        _, train_files, test_files, label_bytes, label_index, num_classes = CIFAR_BINARY[name]

        def read(path):
            return _read_cifar_binary(path, label_bytes, label_index, num_classes)

        train, test = _read_all(binary, train_files, name, read), _read_all(binary, test_files, name, read)
        return ArraySource(name, train, test, num_classes, augment)
    pickles = find_cifar_pickles(name, data_dir)
    if pickles is None:
        raise DatasetUnavailableError(
            f"no {CIFAR_BINARY[name][0]}/ in {data_dir}: download {ARCHIVES[name]} (the binary version) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it there"
        )
    if not trust_pickle:
        raise DatasetUnavailableError(
            f"{pickles} holds the python version of {name}: pickles, which run code when they are loaded, so they "
            f"are not read by default. Download {ARCHIVES[name]} (the binary version) from "
            "https://www.cs.toronto.edu/~kriz/cifar.html and extract it in --data_dir, or pass --trust_pickle if "
            "you trust these files"
        )
    print(f"warning: unpickling {pickles} (--trust_pickle): a pickle can run any code; only load files you trust",
          file=sys.stderr)
    _, train_files, test_files, label_key, num_classes = CIFAR_LAYOUT[name]

    def read_pickle(path):
        return _read_cifar_pickle(path, label_key)

    train, test = _read_all(pickles, train_files, name, read_pickle), _read_all(pickles, test_files, name, read_pickle)
    return ArraySource(name, train, test, num_classes, augment)


# The files ``keras.utils.image_dataset_from_directory`` reads, and the first bytes of each format
# ``tf.io.decode_image`` decodes (the formats' specifications: PNG 5.2, JPEG SOI, GIF87a/89a, BMP,
# RIFF/WEBP, JPEG XL codestream and container).
IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM", b"\xff\x0a",
                    b"\x00\x00\x00\x0cJXL ")


def _is_image_header(head: bytes) -> bool:
    return head.startswith(IMAGE_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def class_folders(path: str) -> list[str]:
    """The class folders of an image folder, as Keras lists them: sorted, not hidden, symlinks to
    folders included (they are read like folders).

    Raises:
        DatasetUnavailableError: a class-level symlink to nothing, or a class folder without one
            image (it would be a class the network can never see).
    """
    names = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if name.startswith("."):
            continue
        if os.path.islink(full) and not os.path.exists(full):
            raise DatasetUnavailableError(
                f"image_folder: {full} is a symbolic link to {os.readlink(full)!r}, which does not exist; "
                "fix or remove the link"
            )
        if os.path.isdir(full):
            names.append(name)
    for name in names:
        if not any(f.lower().endswith(IMAGE_EXTENSIONS) for _, _, found in os.walk(os.path.join(path, name))
                   for f in found):
            raise DatasetUnavailableError(
                f"image_folder: class folder {os.path.join(path, name)} holds no images "
                f"({', '.join(IMAGE_EXTENSIONS)}); add images to it or remove it"
            )
    return names


def check_image_headers(paths) -> None:
    """Reads the first 12 bytes of every file: a file named like an image that is not one (a text
    file called ``x.png``) is refused with its path before anything is decoded.

    Raises:
        DatasetUnavailableError: naming the first such file.
    """
    for path in paths:
        try:
            with open(path, "rb") as f:
                head = f.read(12)
        except OSError as e:
            raise DatasetUnavailableError(f"image_folder: cannot read {path} ({e.strerror or e})") from e
        if not _is_image_header(head):
            raise DatasetUnavailableError(
                f"image_folder: {path} is not an image (it starts with {head[:8]!r}); "
                f"remove it from the class folder or replace it with a {', '.join(IMAGE_EXTENSIONS)} image"
            )


def _first_undecodable(paths) -> tuple[str, str] | None:
    import tensorflow as tf

    for path in paths:
        try:
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        except tf.errors.OpError as e:
            return path, (e.message or str(e)).splitlines()[0]
    return None


def _read_folder(path: str, image_size: int, class_names=None):
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", class_names=class_names, image_size=(image_size, image_size),
        batch_size=256, shuffle=False, verbose=False,
    )
    check_image_headers(ds.file_paths)
    images, labels = [], []
    try:
        for x, y in ds.as_numpy_iterator():
            images.append(x)
            labels.append(y)
    except tf.errors.OpError as e:  # a damaged image behind a good header: find it (this path only)
        bad = _first_undecodable(ds.file_paths)
        where = f"{bad[0]} cannot be decoded ({bad[1]})" if bad else f"an image in {path} cannot be read ({e.message})"
        raise DatasetUnavailableError(
            f"image_folder: {where}; remove or replace that file"
        ) from e
    return ds.class_names, np.concatenate(images).astype(np.float32), np.concatenate(labels).astype(np.int32)


def _same_classes(train: str, test: str) -> list[str]:
    names, test_names = class_folders(train), class_folders(test)
    if names != test_names:
        only_test, only_train = sorted(set(test_names) - set(names)), sorted(set(names) - set(test_names))
        raise DatasetUnavailableError(
            f"image_folder: {train} and {test} have different class folders "
            f"(only in test: {', '.join(only_test) or 'none'}; only in train: {', '.join(only_train) or 'none'}); "
            "a class the network is not trained on cannot be tested, nor one never tested reported: "
            "give both the same class folders"
        )
    return names


@DATASETS.register("image_folder")
def load_image_folder(
    split_seed: int = 0, augment: str = "crop_flip", data_dir: str | None = None, image_size: int = 32
) -> ArraySource:
    """Images in ``data_dir/<class>/`` (or ``data_dir/{train,test}/<class>/``), resized to a square.

    Every file is checked before anything trains: a class folder without images, a link to
    nothing, a file named like an image that is not one, an image that cannot be decoded, or
    ``train/`` and ``test/`` with different class folders are each refused with one line naming
    the path. Files of other extensions (``notes.txt``) are not read; a symlinked class folder is
    read like a folder.

    Raises:
        DatasetUnavailableError: no ``data_dir``, no class folders with images in it, or one of the
            files or folders above.
    """
    if not data_dir or not os.path.isdir(os.path.expanduser(data_dir)):
        raise DatasetUnavailableError(
            f"image_folder needs --data_dir pointing at a folder of class_name/*.jpg, got {data_dir!r}"
        )
    root = os.path.expanduser(data_dir)
    try:
        if os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "test")):
            classes = _same_classes(os.path.join(root, "train"), os.path.join(root, "test"))
            names, x_train, y_train = _read_folder(os.path.join(root, "train"), image_size, class_names=classes)
            _, x_test, y_test = _read_folder(os.path.join(root, "test"), image_size, class_names=classes)
        else:
            names, x, y = _read_folder(root, image_size, class_names=class_folders(root) or None)
            train, test = stratified_split(y, 0.2, split_seed)
            x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    except ValueError as e:  # keras: "No images found in directory ..."
        raise DatasetUnavailableError(f"image_folder {root}: {e}; expected {root}/<class_name>/*.jpg") from e
    return ArraySource("image_folder", (x_train, y_train), (x_test, y_test), len(names), augment)
