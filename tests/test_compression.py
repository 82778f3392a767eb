"""Filter pruning: exact slicing (same function on the kept filters), costs, and the trainer hook."""

import keras
import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve, run_training
from conftest import tiny_config
from layerwise.nn.flops import count_flops
from layerwise.training.pruning import (
    filter_scores_l1,
    filter_scores_taylor,
    keep_strongest,
    last_conv,
    prune_stage,
    slice_chain,
)
from layerwise.errors import ConfigError
from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.training.trainer import GreedyTrainer
from models import build_model


def _randomize_bn(model, rng):
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])


@pytest.mark.parametrize("aux_conv_layers", [0, 1])
def test_pruned_stage_and_consumers_compute_the_same_function(aux_conv_layers):
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    net = build_model("layerwise_cnn", (8, 8, 3), 5, num_stages=2, width=6, downsample_at=[1])
    heads = {0: build_aux_head(net.output_shape(0), 5, AuxHead(k=aux_conv_layers + 1, width=4))}
    for m in (net.stages[0], net.stages[1], heads[0]):
        _randomize_bn(m, rng)
    x = rng.normal(size=(3, 8, 8, 3)).astype("float32")
    full0 = net.stages[0](x, training=False).numpy()
    stage1_in, head_in = net.stages[1], heads[0]
    keep = np.array([0, 2, 5])
    prune_stage(net, heads, 0, keep)
    assert last_conv(net.stages[0]).filters == 3
    assert net.stages[1].input_shape[-1] == 3
    assert last_conv(net.stages[1]).kernel.shape[2] == 12  # space-to-depth: 3 kept channels -> 12
    pruned0 = net.stages[0](x, training=False).numpy()
    np.testing.assert_allclose(pruned0, full0[..., keep], rtol=1e-5, atol=1e-5)
    masked = np.zeros_like(full0)
    masked[..., keep] = full0[..., keep]
    # consumers (head, next stage through space-to-depth) see the same thing as with the
    # removed filters zeroed
    np.testing.assert_allclose(heads[0](pruned0).numpy(), head_in(masked).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        net.stages[1](pruned0).numpy(), stage1_in(masked).numpy(), rtol=1e-4, atol=1e-5
    )


def test_keep_strongest_removes_exactly_the_weakest():
    scores = np.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
    np.testing.assert_array_equal(keep_strongest(scores, 3), [0, 2, 4])
    with pytest.raises(ConfigError):
        keep_strongest(scores, 7)


def test_l1_scores_and_costs_shrink():
    keras.utils.set_random_seed(0)
    net = build_model("layerwise_cnn", (8, 8, 1), 3, num_stages=1, width=8, downsample_at=[])
    stage = net.stages[0]
    scores = filter_scores_l1(stage)
    assert scores.shape == (8,)
    keep = keep_strongest(scores, 4)
    small = slice_chain(stage, output_keep=(last_conv(stage).name, keep))
    assert count_flops(stage) == 2 * 8 * 8 * 3 * 3 * 1 * 8
    assert count_flops(small) == count_flops(stage) // 2
    np.testing.assert_array_equal(last_conv(small).kernel.numpy(), last_conv(stage).kernel.numpy()[..., keep])


