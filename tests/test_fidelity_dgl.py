"""The family as its authors ran it, session 29 (issue 24): InfoPro's de-normalised target through
the configuration, and asynchronous DGL's worker scheduling and buffer-experiment network.

InfoPro: the authors' reconstruction target is ``InfoProResNet._image_restore(x)`` =
``x * std + mean`` (``networks/resnet.py`` of ``blackfeather-wang/InfoPro-Pytorch``); the data's
statistics reach the loss through the recorded configuration. DGL: one randomly chosen worker per
iteration, the slowed one drawn less often (``train_model`` in ``buffer_experiments/cifar_buffer.py``
of ``eugenium/DGL``: ``Categorical(probs=proba)`` after ``proba[layer_noise] -= noise``).
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.experiments.catalogue import get_experiment
from apps.runner import resolve, run_training
from conftest import async_dense_stages, tiny_config
from layerwise.data.embedded import load_digits
from layerwise.config import TrainConfig
from layerwise.errors import ConfigError, WorkdirMismatchError
from layerwise.restore import read_config
from layerwise.run.workdir import check_workdir, prepare_workdir
from layerwise.training.infopro_heads import reconstruction_loss, reconstruction_target
from layerwise.training.problems import HeadPlan
from layerwise.training.local_losses import InfoPro, config_local_loss, local_loss_options, with_image_statistics
from layerwise.training.replay import worker_logits
from models import build_model
from models.dgl_buffer import DGLBufferHead

CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255.0  # InfoPro's resnet.py
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32) / 255.0


# ----------------------------------------------------------------------------- InfoPro's target
def test_the_target_is_the_de_normalised_image_not_its_min_max_stretch():
    image = np.random.default_rng(0).uniform(0.1, 0.8, (2, 4, 4, 3)).astype(np.float32)
    normalised = (image - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(reconstruction_target(normalised, CIFAR_MEAN, CIFAR_STD), image, atol=1e-6)
    stretched = reconstruction_target(normalised).numpy()  # no statistics: each channel spans [0, 1]
    assert stretched.min() == 0.0 and stretched.max() == 1.0


def test_infopro_reads_its_statistics_and_records_them():
    loss = InfoPro(image_mean=list(CIFAR_MEAN), image_std=list(CIFAR_STD))
    assert loss.for_stage(0, 3).image_mean == loss.image_mean  # every module's loss has them
    recorded = local_loss_options(loss, required=True)
    assert recorded["infopro_image_mean"] == pytest.approx(list(CIFAR_MEAN))
    image = np.random.default_rng(1).uniform(0.1, 0.8, (2, 4, 4, 3)).astype(np.float32)
    normalised = (image - CIFAR_MEAN) / CIFAR_STD
    logits = np.random.default_rng(2).normal(size=image.shape).astype(np.float32)
    outputs = {"reconstruction": logits, "logits": np.zeros((2, 10), np.float32)}
    labels = np.array([1, 2])
    ours = loss(outputs, labels, normalised)  # recon_weight 5 x reconstruction + 0.5 x cross-entropy
    expected = 5.0 * np.mean(reconstruction_loss(logits, normalised, CIFAR_MEAN, CIFAR_STD)) + 0.5 * np.log(10)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="one value per channel"):
        InfoPro(image_mean=[0.5], image_std=[])


def test_unit_statistics_are_the_normalisation_on_the_0_1_scale():
    data = load_digits()
    mean, std = data.unit_statistics()
    np.testing.assert_allclose(mean, data.mean / 255.0, rtol=1e-6)
    np.testing.assert_allclose(std, data.std / 255.0, rtol=1e-6)
    config = tiny_config(local_loss="infopro")
    filled = with_image_statistics(config, (mean, std))
    assert filled.local.infopro_image_mean == pytest.approx(mean)
    assert config_local_loss(filled).image_std == pytest.approx(std)
    assert with_image_statistics(filled, ([0.0], [1.0])) is filled  # what a run recorded stays
    assert with_image_statistics(tiny_config(), (mean, std)) == tiny_config()  # not an InfoPro run


def test_an_infopro_run_records_the_data_statistics_and_resumes_with_them(tmp_path, quiet_log):
    """``layerwise.fit`` fills the statistics from the data into ``config.json``; the rerun on the
    same workdir (a resume) derives the same and is accepted; the loss rebuilt from the record has them."""
    config = resolve(tiny_config(local_loss="infopro", mode="decoupled", infopro_decoder_width=4))
    workdir = str(tmp_path / "run")
    run_training(config, workdir, verbose=0, log=quiet_log)
    with open(f"{workdir}/config.json") as f:
        stored = json.load(f)
    data = load_digits()
    np.testing.assert_allclose(stored["local"]["infopro_image_mean"], data.mean / 255.0, rtol=1e-6)
    rebuilt = config_local_loss(read_config(workdir))
    np.testing.assert_allclose(rebuilt.image_std, data.std / 255.0, rtol=1e-6)
    run_training(config, workdir, verbose=0, log=quiet_log)  # resumes: the same configuration



def test_a_workdir_check_before_the_data_is_read_skips_only_unfilled_statistics(tmp_path):
    """The CLI checks the workdir before reading the data (statistics not filled yet: accepted);
    other statistics than the recorded ones are refused."""
    config = tiny_config(local_loss="infopro")
    workdir = str(tmp_path / "run")
    prepare_workdir(workdir, with_image_statistics(config, ([0.1], [0.3])))
    assert check_workdir(workdir, config)  # a resume, before the data is read
    assert check_workdir(workdir, with_image_statistics(config, ([0.1], [0.3])))
    with pytest.raises(WorkdirMismatchError, match="infopro_image_mean"):
        check_workdir(workdir, with_image_statistics(config, ([0.2], [0.3])))

# ----------------------------------------------------------------------------- DGL's worker scheduling
def _steps_per_batch(ratios, schedule, batches, seed=0):
    """Every stage's steps after each of ``batches`` training batches."""
    step, optimizers, _ = async_dense_stages(ratios, schedule, seed)
    x, y = tf.random.stateless_normal([4, 3], [1, 2]), tf.constant([0, 1, 2, 3])
    taken, before = [], [0] * len(ratios)
    for _ in range(batches):
        assert bool(step(x, y).finite)
        now = [int(o.iterations) for o in optimizers]
        taken.append([a - b for a, b in zip(now, before)])
        before = now
    return np.array(taken)


