"""A Keras user's habits work in ``layerwise.fit`` as under ``keras.Model.fit`` (issue 22, items 1
and 2): every standard callback, per stage where that is the meaning, and the optimizer the user
compiled or passed is the one that trains, recorded with the run.

Each test compares with what Keras itself does or with an independent computation (the
schedule's own values, the classifier's own accuracy), on the real 8x8 digits. The rest of the
issue's habits are pinned in ``test_keras_vocabulary.py`` (the vocabulary), ``test_keras_inputs.py``
(wrong inputs), ``test_keras_spec.py`` (the recorded spec) and ``test_keras_files_and_threads.py``
(``.keras`` files in a fresh process, threads).
"""

import csv
import glob
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import digit_arrays, tiny_cnn

import layerwise
from layerwise.errors import ConfigError, WorkdirMismatchError

EPOCHS_PER_STAGE = 2
BATCH_SIZE = 64


def small_network(model: keras.Model | None = None) -> layerwise.StagedNetwork:
    return layerwise.split_model(model or tiny_cnn(), ["relu1"])


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:640], y[:640], x[640:960], y[640:960]


def quiet(**changes):
    """fit's keywords of every run here: small, float32 (exact on every machine), silent."""
    return {"epochs_per_stage": EPOCHS_PER_STAGE, "batch_size": BATCH_SIZE, "precision": "float32", "verbose": 0,
            "head": layerwise.AuxHead(k=1, width=8), **changes}


def fit(digits, network=None, **changes):
    x, y, xv, yv = digits
    return layerwise.fit(network or small_network(), x, y, validation_data=(xv, yv), **quiet(**changes))


def keras_classes(model: keras.Model) -> set[str]:
    """The modules of every layer class in ``model``, nested models included."""
    found = set()
    for layer in model.layers:
        found.add(type(layer).__module__)
        if isinstance(layer, keras.Model):
            found |= keras_classes(layer)
    return found


# ------------------------------------------------------------------------------ learning rate
def test_reduce_lr_on_plateau_reduces_each_stages_learning_rate_and_restarts_at_every_stage(digits):
    # min_delta=10: no epoch after a stage's first improves, so with patience 1 the learning rate
    # halves after every epoch but a stage's first; a fresh stage starts from the base rate again.
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10)
    result = fit(digits, callbacks=[plateau], epochs_per_stage=3, lr_decay_every=0)
    assert result.history["stage"] == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(result.history["lr"], [0.05, 0.05, 0.025] * 2, rtol=1e-6)


def test_a_callback_that_sets_the_learning_rate_is_refused_where_a_schedule_moves_it(digits):
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss")
    with pytest.raises(ConfigError, match=r"ReduceLROnPlateau.*x0\.2 every 2 epoch.*lr_decay_every=0"):
        fit(digits, callbacks=[plateau], epochs_per_stage=3)
    decaying = keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.5))
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr)
    with pytest.raises(ConfigError, match="LearningRateScheduler.*ExponentialDecay.*float learning_rate"):
        fit(digits, callbacks=[scheduler], optimizer=decaying)


def test_learning_rate_scheduler_sets_the_rate_of_every_epoch_from_the_run_wide_epoch(digits):
    scheduler = keras.callbacks.LearningRateScheduler(lambda epoch, lr: 0.01 * (epoch + 1))
    result = fit(digits, callbacks=[scheduler], lr_decay_every=0)
    np.testing.assert_allclose(result.history["lr"], [0.01, 0.02, 0.03, 0.04], rtol=1e-6)


