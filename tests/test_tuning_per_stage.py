"""Per-stage hyperparameters (``TrainConfig.stage_overrides``): each stage trains with its own lr,
weight decay, head and epochs; the per-stage search writes them as a config file that
``apps.train --config`` trains and ``apps.export`` exports."""

from __future__ import annotations

import glob
import json
import os

import keras
import numpy as np
import pytest

import layerwise
from apps.runner import build_network, load_data, resolve
from conftest import run_cli, tiny_config
from layerwise.errors import ConfigError
from layerwise.config import TrainConfig
from layerwise.restore import restore_run
from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.training.trainer import GreedyTrainer

# stage 0: a small slow head trained twice as long with a strong L2; stage 1: a wide, deep, fast one
OVERRIDES = [
    {"lr": 0.02, "weight_decay": 1e-3, "aux_width": 4, "epochs_per_stage": 2},
    {"lr": 0.1, "aux_width": 16, "aux_conv_layers": 2},
]


class EpochsSeen(keras.callbacks.Callback):
    """The run-wide epoch numbers and the ``params["epochs"]`` the callbacks were given."""

    def __init__(self):
        super().__init__()
        self.epochs: list[int] = []
        self.total = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)
        self.total = self.params["epochs"]


def trainer_for(config: TrainConfig) -> GreedyTrainer:
    config = resolve(config)
    data = load_data(config)
    return GreedyTrainer(build_network(config, data), data, config, verbose=0, log=lambda _: None)


def head_params(k: int, width: int, feature_shape) -> int:
    return build_aux_head(tuple(feature_shape), 10, AuxHead(k=k, width=width)).count_params()


def test_each_stage_trains_with_its_own_lr_weight_decay_head_and_epochs(tmp_path):
    config = resolve(tiny_config(lr_decay_every=0, weight_decay=0.0, stage_overrides=OVERRIDES))
    data = load_data(config)
    seen = EpochsSeen()
    result = layerwise.fit(build_network(config, data), data, config=config, workdir=str(tmp_path / "run"),
                           callbacks=[seen], verbose=0, log=lambda _: None)
    assert [(r["stage"], r["epoch"]) for r in result.epochs] == [(0, 0), (0, 1), (1, 0)]
    assert [r["lr"] for r in result.epochs] == pytest.approx([0.02, 0.02, 0.1])
    assert seen.epochs == [0, 1, 2] and seen.total == 3  # run-wide epochs: stage 1 starts after stage 0's two
    network, heads = result.network, result.heads
    assert heads[0].count_params() == head_params(2, 4, network.output_shape(0))
    assert heads[1].count_params() == head_params(3, 16, network.output_shape(1))
    assert head_params(2, 4, network.output_shape(0)) != head_params(2, 8, network.output_shape(0))

    # Stage 0 is exactly the stage a run with those values for every stage trains (weight decay too).
    plain = trainer_for(tiny_config(lr_decay_every=0, lr=0.02, weight_decay=1e-3, aux_width=4, epochs_per_stage=2))
    plain.run_problem(plain.stage_problem(0))
    for mine, theirs in zip(network.stages[0].weights + heads[0].weights,
                            plain.network.stages[0].weights + plain.heads[0].weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())

    # The run's config.json records the overrides; restoring it rebuilds each stage's own head.
    stored = TrainConfig.from_dict(json.load(open(tmp_path / "run" / "config.json")))
    assert stored.stage_overrides == OVERRIDES
    restored = restore_run(str(tmp_path / "run"), build_network)
    assert [h.count_params() for h in restored.heads] == [heads[0].count_params(), heads[1].count_params()]
    images = data.arrays("test")[0][:16]
    logits = restored.classifiers[1].predict(images, verbose=0)  # restored: logits; Result's: probabilities
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.softmax(logits)),
                               result.classifiers[1].predict(images, verbose=0), atol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    ([{"lrr": 0.1}, {}], "stage_overrides[0] (stage 0): unknown field 'lrr' (did you mean 'lr'?)"),
    ([{}, {"lr": -1.0}], "stage_overrides[1] (stage 1): lr must be positive"),
    ([{}, {"aux_width": "8"}], "stage_overrides[1] (stage 1): aux_width must be an integer"),
    ([{"epochs_per_stage": 0}, {}], "stage_overrides[0] (stage 0): epochs_per_stage must be positive"),
    ([{"aux_conv_layers": -1}, {}], "stage_overrides[0] (stage 0): aux_conv_layers must be >= 0"),
    ([{}, 3], "stage_overrides[1] (stage 1) must be an object"),
], ids=["unknown", "lr", "aux_width_type", "epochs", "aux_conv_layers", "not_an_object"])
def test_bad_stage_overrides_are_refused_naming_the_stage_and_field(overrides, message):
    with pytest.raises(ConfigError) as error:
        tiny_config(stage_overrides=overrides).validate()
    assert message in str(error.value) and "\n" not in str(error.value)


