"""``validation_freq`` (``keras.Model.fit``'s meaning): the held-out splits are evaluated after
every N-th epoch of each stage and after its last; the training is the same."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import digit_arrays, run_cli, tiny_cnn

import layerwise
from layerwise.errors import ConfigError

EPOCHS = 3


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:512], y[:512], x[512:768], y[512:768]


class EpochLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.logs = []

    def on_epoch_end(self, epoch, logs=None):
        self.logs.append(dict(logs or {}))


def fit(digits, **changes):
    x, y, xv, yv = digits
    network = layerwise.split_model(tiny_cnn(), ["relu1"])
    return layerwise.fit(network, x, y, validation_data=(xv, yv), epochs_per_stage=EPOCHS, batch_size=64,
                         precision="float32", verbose=0, head=layerwise.AuxHead(k=1, width=8), **changes)


def test_every_nth_epoch_and_each_stages_last_are_evaluated_and_the_training_is_the_same(digits):
    every = fit(digits)
    callback = EpochLogs()
    second = fit(digits, validation_freq=2, callbacks=[callback])
    evaluated = [r["val_accuracy"] is not None for r in second.epochs]
    assert evaluated == [False, True, True] * 2  # epoch 2 of each stage (freq 2) and epoch 3 (the stage's last)
    # the epochs it evaluates read as the run that evaluates every epoch; the losses are the same
    for a, b, was in zip(every.epochs, second.epochs, evaluated):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        if was:
            assert a["val_accuracy"] == pytest.approx(b["val_accuracy"]) and a["val_loss"] == pytest.approx(b["val_loss"])
    assert [r["val_accuracy"] for r in every.records] == pytest.approx([r["val_accuracy"] for r in second.records])
    # Keras callbacks see no val_ logs on the epochs without evaluation, as under keras.Model.fit
    assert ["val_accuracy" in logs for logs in callback.logs] == evaluated
    for weights_a, weights_b in zip(every.network.stages[1].get_weights(), second.network.stages[1].get_weights()):
        np.testing.assert_allclose(weights_a, weights_b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("changes, named", [
    ({"keep_best": True}, "keep_best"),
    ({"lr_schedule": "plateau"}, "lr_schedule='plateau'"),
])
def test_options_that_read_validation_accuracy_every_epoch_are_refused_with_it(digits, changes, named):
    with pytest.raises(ConfigError, match=f"validation_freq=2 .*{named}.*use validation_freq=1"):
        fit(digits, validation_freq=2, **changes)
    with pytest.raises(ConfigError, match="validation_freq must be >= 1"):
        fit(digits, validation_freq=0)


def test_the_cli_takes_it_and_refuses_zero_in_one_line(tmp_path):
    result = run_cli("apps.train", "--dry_run", "--validation_freq", "0", "--workdir", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].count("validation_freq must be >= 1") == 1, result.stderr