def test_worker_probabilities_follow_the_ratios_stage_0_counted_as_1():
    np.testing.assert_allclose(np.exp(worker_logits([1.0, 1.0, 0.5]).numpy()), [[0.4, 0.4, 0.2]])
    np.testing.assert_allclose(np.exp(worker_logits([3.0, 1.0]).numpy()), [[0.5, 0.5]])  # stage 0: 1


def test_random_schedule_draws_one_worker_at_a_time_the_slowed_stage_less_often():
    """DGL's scheduling: stage 0 once per batch, the others a random number of times in between,
    ``ratio`` on average (the slowed last stage half as often); seeded; the fixed rounds are exact."""
    ratios, batches = [1.0, 1.0, 0.5], 200
    taken = _steps_per_batch(ratios, "random", batches)
    assert np.all(taken[:, 0] == 1)
    mean = taken.sum(axis=0) / batches
    assert abs(mean[1] - 1.0) < 0.2 and abs(mean[2] - 0.5) < 0.15, mean
    assert taken[:, 1].max() >= 3 and (taken[:, 1] == 0).sum() > batches // 5  # geometric, not one a batch
    np.testing.assert_array_equal(taken, _steps_per_batch(ratios, "random", batches))  # the same seed
    assert not np.array_equal(taken, _steps_per_batch(ratios, "random", batches, seed=1))
    rounds = _steps_per_batch(ratios, "rounds", 4)
    np.testing.assert_array_equal(rounds, [[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 1]])


def test_random_is_the_default_schedule_and_applies_to_the_async_mode_only():
    assert TrainConfig().local.replay_schedule == "random"
    with pytest.raises(ConfigError, match="replay_schedule"):
        tiny_config(mode="decoupled", replay_schedule="rounds").validate()
    with pytest.raises(ConfigError, match="random, rounds"):
        async_dense_stages([1.0, 1.0], "sequential")