def test_stage_overrides_are_refused_outside_layerwise_and_with_the_wrong_count(tmp_path):
    with pytest.raises(ConfigError, match=r"^stage_overrides apply to mode layerwise only \(mode is 'end_to_end'\)"):
        tiny_config(mode="end_to_end", stage_overrides=OVERRIDES).validate()
    with pytest.raises(ConfigError, match=r"^stage_overrides has 3 object\(s\) but the network has 2 stages"):
        trainer_for(tiny_config(stage_overrides=OVERRIDES + [{}]))
    (tmp_path / "short.json").write_text(json.dumps({**tiny_config().to_dict(), "stage_overrides": [{"lr": 0.1}]}))
    result = run_cli("apps.train", "--config", str(tmp_path / "short.json"), "--workdir", str(tmp_path / "w"))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert "stage_overrides has 1 object(s) but the network has 2 stages" in errors[0]
    assert not os.path.exists(tmp_path / "w" / "config.json")


@pytest.mark.slow
def test_the_per_stage_search_writes_a_config_that_apps_train_trains_and_apps_export_exports(tmp_path):
    tune = run_cli(
        "apps.tune", "--workdir", str(tmp_path / "tune"), "--tune_per_stage", "--dataset", "digits",
        "--num_stages", "2", "--downsample_at", "1", "--batch_size", "32", "--width", "4", "--lr_range", "0.02,0.1",
        "--weight_decay_choices", "0,1e-3", "--aux_width_choices", "4,8", "--aux_conv_layers_choices", "0,1",
        "--epochs_choices", "1,2", "--max_trials", "2", "--precision", "float32",
    )
    assert tune.returncode == 0, tune.stderr
    preset = tmp_path / "tune" / "best_per_stage_config.json"
    assert f"python -m apps.train --config {preset}" in tune.stdout
    chosen = json.load(open(tmp_path / "tune" / "tuning" / "per_stage.json"))
    config = TrainConfig.from_dict(json.load(open(preset)))
    assert config.stage_overrides == [r["overrides"] for r in chosen] and len(chosen) == 2
    for r in chosen:  # the overrides are what the kept trial trained with
        assert r["overrides"]["aux_width"] == r["hyperparameters"]["aux_width"]
        assert r["overrides"]["lr"] == pytest.approx(r["hyperparameters"]["lr"])

    workdir = tmp_path / "best"
    train = run_cli("apps.train", "--config", str(preset), "--workdir", str(workdir), "--verbose", "0")
    assert train.returncode == 0, train.stderr
    epochs = [r for r in map(json.loads, open(workdir / "metrics.jsonl")) if r["event"] == "epoch"]
    for j, stage in enumerate(config.stage_overrides):
        lrs = [r["lr"] for r in epochs if r["stage"] == j]
        assert len(lrs) == stage["epochs_per_stage"] and lrs[0] == pytest.approx(stage["lr"])
    export = run_cli("apps.export", str(workdir))
    assert export.returncode == 0, export.stderr
    for stage in ("stage_00", "stage_01"):  # version 1 from training, 2 from apps.export
        versions = sorted(glob.glob(str(workdir / "export" / f"*_{stage}" / "*" / "saved_model.pb")))
        assert [p.split(os.sep)[-2] for p in versions] == ["1", "2"], versions
