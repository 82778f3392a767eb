"""The papers' training/evaluation recipes: PCA colour augmentation, 10-crop, top-k error, and
model options from the command line."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import run_cli
from layerwise.data.augment import AUGMENTATIONS, PCAColour, augment_image, pca_colour
from layerwise.data.base import ArraySource
from layerwise.errors import ConfigError
from layerwise.training.evaluation import ten_crop_probabilities, ten_crops, top_k_error


def _planar_colour_images(n=64, size=6, seed=0):
    """RGB images whose colours lie in the plane B = R + G: the covariance has rank 2."""
    rng = np.random.default_rng(seed)
    rg = rng.uniform(0, 100, size=(n, size, size, 2))
    return np.concatenate([rg, rg.sum(-1, keepdims=True)], -1).astype(np.float32)


def test_pca_basis_is_the_eigendecomposition_of_the_channel_covariance():
    images = _planar_colour_images()
    pca = PCAColour.from_images(images)
    cov = np.cov(images.reshape(-1, 3), rowvar=False)
    for i in range(3):
        np.testing.assert_allclose(cov @ pca.directions[:, i], pca.eigenvalues[i] * pca.directions[:, i],
                                   atol=1e-2 * pca.eigenvalues[0])
    assert np.all(np.diff(pca.eigenvalues) <= 0) and pca.eigenvalues[2] < 1e-3 * pca.eigenvalues[0]
    np.testing.assert_allclose(pca.magnitudes, np.sqrt(pca.eigenvalues), rtol=1e-5)
    literal = PCAColour.from_images(images, scale="eigenvalue")
    np.testing.assert_allclose(literal.magnitudes, literal.eigenvalues)
    with pytest.raises(ConfigError):
        PCAColour.from_images(images, scale="cubits")


def test_pca_colour_shifts_every_pixel_by_one_vector_in_the_eigen_directions():
    images = _planar_colour_images()
    pca = PCAColour.from_images(images)
    image = images[0]
    out = pca_colour(image, pca, tf.constant([3, 4])).numpy()
    shift = out - image
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0, 0], shift.shape), atol=1e-4)  # colour only
    coords = pca.directions.T @ shift[0, 0]
    assert abs(coords[2]) < 1e-3 * np.abs(coords[:2]).max()  # nothing along the zero-variance direction
    assert np.abs(coords[:2]).min() > 0
    # alpha = coords / magnitudes is one N(0, 0.1) draw per component
    assert np.all(np.abs(coords[:2] / pca.magnitudes[:2]) < 0.6)


def test_pca_colour_is_seeded_and_zero_alpha_is_the_identity():
    images = _planar_colour_images()
    pca = PCAColour.from_images(images)
    a = pca_colour(images[0], pca, tf.constant([1, 2])).numpy()
    b = pca_colour(images[0], pca, tf.constant([1, 2])).numpy()
    c = pca_colour(images[0], pca, tf.constant([1, 3])).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(pca_colour(images[0], pca, tf.constant([1, 2]), alpha_std=0.0).numpy(), images[0])


def test_pca_policies_in_the_pipeline():
    assert {"pca", "crop_pca", "crop_flip_pca"} <= set(AUGMENTATIONS)
    images = _planar_colour_images(n=8)
    labels = np.arange(8) % 2
    source = ArraySource("toy", (images, labels), (images, labels), 2, augment="crop_flip_pca")
    assert source.pca is not None and source.pca.directions.shape == (3, 3)
    first = next(iter(source.train_batches(4, seed=0, epoch=0)))[0].numpy()
    again = next(iter(source.train_batches(4, seed=0, epoch=0)))[0].numpy()
    np.testing.assert_array_equal(first, again)
    with pytest.raises(ConfigError, match="PCAColour"):
        augment_image(tf.constant(images[0]), "pca", tf.constant([0, 0]))


def test_ten_crops_shapes_and_positions():
    images = np.arange(2 * 5 * 6 * 1, dtype=np.float32).reshape(2, 5, 6, 1)
    crops = ten_crops(images, (3, 4)).numpy()
    assert crops.shape == (10, 2, 3, 4, 1)
    np.testing.assert_array_equal(crops[0], images[:, :3, :4])  # top-left
    np.testing.assert_array_equal(crops[3], images[:, 2:, 2:])  # bottom-right
    np.testing.assert_array_equal(crops[4], images[:, 1:4, 1:5])  # centre
    np.testing.assert_array_equal(crops[5:], crops[:5, :, :, ::-1])  # mirrors
    with pytest.raises(ConfigError, match="does not fit"):
        ten_crops(images, (6, 4))


def _tiny_classifier(crop=(4, 4), channels=3, classes=5):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((*crop, channels))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(classes)(x))


def test_ten_crop_of_a_crop_invariant_model_is_its_single_crop_answer():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(inputs)))
    colours = np.random.default_rng(0).normal(size=(7, 1, 1, 3)).astype(np.float32)
    images = np.broadcast_to(colours, (7, 6, 6, 3)).copy()  # constant images: every crop is the same
    probs = ten_crop_probabilities(model, images, (4, 4), batch_size=3)
    single = tf.nn.softmax(model(images[:, 1:5, 1:5])).numpy()
    np.testing.assert_allclose(probs, single, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def test_ten_crop_averages_the_softmax_by_hand():
    model = _tiny_classifier()
    images = np.random.default_rng(1).normal(size=(3, 6, 7, 3)).astype(np.float32)
    windows = [(0, 0), (0, 3), (2, 0), (2, 3), (1, 1)]
    by_hand = []
    for flip in (False, True):
        for y, x in windows:
            crop = images[:, y: y + 4, x: x + 4]
            crop = crop[:, :, ::-1] if flip else crop
            by_hand.append(tf.nn.softmax(model(crop)).numpy())
    np.testing.assert_allclose(ten_crop_probabilities(model, images, (4, 4), batch_size=2),
                               np.mean(by_hand, 0), rtol=1e-5, atol=1e-6)


def test_top_k_error():
    scores = np.array([[0.1, 0.5, 0.4], [0.6, 0.3, 0.1], [0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    labels = np.array([1, 1, 0, 2])
    assert top_k_error(scores, labels, 1) == pytest.approx(3 / 4)
    assert top_k_error(scores, labels, 2) == pytest.approx(2 / 4)  # row 2: 0 is last; row 3 tie -> 0, 1
    assert top_k_error(scores, labels, 3) == 0.0
    with pytest.raises(ConfigError):
        top_k_error(scores, labels, 4)
    with pytest.raises(ConfigError):
        top_k_error(scores, labels[:2], 1)


def test_model_options_parse_json_and_strings():
    from apps.train import parse_model_options

    parsed = parse_model_options(["width=8", "shortcut=B", "dropout=0.25", "lrn=false", "x=True",
                                  "conv_widths=[8, 16]", "beta=null"])
    assert parsed == {"width": 8, "shortcut": "B", "dropout": 0.25, "lrn": False, "x": True,
                      "conv_widths": [8, 16], "beta": None}
    with pytest.raises(ConfigError, match="key=value"):
        parse_model_options(["width"])


def test_cli_rejects_an_unknown_model_option(tmp_path):
    result = run_cli("apps.train", "--workdir", str(tmp_path / "r"), "--model", "resnet8",
                     "--model_option", "colour=blue", timeout=120)
    assert result.returncode == 2 and "does not take option(s) colour" in result.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["layerwise", "end_to_end"])
def test_small_resnet_trains_from_the_cli(tmp_path, mode):
    workdir = tmp_path / mode
    result = run_cli("apps.train", "--workdir", str(workdir), "--dataset", "digits", "--model", "resnet8",
                     "--model_option", "width=4", "--model_option", "stage_granularity=group",
                     "--mode", mode, "--epochs_per_stage", "1", "--aux_width", "8", "--batch_size", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"] == "resnet8" and config["model_options"]["width"] == 4
    stages = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    stages = [r for r in stages if r["event"] == "stage"]
    assert len(stages) == (4 if mode == "layerwise" else 1)
    assert stages[-1]["test_accuracy"] > 0.3, stages  # 4 epochs on 8x8 digits, chance is 0.1