# ------------------------------------------------------------------------------ saving
def test_model_checkpoint_saves_each_stages_image_classifier_best_only_within_the_stage(digits, tmp_path):
    x, y, xv, yv = digits
    path = str(tmp_path / "stage{stage}.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(path, monitor="val_accuracy", save_best_only=True)
    result = fit(digits, callbacks=[checkpoint], epochs_per_stage=3)
    assert sorted(os.listdir(tmp_path)) == ["stage0.keras", "stage1.keras"]
    for stage in (0, 1):
        saved = keras.saving.load_model(str(tmp_path / f"stage{stage}.keras"))
        assert saved.input_shape == (None, 8, 8, 1) and saved.output_shape == (None, 10)  # images -> probabilities
        assert all(module.startswith("keras.") for module in keras_classes(saved))  # loads with Keras alone
        best = max(a for a, s in zip(result.history["val_accuracy"], result.history["stage"]) if s == stage)
        _, accuracy = saved.evaluate(xv, yv, verbose=0)  # compiled, as Result.classifiers are
        assert accuracy == pytest.approx(best, abs=1e-6)


def test_backup_and_restore_is_refused_with_a_pointer_to_workdir(digits, tmp_path):
    with pytest.raises(ConfigError, match="BackupAndRestore.*workdir.*resumes"):
        fit(digits, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert not os.listdir(tmp_path)


# ------------------------------------------------------------------------------ hooks and logs
def test_lambda_callback_gets_every_batch_and_validation_hook_with_running_metrics(digits):
    x, y, xv, yv = digits
    calls: dict[str, list] = {}

    def record(hook):
        return lambda *args: calls.setdefault(hook, []).append(args)

    hooks = ("on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_batch_end", "on_test_end")
    result = fit(digits, callbacks=[keras.callbacks.LambdaCallback(**{h: record(h) for h in hooks})])
    epochs = 2 * EPOCHS_PER_STAGE
    steps = len(x) // BATCH_SIZE
    assert len(calls["on_train_batch_begin"]) == len(calls["on_train_batch_end"]) == epochs * steps
    assert [batch for batch, _ in calls["on_train_batch_end"][:steps]] == list(range(steps))
    # each epoch's last batch reports the epoch's running means: the epoch's loss and accuracy
    last = [logs for batch, logs in calls["on_train_batch_end"] if batch == steps - 1]
    np.testing.assert_allclose([l["loss"] for l in last], result.history["loss"], rtol=1e-6)
    np.testing.assert_allclose([l["accuracy"] for l in last], result.history["accuracy"], rtol=1e-6)
    assert len(calls["on_test_begin"]) == len(calls["on_test_end"]) == epochs
    np.testing.assert_allclose([logs["accuracy"] for (logs,) in calls["on_test_end"]],
                               result.history["val_accuracy"], rtol=1e-6)
    np.testing.assert_allclose([logs["loss"] for (logs,) in calls["on_test_end"]],
                               result.history["val_loss"], rtol=1e-5)


def test_terminate_on_nan_ends_the_run_at_the_first_non_finite_loss(digits):
    result = fit(digits, callbacks=[keras.callbacks.TerminateOnNaN()], lr=1e6, on_nan="skip")
    assert len(result.history["loss"]) == 1 and len(result.records) <= 1


def test_csv_logger_and_tensorboard_get_one_row_and_one_point_per_epoch_of_the_run(digits, tmp_path):
    csv_path, board = str(tmp_path / "log.csv"), str(tmp_path / "board")
    result = fit(digits, callbacks=[keras.callbacks.CSVLogger(csv_path), keras.callbacks.TensorBoard(board)])
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    np.testing.assert_allclose([float(r["val_accuracy"]) for r in rows], result.history["val_accuracy"])
    points = sorted((event.step, float(tf.make_ndarray(v.tensor))) for path in glob.glob(f"{board}/train/events.*")
                    for event in tf.compat.v1.train.summary_iterator(path) for v in event.summary.value
                    if v.tag == "epoch_loss")
    assert [step for step, _ in points] == [0, 1, 2, 3]
    np.testing.assert_allclose([loss for _, loss in points], result.history["loss"], rtol=1e-6)


# ------------------------------------------------------------------------------ the optimizer
def test_the_optimizer_a_model_was_compiled_with_is_what_trains(digits):
    model = tiny_cnn()
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy")
    result = fit(digits, network=small_network(model))
    np.testing.assert_allclose(result.history["lr"], [0.003] * 4, rtol=1e-6)
    assert result.config.optim.object["class_name"] == "Adam"


def test_an_optimizers_learning_rate_schedule_trains_afresh_in_every_stage(digits):
    x = digits[0]
    schedule = keras.optimizers.schedules.ExponentialDecay(0.01, decay_steps=5, decay_rate=0.5)
    result = fit(digits, optimizer=keras.optimizers.SGD(schedule))
    steps = len(x) // BATCH_SIZE
    # the rate of each epoch's last step, the schedule restarting at every stage's fresh optimizer
    expected = [float(schedule(steps * e - 1)) for e in (1, 2)] * 2
    np.testing.assert_allclose(result.history["lr"], expected, rtol=1e-6)


def test_an_optimizer_is_recorded_and_a_resume_with_another_is_refused_naming_the_field(digits, tmp_path):
    workdir = str(tmp_path / "run")
    fit(digits, optimizer=keras.optimizers.Adam(0.002), workdir=workdir, epochs_per_stage=1)
    with open(os.path.join(workdir, "config.json")) as f:
        recorded = json.load(f)["optim"]["object"]
    assert recorded["class_name"] == "Adam" and recorded["config"]["learning_rate"] == pytest.approx(0.002)
    with pytest.raises(WorkdirMismatchError, match="optimizer_object"):
        fit(digits, optimizer=keras.optimizers.Adam(0.001), workdir=workdir, epochs_per_stage=1)


def test_options_an_optimizer_object_would_ignore_and_unrecordable_optimizers_are_refused(digits, tmp_path):
    with pytest.raises(ConfigError, match="lr would be ignored"):
        fit(digits, optimizer=keras.optimizers.Adam(0.001), lr=0.1)
    with pytest.raises(ConfigError, match="cannot record the optimizer function"):
        fit(digits, optimizer=lambda: keras.optimizers.Adam(0.001), workdir=str(tmp_path / "run"))
    assert not os.listdir(tmp_path)


def test_the_first_line_says_which_optimizer_and_learning_rate_train(digits):
    lines: list[str] = []
    fit(digits, verbose=2, log=lines.append, epochs_per_stage=1)
    assert lines[0] == ("optimizer: sgd (momentum 0.9), lr 0.05, x0.2 every 2 epoch(s) of each stage "
                        "(lr_schedule='step', the paper's; lr_decay_every=0 keeps it constant), weight_decay 0.0005")


# ------------------------------------------------------------------------------ the spec
@pytest.mark.parametrize("first, second, field", [
    ({"shuffle": False}, {"shuffle": True}, "shuffle"),
    ({"validation_split": 0.25}, {"validation_split": 0.5}, "validation_split"),
])
def test_shuffle_and_validation_split_are_recorded_and_a_resume_with_another_is_refused(digits, tmp_path, first,
                                                                                        second, field):
    x, y = digits[0], digits[1]
    workdir = str(tmp_path / "run")
    layerwise.fit(small_network(), x, y, workdir=workdir, **quiet(epochs_per_stage=1, **first))
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)[field] == first[field]
    with pytest.raises(WorkdirMismatchError, match=field):
        layerwise.fit(small_network(), x, y, workdir=workdir, **quiet(epochs_per_stage=1, **second))


def test_steps_per_execution_runs_the_batch_hooks_once_per_device_call_as_keras_does(digits):
    ends: list[int] = []
    result = fit(digits, steps_per_execution=4, epochs_per_stage=1,
                 callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(batch))])
    steps = len(digits[0]) // BATCH_SIZE  # 10: calls end after steps 4, 8 and 10
    assert ends == [3, 7, steps - 1] * 2
    reference = fit(digits, epochs_per_stage=1)
    np.testing.assert_allclose(result.history["loss"], reference.history["loss"], rtol=1e-6)  # the same training


