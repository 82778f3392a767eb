"""Keras Tuner over the layerwise loop: a whole-schedule search, a greedy per-stage search, and
the preset file round trip into apps.train."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve
from conftest import run_cli, tiny_config
from layerwise.run import checkpoints as ckpt
from layerwise import tuning
from layerwise.config import TrainConfig

SPACE = tuning.SearchSpace(
    lr=(0.01, 0.1), weight_decay=(0.0, 5e-4), widths=(4, 8), aux_widths=(4, 8), aux_conv_layers=(0, 1),
    epochs_per_stage=(1,),
)


@pytest.mark.slow
def test_random_search_writes_a_preset_that_apps_train_accepts(tmp_path):
    base = resolve(tiny_config())
    data = tuning.validation_view(load_data(base), 0.2, 0)
    assert 280 <= data.num_test <= 290 and data.num_train + data.num_test == load_data(base).num_train
    hypermodel = tuning.ScheduleHyperModel(base, data, build_network, SPACE)
    tuner = tuning.make_tuner("random", hypermodel, str(tmp_path / "tuning"), "schedule", max_trials=2)
    tuner.search()
    rows = tuning.trial_rows(tuner)
    assert len(rows) == 2 and all(r["status"] == "COMPLETED" and 0 <= r["score"] <= 1 for r in rows)
    assert "| trial | status | score |" in tuning.format_trials(rows)
    best = tuning.best_config(tuner, hypermodel)
    assert best.model_options["width"] in (4, 8) and best.heads.width in (4, 8) and best.epochs_per_stage == 1
    preset = tuning.write_preset(best, str(tmp_path / "best_config.json"))
    assert TrainConfig.from_dict(json.load(open(preset))) == best

    # Resumable: the same search on the same directory runs no new trial.
    again = tuning.make_tuner("random", hypermodel, str(tmp_path / "tuning"), "schedule", max_trials=2)
    again.search()
    assert len(again.oracle.trials) == 2

    # defaults -> --config -> flags: the flag wins over the file, the file over the defaults.
    workdir = tmp_path / "best"
    result = run_cli("apps.train", "--config", preset, "--workdir", str(workdir), "--seed", "3", "--verbose", "0")
    assert result.returncode == 0, result.stderr
    written = TrainConfig.from_dict(json.load(open(workdir / "config.json")))
    assert written == best.replace(seed=3)


def test_a_bad_config_file_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.json").write_text('{"lr": 0.1, "wings": 2}')
    result = run_cli("apps.train", "--config", str(tmp_path / "bad.json"), "--workdir", str(tmp_path / "w"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "unknown config fields ['wings']" in errors[0]
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_greedy_per_stage_search_keeps_the_best_stage_and_builds_on_it(tmp_path):
    base = resolve(tiny_config(model_options={"num_stages": 2, "width": 4, "downsample_at": [1]}))
    data = tuning.validation_view(load_data(base), 0.2, 0)
    directory = str(tmp_path / "tuning")
    results = tuning.tune_per_stage(base, data, build_network, directory, max_trials=2, space=SPACE, log=lambda _: None)
    assert [r["stage"] for r in results] == [0, 1]
    for r in results:
        assert 0 <= r["val_accuracy"] <= 1 and "width" not in r["hyperparameters"]
    assert json.load(open(os.path.join(directory, "per_stage.json"))) == results
    # Every stage-1 trial was trained on top of the kept stage 0 (its weights unchanged).
    kept0, _ = ckpt.load_arrays(os.path.join(directory, "stage_00_best.npz"))
    scores = []
    for name in os.listdir(os.path.join(directory, "stage_00_trials")):
        _, meta = ckpt.load_arrays(os.path.join(directory, "stage_00_trials", name))
        scores.append(meta["val_accuracy"])
    assert results[0]["val_accuracy"] == max(scores) and len(scores) == 2
    hypermodel = tuning.StageHyperModel(base, data, build_network, 1, [kept0], str(tmp_path / "unused"), SPACE)
    import keras_tuner as kt

    hypermodel.build(kt.HyperParameters())
    variables = hypermodel.network.stages[0].variables
    assert len(kept0) == len(variables)
    for v, key in zip(variables, ckpt.variable_keys(variables)):
        np.testing.assert_array_equal(v.numpy(), kept0[f"stage/{key}"])
    assert len(os.listdir(os.path.join(directory, "stage_01_trials"))) == 2
