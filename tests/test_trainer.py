"""Behaviour of the custom loops: freezing, accuracy on real digits, determinism, NaNs."""

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve, run_training
from conftest import tiny_config
from layerwise.errors import NonFiniteLossError
from layerwise.training.trainer import GreedyTrainer, ensemble_probabilities


def _trainer(config, workdir=None, log=print):
    config = resolve(config)
    data = load_data(config)
    network = build_network(config, data)
    return GreedyTrainer(network, data, config, workdir, verbose=0, log=log)


def test_frozen_stage_is_bit_identical_after_next_stage_trains(quiet_log):
    trainer = _trainer(tiny_config(epochs_per_stage=2), log=quiet_log)
    trainer.run_problem(trainer.stage_problem(0))
    stage0 = trainer.network.stages[0]
    before = {v.path: v.numpy().copy() for v in stage0.variables}
    assert any("moving_mean" in p for p in before) and any("kernel" in p for p in before)
    trainer.run_problem(trainer.stage_problem(1))
    for variable in stage0.variables:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)
    # and stage 1 did train
    assert trainer.records[1]["test_acc"] > 0.5


def test_layerwise_run_on_mnist5k_beats_threshold(quiet_log):
    config = tiny_config(
        dataset="mnist5k",
        model_options={"num_stages": 2, "width": 16, "downsample_at": [1]},
        aux_width=32,
        batch_size=64,
    )
    records = run_training(config, None, verbose=0, log=quiet_log)
    assert [r["stage"] for r in records] == [0, 1]
    assert records[-1]["test_acc"] >= 0.90, records


def test_same_seed_same_numbers(quiet_log):
    first = run_training(tiny_config(), None, verbose=0, log=quiet_log)
    second = run_training(tiny_config(), None, verbose=0, log=quiet_log)
    assert [r["test_acc"] for r in first] == [r["test_acc"] for r in second]
    third = run_training(tiny_config(seed=1), None, verbose=0, log=quiet_log)
    assert [r["train_acc"] for r in first] != [r["train_acc"] for r in third]


def test_end_to_end_trains_all_stages_for_the_same_total_epochs(quiet_log):
    trainer = _trainer(tiny_config(mode="end_to_end"), log=quiet_log)
    records = trainer.run()
    assert len(records) == 1 and records[0]["problem"] == "end_to_end"
    assert records[0]["epochs"] == 2  # J x epochs_per_stage
    assert all(stage.trainable for stage in trainer.network.stages)
    assert records[0]["test_acc"] > 0.5


def test_ensemble_equals_weighted_average_by_hand():
    rng = np.random.default_rng(0)
    probs = [rng.dirichlet(np.ones(4), size=5) for _ in range(3)]
    by_hand = (1 * probs[0] + 2 * probs[1] + 4 * probs[2]) / 7
    np.testing.assert_allclose(ensemble_probabilities(probs), by_hand, rtol=1e-12)


def test_nan_loss_stops_with_a_clear_message(quiet_log):
    trainer = _trainer(tiny_config(lr=1e30, weight_decay=0.0), log=quiet_log)
    with pytest.raises(NonFiniteLossError, match="lower --lr"):
        trainer.run()


def test_nan_loss_skip_keeps_weights_finite(quiet_log):
    trainer = _trainer(tiny_config(lr=1e30, weight_decay=0.0, on_nan="skip"), log=quiet_log)
    try:
        trainer.run()
    except NonFiniteLossError as e:  # every batch skipped is an error too
        assert "every batch" in str(e)
    for variable in trainer.network.stages[0].variables:
        assert np.all(np.isfinite(variable.numpy()))
