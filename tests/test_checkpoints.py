"""Checkpoints keyed by Keras variable path: a model change is refused, never loaded wrongly; run
directories of layerwise 0.2 (variables by position) are refused in one line."""

import io
import json
import os

import keras
import numpy as np
import pytest
from conftest import tiny_config

from apps.runner import resolve, run_training
from layerwise.errors import CheckpointError
from layerwise.run.checkpoints import (
    ProblemCheckpoints,
    assign_arrays,
    load_arrays,
    save_arrays,
    variables_to_arrays,
)
from layerwise.run.workdir import prepare_workdir


def two_layer_model(order=("first", "second")) -> keras.Model:
    """Two same-shaped Dense layers, built in ``order``: a model change a shape check cannot see."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    x = inputs
    for name in order:
        x = keras.layers.Dense(4, name=name)(x)
    return keras.Model(inputs, x)


def test_a_checkpoint_loads_by_path_into_the_same_model(tmp_path):
    saved = two_layer_model()
    path = str(tmp_path / "c.npz")
    save_arrays(path, variables_to_arrays("model", saved.weights), {})
    loaded = two_layer_model()
    for v in loaded.weights:
        v.assign(np.zeros(v.shape))
    assign_arrays("model", loaded.weights, load_arrays(path)[0], path)
    for a, b in zip(saved.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_a_checkpoint_whose_variables_a_model_change_reordered_is_refused(tmp_path):
    path = str(tmp_path / "c.npz")
    save_arrays(path, variables_to_arrays("model", two_layer_model().weights), {})
    swapped = two_layer_model(("second", "first"))  # same paths and shapes, other order
    before = [v.numpy().copy() for v in swapped.weights]
    with pytest.raises(CheckpointError, match="in another order .*use a new --workdir"):
        assign_arrays("model", swapped.weights, load_arrays(path)[0], path)
    for old, v in zip(before, swapped.weights):  # nothing assigned
        np.testing.assert_array_equal(old, v.numpy())
    renamed = two_layer_model(("first", "third"))
    with pytest.raises(CheckpointError, match="third/kernel.* not in it"):
        assign_arrays("model", renamed.weights, load_arrays(path)[0], path)


def format_1_file(path: str) -> None:
    """A checkpoint as layerwise 0.2 wrote it: arrays by position, no format in its metadata."""
    buffer = io.BytesIO()
    np.savez(buffer, model_0=np.zeros(3), __meta__=np.array(json.dumps({"epoch": 0})))
    with open(path, "wb") as f:
        f.write(buffer.getvalue())


def test_a_format_1_checkpoint_is_refused_in_one_line(tmp_path):
    checkpoints = ProblemCheckpoints(str(tmp_path), "stage_00")
    os.makedirs(checkpoints.directory)
    format_1_file(checkpoints.epoch_path(0))
    with pytest.raises(CheckpointError, match="layerwise 0.2 or older") as caught:
        checkpoints.latest_epoch()
    assert "\n" not in str(caught.value)


def test_an_old_run_directory_is_refused_before_any_training(tmp_path, quiet_log):
    config = resolve(tiny_config())
    workdir = str(tmp_path / "old")
    prepare_workdir(workdir, config)
    stage = ProblemCheckpoints(os.path.join(workdir, "checkpoints"), "stage_00")
    os.makedirs(stage.directory)
    format_1_file(stage.final_path)
    with pytest.raises(CheckpointError, match="0.2 or older.*new\n?.*--workdir"):
        run_training(config, workdir, verbose=0, log=lambda _: None)
    assert os.path.exists(stage.final_path)  # refused, not set aside as corrupt
    assert not os.path.exists(os.path.join(workdir, "checkpoints", "stage_01"))