def _k1_head_loss_and_feature_gradient(features, labels, kernel, bias):
    """The k=1 auxiliary problem written out in float64: 2x2 average of an (N, H, W, C) map,
    flatten, linear, mean cross-entropy; returns the loss and dL/d(features)."""
    n, h, w, c = features.shape
    pooled = features.reshape(n, 2, h // 2, 2, w // 2, c).mean(axis=(2, 4))
    logits = pooled.reshape(n, -1) @ kernel + bias
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    loss = -np.mean(np.log(probs[np.arange(n), labels]))
    d_logits = probs.copy()
    d_logits[np.arange(n), labels] -= 1.0
    d_pooled = (d_logits / n @ kernel.T).reshape(n, 2, 2, c)
    d_features = np.repeat(np.repeat(d_pooled, h // 2, axis=1), w // 2, axis=2) / ((h // 2) * (w // 2))
    return loss, d_features


def test_taylor_scores_are_the_first_order_term_by_hand(quiet_log):
    config = resolve(tiny_config(aux_conv_layers=0, model_options={"num_stages": 1, "width": 8, "downsample_at": []}))
    data = load_data(config)
    trainer = GreedyTrainer(build_network(config, data), data, config, verbose=0, log=quiet_log)
    trainer.run()
    stage, head = trainer.network.stages[0], trainer.heads[0]
    batches = list(data.train_batches(config.batch_size, 0, 0).take(3))
    scores = filter_scores_taylor(stage, head, batches)

    (dense,) = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    features = [np.asarray(stage(x, training=False), np.float64) for x, _ in batches]
    labels = [y.numpy() for _, y in batches]
    total, count = 0.0, 0
    for a, y in zip(features, labels):  # |mean over batch and space of a * dL/da|, per channel
        _, grad = _k1_head_loss_and_feature_gradient(a, y, kernel, bias)
        total, count = total + np.sum(a * grad, axis=(0, 1, 2)), count + np.prod(a.shape[:3])
    np.testing.assert_allclose(scores, np.abs(total / count), rtol=1e-4, atol=1e-4 * np.max(scores))

    def loss_without(channel):
        losses = []
        for a, y in zip(features, labels):
            a = a.copy()
            a[..., channel] = 0.0
            losses.append(_k1_head_loss_and_feature_gradient(a, y, kernel, bias)[0])
        return np.mean(losses)

    # the criterion ranks filters by how much the loss needs them
    assert loss_without(np.argmax(scores)) > loss_without(np.argmin(scores))
    assert list(keep_strongest(scores, 1)) == [np.argmax(scores)]


def test_prune_hook_in_trainer_records_costs_and_accuracy(quiet_log):
    config = tiny_config(prune_to_width=4, model_options={"num_stages": 2, "width": 8, "downsample_at": [1]})
    records = run_training(config, None, verbose=0, log=quiet_log)
    pruned = [r for r in records if r["event"] == "prune"]
    assert [r["stage"] for r in pruned] == [0, 1]
    assert pruned[0]["filters_before"] == 8 and pruned[0]["filters_after"] == 4
    assert pruned[1]["filters_before"] == 16 and pruned[1]["filters_after"] == 4
    assert all(r["params"] < r["params_before"] and r["flops"] < r["flops_before"] for r in pruned)
    assert all(0 <= r["acc_before_pruning"] <= 1 and 0 <= r["test_accuracy"] <= 1 for r in pruned)


def test_refit_final_head(quiet_log):
    config = tiny_config(refit_head_epochs=1, refit_head_conv_layers=0)
    records = run_training(config, None, verbose=0, log=quiet_log)
    refit = records[-1]
    assert refit["event"] == "refit" and refit["head_params"] < refit["replaced_head_params"]
    assert refit["test_accuracy"] > 0.3


@pytest.mark.slow
def test_pruned_stages_are_exported_and_match_the_restored_network(tmp_path, quiet_log):
    import os

    import tensorflow as tf

    from apps.runner import restore

    workdir = str(tmp_path / "run")
    config = tiny_config(prune_to_width=4, model_options={"num_stages": 2, "width": 8, "downsample_at": [1]})
    run_training(config, workdir, verbose=0, log=quiet_log)
    run = restore(workdir)
    images = np.concatenate([x.numpy() for x, _ in run.data.eval_batches("test", 512)])[:32]
    for j in range(2):
        path = os.path.join(workdir, "export", f"layerwise_cnn_stage_{j:02d}_pruned", "1")
        served = tf.saved_model.load(path).signatures["serving_float"](images=tf.constant(images))
        expected = tf.nn.softmax(run.classifiers[j](images, training=False)).numpy()
        np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
    assert "layerwise_cnn_stage_01_pruned" in open(os.path.join(workdir, "export", "models.config")).read()
