"""Inputs a Python user gets wrong (issue 22, item 5; issue 25, point 4): one ``ConfigError`` line
naming the argument and the fix, before anything trains or is written; the default head on 1x1
features; ``split_model`` on custom layers and on an ``at`` of the wrong type."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import layerwise
from layerwise.nn.flops import layer_flops
from conftest import digit_arrays

EPOCH = dict(epochs_per_stage=1, batch_size=32, verbose=0)


def digits_model(seed: int = 0) -> keras.Model:
    """8x8x1 -> conv (8x8) -> strided conv (4x4) -> classifier."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:64], y[:64]


def with_label(y, value):
    y = y.copy()
    y[3] = value
    return y


def batches(x, y, size=32):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(size)


# (case, (x, y) -> fit's keyword arguments, what the one line must say)
BAD_INPUTS = [
    ("one_hot_arrays", lambda x, y: {"train": (x, np.eye(10)[y])},
     r"^the training labels must be integer class ids.*one-hot.*shape \(64, 10\): pass y\.argmax\(-1\)$"),
    ("one_hot_int_arrays", lambda x, y: {"train": (x, np.eye(10, dtype="int64")[y])},
     r"one-hot.*pass y\.argmax\(-1\)"),
    ("label_99_arrays", lambda x, y: {"train": (x, with_label(y, 99))},
     r"^the training labels must be class ids 0\.\.9 \(the network has 10 classes\), got 99 .*100 outputs$"),
    ("label_minus_1_arrays", lambda x, y: {"train": (x, with_label(y, -1))},
     r"^the training labels must be class ids 0\.\.9 \(the network has 10 classes\), got -1 .*relabel"),
    ("label_10_validation", lambda x, y: {"train": (x, y), "validation": (x, with_label(y, 10))},
     r"^the validation labels must be class ids 0\.\.9.*got 10 "),
    ("label_99_test", lambda x, y: {"train": (x, y), "test": (x, with_label(y, 99))},
     r"^the test labels must be class ids 0\.\.9.*got 99 "),
    ("channels_first_arrays", lambda x, y: {"train": (np.moveaxis(x, -1, 1), y)},
     r"^the training images have shape \(1, 8, 8\) \(channels first\) but the network takes channels-last "
     r"\(H, W, C\) = \(8, 8, 1\): pass np\.moveaxis\(x, 1, -1\)"),
    ("9x9_arrays", lambda x, y: {"train": (np.zeros((64, 9, 9, 1), "float32"), y)},
     r"^the training images have shape \(9, 9, 1\) but the network takes \(8, 8, 1\)"),
    ("one_hot_pipeline", lambda x, y: {"train": batches(x, np.eye(10, dtype="int64")[y])},
     r"one-hot.*shape \(None, 10\): pass dataset\.map\(lambda x, y: \(x, tf\.argmax\(y, -1\)\)\)"),
    ("label_99_pipeline_first_batch", lambda x, y: {"train": batches(x, with_label(y, 99))},
     r"^the training labels must be class ids 0\.\.9 \(the network has 10 classes\), got 99 "),
    ("label_minus_1_pipeline_validation", lambda x, y: {"train": batches(x, y), "validation": batches(x, y - 1)},
     r"^the validation labels must be class ids 0\.\.9.*got -1 "),
    ("channels_first_pipeline", lambda x, y: {"train": batches(np.moveaxis(x, -1, 1), y)},
     r"channels first.*\(H, W, C\) = \(8, 8, 1\)"),
    ("9x9_pipeline", lambda x, y: {"train": batches(np.zeros((64, 9, 9, 1), "float32"), y)},
     r"^the training images have shape \(9, 9, 1\) but the network takes \(8, 8, 1\)"),
]


@pytest.mark.parametrize("case, arguments, message", BAD_INPUTS, ids=[row[0] for row in BAD_INPUTS])
def test_inputs_a_user_gets_wrong_get_one_config_error_line_before_anything_is_written(
        digits, tmp_path, case, arguments, message):
    x, y = digits
    network = layerwise.split_model(digits_model(), ["relu1"])
    workdir = tmp_path / "run"
    kwargs = arguments(x, y)
    pipeline = isinstance(kwargs["train"], tf.data.Dataset)  # brings its own batch size
    options = {k: v for k, v in EPOCH.items() if not (pipeline and k == "batch_size")}
    with pytest.raises(layerwise.ConfigError) as error:
        layerwise.fit(network, kwargs.pop("train"), workdir=str(workdir), log=lambda line: None, **kwargs, **options)
    assert len(str(error.value).splitlines()) == 1
    assert re.search(message, str(error.value)), str(error.value)
    assert not workdir.exists()