def test_the_default_head_is_one_head_whether_from_auxhead_fit_or_the_configuration():
    from layerwise.config import TrainConfig
    from layerwise.nn.heads import config_heads, head_options
    from layerwise.training.problems import HeadPlan

    assert config_heads(TrainConfig())[0] == layerwise.AuxHead() == HeadPlan().aux
    defaults = TrainConfig().flat()
    assert all(defaults[name] == value for name, value in head_options(layerwise.AuxHead(), required=True).items())


@pytest.mark.parametrize("option, message", [
    ({"predsim_beta": 0.5}, "predsim_beta is set.*local_loss='predsim'"),
    ({"infopro_temperature": 0.1}, "infopro_temperature is set.*local_loss='infopro'"),
    ({"plateau_patience": 2}, "plateau_patience is set.*lr_schedule='plateau'"),
    ({"warmup_lr": 0.01}, "warmup_lr is set.*warmup_steps > 0"),
    ({"refit_head_width": 16}, "refit_head_width is set.*refit_head_epochs > 0"),
    ({"prune_finetune_epochs": 3}, "prune_finetune_epochs is set.*prune_to_width > 0"),
    ({"final_aux_width": 16, "head": None}, "final_aux_width applies.*own classifier"),
    ({"aux_dropout": 0.3, "head": None}, "aux_dropout is set.*aux_hidden_units"),
    ({"aux_width": 16}, "aux_width and head= both describe the head"),
])
def test_an_option_that_would_change_nothing_is_refused_naming_what_it_needs(digits, option, message):
    with pytest.raises(ConfigError, match=message):
        fit(digits, **option)


def test_an_aux_head_with_dropout_and_no_hidden_layer_is_refused_when_made():
    with pytest.raises(ConfigError, match="dropout=0.3 applies before the hidden_units layers"):
        layerwise.AuxHead(k=1, width=8, dropout=0.3)
