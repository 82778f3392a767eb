"""``layerwise.fit`` speaks ``keras.Model.fit``'s vocabulary (issue 22, item 2): ``fit(network, x, y)``,
``validation_data``, ``validation_split``, ``shuffle``, ``verbose``, a did-you-mean for unknown
keywords, ``Result.history`` as ``History.history``, and compiled classifiers."""

import glob
import json
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import digit_arrays, tiny_cnn

import layerwise
from layerwise.run.runlog import parse_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

EPOCHS_PER_STAGE = 2


def small_network(seed: int = 0) -> layerwise.StagedNetwork:
    """A two-stage functional CNN on 8x8 digits, the same weights for the same seed."""
    return layerwise.split_model(tiny_cnn(seed), ["relu1"])


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:1000], y[:1000], x[1000:1400], y[1000:1400]


def quiet(**changes):
    """fit's keywords of every run here: small, float32 (exact on every machine), silent."""
    return {"epochs_per_stage": EPOCHS_PER_STAGE, "batch_size": 64, "precision": "float32", "verbose": 0,
            "head": layerwise.AuxHead(k=1, width=8), **changes}


# ------------------------------------------------------------------------------ keywords
@pytest.mark.parametrize("keyword, suggestion", [
    ("epochs", "epochs_per_stage"), ("learning_rate", "lr"), ("validation_fractoin", "validation_fraction"),
    ("batchsize", "batch_size"),
])
def test_an_unknown_keyword_gets_one_line_with_the_closest_name(digits, keyword, suggestion):
    x, y, _, _ = digits
    with pytest.raises(layerwise.ConfigError) as error:
        layerwise.fit(small_network(), x, y, **{keyword: 1})
    message = str(error.value)
    assert f"did you mean {suggestion!r}" in message
    assert "\n" not in message and len(message) < 200


def test_data_given_the_wrong_way_is_refused_before_training(digits):
    x, y, _, _ = digits
    with pytest.raises(layerwise.ConfigError, match="labels y are missing"):
        layerwise.fit(small_network(), x)
    with pytest.raises(layerwise.ConfigError, match="y must not be given when x is a dataset"):
        layerwise.fit(small_network(), tf.data.Dataset.from_tensor_slices((x, y)).batch(64), y)
    with pytest.raises(layerwise.ConfigError, match="class_weight is not supported yet"):
        layerwise.fit(small_network(), x, y, class_weight={0: 2.0})
    with pytest.raises(layerwise.ConfigError, match="validation_data or validation_split, not both"):
        layerwise.fit(small_network(), x, y, validation_split=0.2, validation_data=(x, y))
    with pytest.raises(layerwise.ConfigError, match="fit does not take keras.Model.fit's 'initial_epoch': a run "
                       "resumes where it stopped when fit is called again with the same workdir"):
        layerwise.fit(small_network(), x, y, initial_epoch=1)
    with pytest.raises(layerwise.ConfigError, match="verbose must be 0, 1, 2 or 'auto'"):
        layerwise.fit(small_network(), x, y, verbose=3)


# ------------------------------------------------------------------------------ x, y and History
def test_fit_takes_x_and_y_prints_nothing_at_verbose_0_and_returns_a_keras_history(digits, capsys):
    x, y, xt, yt = digits
    result = layerwise.fit(small_network(), x, y, test=(xt, yt), **quiet(precision="auto"))
    assert capsys.readouterr().out == ""  # not even the precision line
    history, epochs = result.history, result.epochs
    assert isinstance(history, dict)
    assert history["stage"] == [0, 0, 1, 1] and history["epoch"] == [0, 1, 0, 1]
    # Keras's names for what the run measured (no validation data: no val_ keys), and where each epoch is
    assert set(history) == {"loss", "accuracy", "test_accuracy", "lr", "stage", "epoch"}
    assert all(len(values) == 2 * EPOCHS_PER_STAGE for values in history.values())
    assert history["loss"] == [r["loss"] for r in epochs]
    assert history["accuracy"] == [r["accuracy"] for r in epochs]
    assert history["test_accuracy"] == [r["test_accuracy"] for r in epochs]
    assert [r["event"] for r in result.records] == ["stage", "stage"]


def test_validation_split_holds_out_the_last_fraction_and_classifiers_evaluate_as_recorded(digits):
    x, y, xt, yt = digits
    result = layerwise.fit(small_network(), x, y, validation_split=0.2, test=(xt, yt), keep_best=True,
                           **quiet(lr=0.2))
    history = result.history
    assert len(history["val_accuracy"]) == len(history["val_loss"]) == 2 * EPOCHS_PER_STAGE
    held_out = x[800:], y[800:]  # Keras: the last 20 %, before any shuffling
    last = [a for a, stage in zip(history["val_accuracy"], history["stage"]) if stage == 1]
    classifier = result.classifiers[-1]
    loss, accuracy = classifier.evaluate(*held_out, batch_size=128, verbose=0)
    assert accuracy == pytest.approx(max(last), abs=1e-6)  # keep_best kept the stage's best epoch
    _, test_accuracy = classifier.evaluate(xt, yt, batch_size=128, verbose=0)
    assert test_accuracy == pytest.approx(result.records[-1]["test_accuracy"], abs=1e-6)
    _, ensemble_accuracy = result.ensemble().evaluate(xt, yt, batch_size=128, verbose=0)
    assert ensemble_accuracy == pytest.approx(result.records[-1]["ensemble_accuracy"], abs=1e-6)


