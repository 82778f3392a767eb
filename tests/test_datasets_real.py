"""File-backed datasets: TFDS (mocked), offline fail-fast, CIFAR pickles, image folders."""

import os
import pickle
import time

import numpy as np
import pytest
from conftest import tiny_config

from apps.runner import resolve
from layerwise.data import load_dataset
from layerwise.data import tfds as tfds_data
from layerwise.errors import DatasetUnavailableError
from layerwise.run.loading import load_data


def _check_contract(data, num_classes, shape):
    assert data.num_classes == num_classes and tuple(data.image_shape) == shape
    a = [y.numpy() for _, y in data.train_batches(4, seed=1, epoch=0)]
    b = [y.numpy() for _, y in data.train_batches(4, seed=1, epoch=0)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b)) and len(a) == data.num_train // 4
    x, _ = next(iter(data.eval_batches("test", 8)))
    assert x.shape[1:] == shape and x.dtype.name == "float32"
    assert len(data.labels("test")) == data.num_test


def test_tfds_cifar10_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        data = load_dataset("cifar10", data_dir=str(tmp_path))
        _check_contract(data, 10, (32, 32, 3))


def test_tfds_imagenette_streams_with_imagenet_preprocessing(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8):
        data = load_dataset("imagenette", data_dir=str(tmp_path), image_size=32)
        _check_contract(data, 10, (32, 32, 3))


def test_unprepared_tfds_fails_fast_with_instructions_when_its_hosts_do_not_answer(tmp_path, monkeypatch):
    asked = []
    monkeypatch.setattr(tfds_data, "hosts_reachable", lambda hosts: asked.append(hosts) or False)
    start = time.perf_counter()
    with pytest.raises(DatasetUnavailableError, match="storage.googleapis.com.*did not answer.*download_and_prepare"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    # fast means no network wait at all (a download would stall for minutes); the bound allows a loaded machine
    assert time.perf_counter() - start < 30 and asked and asked[0][0] == "storage.googleapis.com"


def test_an_unresolvable_host_is_unreachable_within_the_timeout():
    start = time.perf_counter()
    assert not tfds_data.hosts_reachable(["tfds.invalid"], timeout=2)
    assert time.perf_counter() - start < 2 + 10  # the timeout, and slack for a loaded machine (not minutes)


def test_unprepared_tfds_downloads_when_its_hosts_answer_unless_forbidden(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    monkeypatch.setattr(tfds_data, "hosts_reachable", lambda hosts: True)
    prepared = []

    def download_and_prepare(builder, *args, **kwargs):
        prepared.append(builder.name)
        raise RuntimeError("downloading")  # stands in for the network

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
    with pytest.raises(RuntimeError, match="downloading"):
        load_dataset("fashion_mnist", data_dir=str(tmp_path))
    assert prepared == ["fashion_mnist"]
    monkeypatch.setattr(tfds_data, "hosts_reachable", lambda hosts: pytest.fail("--download=false asks no host"))
    with pytest.raises(DatasetUnavailableError, match=r"downloads are off \(--download=false\)"):
        load_data(resolve(tiny_config(dataset="fashion_mnist", data_dir=str(tmp_path))), download=False)
    assert prepared == ["fashion_mnist"]


def test_unprepared_imagenet_names_the_tars(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="ILSVRC2012_img_train.tar"):
        load_dataset("imagenet2012", data_dir=str(tmp_path))


def _write_cifar_pickle(path, n, seed, label_key=b"labels"):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=n)]
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels" if label_key == b"labels" else label_key: labels, b"data": data}, f)
    return data, labels


def test_local_cifar10_pickles_in_the_real_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    written = [_write_cifar_pickle(root / f"data_batch_{i}", 6, i) for i in range(1, 6)]
    _write_cifar_pickle(root / "test_batch", 5, 9)
    data = load_dataset("cifar10", data_dir=str(tmp_path), augment="none", trust_pickle=True)
    assert data.num_train == 30 and data.num_test == 5
    x, y = data.arrays("train")
    flat, labels = written[0]
    # channel planes R, G, B of 32x32, row-major
    assert x[0, 0, 1, 0] == flat[0, 1] and x[0, 0, 0, 1] == flat[0, 1024] and x[0, 1, 0, 2] == flat[0, 2048 + 32]
    assert list(y[:6]) == labels
    _check_contract(data, 10, (32, 32, 3))


def test_local_cifar_missing_batch_says_what_to_do(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    _write_cifar_pickle(root / "test_batch", 5, 9)
    with pytest.raises(DatasetUnavailableError, match="data_batch_1"):
        load_dataset("cifar10", data_dir=str(tmp_path), trust_pickle=True)


def test_image_folder_from_generated_pngs(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"]):
        os.makedirs(tmp_path / name)
        for i in range(5):
            img = np.full((12, 10, 3), 40 + 150 * c, np.uint8) + rng.integers(0, 20, (12, 10, 3), dtype=np.uint8)
            keras.utils.save_img(str(tmp_path / name / f"{i}.png"), img, scale=False)
    data = load_dataset("image_folder", data_dir=str(tmp_path), image_size=8, augment="none")
    assert data.num_classes == 2 and data.num_train == 8 and data.num_test == 2
    x, y = data.arrays("train")
    assert x.shape == (8, 8, 8, 3)
    assert np.all((x.mean(axis=(1, 2, 3)) > 120) == (y == 1))  # labels follow the folders
    with pytest.raises(DatasetUnavailableError):
        load_dataset("image_folder", data_dir=str(tmp_path / "nothing"))