def test_an_async_run_records_the_served_batch_age_and_reuse_of_every_stage(tmp_path, quiet_log):
    """The default (random workers, priority-LIFO) run writes what each stage read into its stage
    records in ``metrics.jsonl``: the slowed last stage reads about half as many batches as were
    written, so about half of them are never served."""
    config = resolve(tiny_config(mode="decoupled", model_options={"num_stages": 3, "width": 8, "downsample_at": [1]},
                                 replay_buffer=4, stage_step_ratios=[1, 1, 0.5], epochs_per_stage=2))
    records = run_training(config, str(tmp_path / "run"), verbose=0, log=quiet_log)
    assert "replay_mean_age" not in records[0]
    for record, ratio in zip(records[1:], (1.0, 0.5)):
        assert record["replay_reads_per_write"] == pytest.approx(ratio, abs=0.25)
        assert 0 < record["replay_served_fraction"] <= 1 and record["replay_mean_age"] >= 0
    assert records[2]["replay_served_fraction"] < 0.8
    with open(tmp_path / "run" / "metrics.jsonl") as f:
        lines = [json.loads(line) for line in f]
    stored = [line for line in lines if "replay_mean_age" in line]
    assert [line["replay_mean_age"] for line in stored] == [r["replay_mean_age"] for r in records[1:]]


# ----------------------------------------------------------------------------- the buffer experiment's network
def test_the_buffer_preset_builds_dgls_six_layer_max_pool_network_with_mlp_heads():
    """``cifar_buffer.py`` defaults (``--ncnn 6 --feature_size 128 --ds-type maxpool --down [1,3]
    --nlin 0 --mlp 3``): widths 128, 128, 256, 256, 512, 512, max-pooled before layers 2 and 4; each
    head 2x2-averages and runs 3 x (Linear F -> F, BatchNorm1d, ReLU) + Linear F -> 10, F = 4 C."""
    config = resolve(get_experiment("dgl_async_cifar10_buffer50").config())
    network = build_model(config.model, (32, 32, 3), 10, **config.model_options)
    assert [network.output_shape(j) for j in range(6)] == [
        (32, 32, 128), (32, 32, 128), (16, 16, 256), (16, 16, 256), (8, 8, 512), (8, 8, 512)]
    pools = [[type(layer).__name__ for layer in stage.layers].count("MaxPooling2D") for stage in network.stages]
    assert pools == [0, 0, 1, 0, 1, 0]
    widths = [3, 128, 128, 256, 256, 512, 512]
    assert [s.count_params() for s in network.stages] == [9 * a * b + 4 * b for a, b in zip(widths, widths[1:])]
    plan = HeadPlan.from_config(config)
    for j in (0, 5):
        head = plan.build(network, j)
        features = 4 * network.output_shape(j)[-1]
        dense = [layer.units for layer in head.layers if isinstance(layer, keras.layers.Dense)]
        assert dense == [features] * 3 + [10]
        assert head.count_params() == 3 * (features * features + features + 4 * features) + 10 * features + 10
    assert (config.local.replay_buffer, config.local.replay_schedule, config.local.replay_policy) == (
        50, "random", "priority_lifo")
    assert (config.optim.lr, config.schedule.decay_every, config.schedule.decay_factor, config.epochs_per_stage) == (
        0.1, 15, 0.2, 50)


@pytest.mark.slow
def test_an_async_run_trains_with_the_mlp_heads_and_max_pooling(tmp_path, quiet_log):
    config = resolve(tiny_config(
        mode="decoupled", model_options={"num_stages": 2, "width": 8, "downsample_at": [1], "downsampling": "maxpool"},
        aux_head_object=keras.saving.serialize_keras_object(DGLBufferHead(mlp_layers=1)), replay_buffer=2))
    records = run_training(config, str(tmp_path / "run"), verbose=0, log=quiet_log)
    assert records[-1]["test_accuracy"] > 0.3  # 10 classes: it learns
    with pytest.raises(ConfigError, match="downsampling"):
        build_model("layerwise_cnn", (8, 8, 1), 10, downsampling="avgpool")