def test_validation_fraction_is_held_out_for_keep_best_and_the_plateau_schedule(digits):
    x, y, _, _ = digits
    result = layerwise.fit(small_network(), x, y, validation_fraction=0.2, keep_best=True, lr_schedule="plateau",
                           plateau_patience=1, **quiet())
    assert len(result.history["val_accuracy"]) == 2 * EPOCHS_PER_STAGE
    assert all(0.0 < a <= 1.0 for a in result.history["val_accuracy"])


def test_shuffle_false_trains_on_the_arrays_in_their_order(digits):
    x, y, _, _ = digits
    # a pipeline is used as it is: the same batches in the same order as unshuffled arrays
    in_order = tf.data.Dataset.from_tensor_slices((x, y)).batch(64, drop_remainder=True)
    keywords = quiet()
    del keywords["batch_size"]
    reference = layerwise.fit(small_network(), in_order, **keywords)
    unshuffled = layerwise.fit(small_network(), x, y, shuffle=False, **quiet())
    shuffled = layerwise.fit(small_network(), x, y, **quiet())
    np.testing.assert_allclose(unshuffled.history["loss"], reference.history["loss"], rtol=1e-5)
    assert not np.allclose(shuffled.history["loss"], reference.history["loss"], rtol=1e-3)


# ------------------------------------------------------------------------------ one metric vocabulary
def test_records_metrics_jsonl_and_tensorboard_use_kerass_metric_names(digits, tmp_path):
    x, y, xt, yt = digits
    workdir = tmp_path / "run"
    result = layerwise.fit(small_network(), x, y, validation_split=0.2, test=(xt, yt), workdir=str(workdir),
                           **quiet(epochs_per_stage=1))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in lines if r["event"] == "epoch"]
    stages = [r for r in lines if r["event"] == "stage"]
    assert len(epochs) == len(stages) == 2
    for record in epochs:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "test_accuracy"} <= set(record)
    for record in stages:
        assert {"accuracy", "val_accuracy", "test_accuracy", "ensemble_accuracy"} <= set(record)
    old_names = {"train_acc", "val_acc", "test_acc", "ensemble_acc"}
    assert not old_names & {key for r in lines + result.records + result.epochs for key in r}
    tags = {value.tag for path in glob.glob(str(workdir / "tensorboard" / "events.out.tfevents.*"))
            for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
    assert {"stage_00/loss", "stage_00/accuracy", "stage_00/test_accuracy"} <= tags


def test_records_of_a_run_written_with_the_old_names_read_in_kerass():
    lines = ['{"event": "epoch", "train_acc": 0.5, "val_acc": 0.25, "test_acc": 0.75, "loss": 1.0}',
             '{"event": "stage", "test_acc": 0.75, "ensemble_acc": 0.8}']
    assert parse_records(lines) == [
        {"event": "epoch", "accuracy": 0.5, "val_accuracy": 0.25, "test_accuracy": 0.75, "loss": 1.0},
        {"event": "stage", "test_accuracy": 0.75, "ensemble_accuracy": 0.8},
    ]


TERMINAL_SCRIPT = """
import keras, layerwise
from sklearn.datasets import load_digits
digits = load_digits()
x, y = (digits.images[..., None] / 16.0).astype("float32")[:512], digits.target[:512]
for verbose in (2, 1):
    print(f"== verbose {verbose}", flush=True)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.ReLU(name="relu1")(keras.layers.Conv2D(4, 3, padding="same")(inputs))
    outputs = keras.layers.Dense(10)(keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(h)))
    network = layerwise.split_model(keras.Model(inputs, outputs), ["relu1"])
    layerwise.fit(network, x, y, batch_size=32, epochs_per_stage=1, verbose=verbose, precision="float32",
                  head=layerwise.AuxHead(k=1, width=4))
"""


@pytest.mark.slow  # ~20 s: a fresh process imports TensorFlow
def test_verbose_2_gives_a_line_per_epoch_and_no_progress_bar_even_on_a_terminal(tmp_path):
    """Keras's verbose=2 on a terminal (a pseudo-terminal here): the epoch lines, no bar; 1 draws it."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", TERMINAL_SCRIPT], stdout=terminal, stderr=subprocess.DEVNULL,
                               cwd=REPO, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=300) == 0
    two, one = output.decode("utf-8", "replace").split("== verbose 1")
    assert two.count("epoch 1/1: loss") == 2 and one.count("epoch 1/1: loss") == 2
    bar = "16/16"  # Keras's Progbar draws "<step>/<steps>" as it goes
    assert bar not in two and bar in one
