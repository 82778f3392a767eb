"""Behaviour of the custom loops: freezing, accuracy on real digits, determinism, NaNs."""

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve, run_training
from conftest import tiny_config
from layerwise.config import RunOptions
from layerwise.errors import NonFiniteLossError
from layerwise.training.problems import ensemble_probabilities
from layerwise.training.trainer import GreedyTrainer


def _trainer(config, workdir=None, log=print, options=None):
    config = resolve(config)
    data = load_data(config)
    network = build_network(config, data)
    return GreedyTrainer(network, data, config, workdir, options=options, verbose=0, log=log)


@pytest.mark.parametrize(
    "cache, augment",
    [("off", "none"), ("memory", "none"), ("auto", "crop")],
    ids=["cache_off", "cache_memory", "augmented"],
)
def test_frozen_stage_is_bit_identical_after_next_stage_trains(quiet_log, cache, augment):
    """With the cache off (and with augmentation, which turns it off) the frozen prefix runs
    inside every training step of stage 1; with it on, the step reads features cached once."""
    trainer = _trainer(tiny_config(augment=augment), log=quiet_log, options=RunOptions(cache_prefix=cache))
    trainer.run_problem(trainer.stage_problem(0))
    stage0 = trainer.network.stages[0]
    before = {v.path: v.numpy().copy() for v in stage0.variables}
    assert any("moving_mean" in p for p in before) and any("kernel" in p for p in before)
    problem = trainer.stage_problem(1)
    trained = {id(v) for v in problem.trainable.trainable_variables}
    assert not any(id(v) in trained for v in stage0.variables)
    stage1 = [(v, v.numpy().copy()) for v in trainer.network.stages[1].trainable_variables]
    trainer.run_problem(problem)
    # frozen: not trainable (so no optimizer can touch it) and bit-identical, BatchNorm's moving
    # statistics included (a BatchNorm run in training mode inside the step would move them)
    assert stage0.variables and not any(v.trainable for v in stage0.variables)
    for variable in stage0.variables:
        np.testing.assert_array_equal(variable.numpy(), before[variable.path], err_msg=variable.path)
    # and stage 1 did train
    assert stage1 and all(not np.array_equal(v.numpy(), value) for v, value in stage1)
    assert trainer.records[1]["test_accuracy"] > 0.5


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy in float64, written out."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def test_one_step_loss_is_cross_entropy_plus_weight_decay_by_hand(quiet_log):
    weight_decay = 0.01  # large enough that a wrong coefficient moves the loss by percents
    trainer = _trainer(tiny_config(weight_decay=weight_decay), log=quiet_log, options=RunOptions(cache_prefix="off"))
    # Stage 1 on the untrained, frozen stage 0: its BatchNorm's moving statistics (0 and 1) are
    # far from the batch statistics, so a prefix run in training mode gives another loss.
    problem = trainer.stage_problem(1)
    optimizer = trainer.make_optimizer(problem)
    step = trainer.train_step(problem, optimizer)
    x, y = next(iter(trainer.train_batches(problem, 0)))
    stage0 = trainer.network.stages[0].variables
    stage0_before = [v.numpy().copy() for v in stage0]
    weights = [v.numpy().astype(np.float64) for v in problem.trainable.trainable_variables]
    logits = problem.trainable(problem.frozen(x, training=False), training=True).numpy()
    expected = _cross_entropy(logits, y.numpy()) + 0.5 * weight_decay * sum(np.sum(w**2) for w in weights)

    loss, correct, count, finite = step(x, y)
    assert bool(finite) and float(count) == len(y)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(correct) == np.sum(np.argmax(logits, -1) == y.numpy())
    for variable, value in zip(stage0, stage0_before):  # the prefix ran in inference mode
        np.testing.assert_array_equal(variable.numpy(), value, err_msg=variable.path)
    assert any(not np.array_equal(v.numpy(), w) for v, w in zip(problem.trainable.trainable_variables, weights))


def test_layerwise_run_on_mnist5k_beats_threshold(quiet_log):
    config = tiny_config(
        dataset="mnist5k",
        model_options={"num_stages": 2, "width": 16, "downsample_at": [1]},
        aux_width=32,
        batch_size=64,
    )
    records = run_training(config, None, verbose=0, log=quiet_log)
    assert [r["stage"] for r in records] == [0, 1]
    assert records[-1]["test_accuracy"] >= 0.90, records


def test_same_seed_same_numbers(quiet_log):
    first = run_training(tiny_config(), None, verbose=0, log=quiet_log)
    second = run_training(tiny_config(), None, verbose=0, log=quiet_log)
    assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]
    third = run_training(tiny_config(seed=1), None, verbose=0, log=quiet_log)
    assert [r["accuracy"] for r in first] != [r["accuracy"] for r in third]


def test_end_to_end_trains_all_stages_for_the_same_total_epochs(quiet_log):
    config = tiny_config(mode="end_to_end", epochs_per_stage=2, lr_decay_every=1, lr_decay_factor=0.2)
    trainer = _trainer(config, log=quiet_log)
    records = trainer.run()
    assert len(records) == 1 and records[0]["problem"] == "end_to_end"
    assert records[0]["epochs"] == 4  # J x epochs_per_stage
    assert all(stage.trainable for stage in trainer.network.stages)
    assert records[0]["test_accuracy"] > 0.5
    # the step schedule is stretched over the J-times-longer run: x0.2 every J x 1 epochs
    lrs = [r["lr"] for r in trainer.runlog.records if r["event"] == "epoch"]
    assert lrs == pytest.approx([0.05 * 0.2 ** (epoch // (2 * 1)) for epoch in range(4)])  # 0.05, 0.05, 0.01, 0.01


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
    except NonFiniteLossError as e:  # every batch skipped, or a finite loss's update overflowing, is an error too
        assert "every batch" in str(e) or "became NaN or infinite" in str(e)
    for variable in trainer.network.stages[0].variables:
        assert np.all(np.isfinite(variable.numpy()))