def test_a_label_out_of_range_in_a_later_batch_of_a_pipeline_stops_fit_with_one_config_error_line(digits):
    x, y = digits
    labels = y.copy()
    labels[40] = 99  # the second batch of 32: not seen before training starts
    network = layerwise.split_model(digits_model(), ["relu1"])
    with pytest.raises(layerwise.ConfigError) as error:
        layerwise.fit(network, batches(x, labels), epochs_per_stage=1, verbose=0, log=lambda line: None)
    assert str(error.value) == (
        "the training dataset yields labels outside 0..9 (the network has 10 classes), in a batch after the "
        "first: relabel the data, or give the model more outputs"
    )


def one_by_one_model() -> keras.Model:
    """8 -> 4 -> 2 -> 1 -> 1: the stage cut after relu2 ends on 1x1 features."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for n, stride in enumerate((2, 2, 2, 1)):
        x = keras.layers.Conv2D(4, 3, strides=stride, padding="same", name=f"conv{n}")(x)
        x = keras.layers.ReLU(name=f"relu{n}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))


def convs(model: keras.Model) -> int:
    return sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers)


def test_the_default_head_turns_linear_on_1x1_features_says_so_once_and_a_given_head_is_refused_in_python_words(
        digits):
    x, y = digits
    network = layerwise.split_model(one_by_one_model(), ["relu0", "relu2"])
    assert [network.output_shape(j)[:2] for j in range(2)] == [(4, 4), (1, 1)]
    lines = []
    result = layerwise.fit(network, (x, y), epochs_per_stage=1, batch_size=32, log=lines.append)
    said = [line for line in lines if "linear head (k=1)" in line]
    assert len(said) == 1 and "stage(s) 1 " in said[0], lines
    assert convs(result.heads[0]) == 1 and convs(result.heads[1]) == 0  # k=2 at 4x4, k=1 at 1x1
    assert result.classifiers[1].predict(x[:2], verbose=0).shape == (2, 10)
    network = layerwise.split_model(one_by_one_model(), ["relu0", "relu2"])
    with pytest.raises(layerwise.ConfigError) as error:
        layerwise.fit(network, (x, y), epochs_per_stage=1, batch_size=32, head=layerwise.AuxHead(k=2, width=8),
                      verbose=0, log=lines.append)
    message = str(error.value)
    assert "stage 1's features are 1x1" in message and "head=layerwise.AuxHead(k=1" in message, message
    assert "--" not in message  # Python arguments, not the CLI's flags


@keras.saving.register_keras_serializable(package="test_keras_inputs")
class CustomConv(keras.layers.Layer):
    """A 3x3 'same' convolution written with tf.nn: a layer the FLOP counter does not know."""

    def __init__(self, filters: int, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], self.filters), name="kernel")

    def call(self, x):
        return tf.nn.relu(tf.nn.conv2d(x, self.kernel, 1, "SAME"))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def custom_model() -> keras.Model:
    """Four custom convs (1 -> 8 channels, then 8 -> 8 three times) and a classifier: 3 valid cuts."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = inputs
    for name in "abcd":
        x = CustomConv(8, name=name)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))


def test_split_model_balances_custom_layers_by_what_they_compute():
    model = custom_model()
    by_hand = {"a": 2 * 64 * 9 * 1 * 8, "b": 2 * 64 * 9 * 8 * 8, "c": 2 * 64 * 9 * 8 * 8, "d": 2 * 64 * 9 * 8 * 8}
    assert {name: layer_flops(model.get_layer(name)) for name in "abcd"} == by_hand
    # a+b | c | d is the balanced partition (largest stage 82,944 FLOPs); 4 stages take every cut
    assert layerwise.split_model(model, 3).options["split_at"] == ["b", "c"]
    assert layerwise.split_model(model, 4).options["split_at"] == ["a", "b", "c"]
    assert layerwise.split_model(model, 2).options["split_at"] == ["b"]


@pytest.mark.parametrize("at", [2.5, True, False, None, "relu1", [1], ("relu1", 2)], ids=repr)
def test_split_model_refuses_an_at_that_is_neither_a_count_nor_layer_names(at):
    with pytest.raises(layerwise.ConfigError,
                       match="^at must be a positive int number of stages or a list of layer names, got "):
        layerwise.split_model(digits_model(), at)


def test_split_model_takes_numpy_counts_and_tuples_of_names():
    assert layerwise.split_model(digits_model(), np.int64(2)).num_stages == 2
    assert layerwise.split_model(digits_model(), ("relu1",)).options["split_at"] == ["relu1"]
