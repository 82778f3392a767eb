"""Paper features in the trainer: ensemble and top-5 in records, best epoch on a validation split."""

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve, run_training
from conftest import tiny_config
from layerwise.data import load_dataset
from layerwise.errors import ConfigError
from layerwise.training.evaluation import top_k_accuracy
from layerwise.training.trainer import GreedyTrainer


def test_top_k_by_hand():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.3, 0.2]])
    labels = np.array([0, 0, 3])
    assert top_k_accuracy(probs, labels, k=1) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, labels, k=2) == pytest.approx(1 / 3)
    assert top_k_accuracy(probs, labels, k=4) == 1.0


def test_records_report_ensemble_and_top5_for_100_classes(quiet_log):
    config = resolve(tiny_config(dataset="synthetic", batch_size=16))
    data = load_dataset("synthetic", image_shape=(8, 8, 1), num_classes=100, num_train=64, num_test=32)
    trainer = GreedyTrainer(build_network(config, data), data, config, verbose=0, log=quiet_log)
    records = trainer.run()
    for r in records:
        assert {"ensemble_accuracy", "test_top5", "ensemble_top5"} <= set(r)
        assert r["test_top5"] >= r["test_accuracy"]
    small = run_training(tiny_config(), None, verbose=0, log=quiet_log)  # 10 classes: no top-5
    assert "test_top5" not in small[0] and "ensemble_accuracy" in small[0]


def test_keep_best_uses_a_validation_split_carved_from_train(quiet_log):
    config = resolve(tiny_config(validation_fraction=0.2, keep_best=True, epochs_per_stage=2))
    full = load_data(config.replace(validation_fraction=0.0, keep_best=False))
    data = load_data(config)
    assert data.num_val > 0 and data.num_train + data.num_val == full.num_train
    assert data.num_test == full.num_test
    np.testing.assert_array_equal(data.labels("test"), full.labels("test"))
    # The best epoch is not the last: a gentle first epoch (a warm-up at 0.05), then lr 1.0
    steps_per_epoch = data.num_train // config.batch_size
    config = config.replace(lr=1.0, warmup_steps=steps_per_epoch, warmup_lr=0.05)
    trainer = GreedyTrainer(build_network(config, data), data, config, verbose=0, log=quiet_log)
    records = trainer.run()
    history = [r for r in trainer.runlog.records if r["event"] == "epoch"]
    images = {split: np.concatenate([x.numpy() for x, _ in data.eval_batches(split, 512)]) for split in ("val", "test")}
    for j, r in enumerate(records):
        epochs = [h for h in history if h["problem"] == r["problem"]]
        vals = [h["val_accuracy"] for h in epochs]
        assert r["kept_epoch"] == int(np.argmax(vals)) and r["val_accuracy"] == max(vals)
        assert r["kept_epoch"] != len(epochs) - 1 and max(vals) > vals[-1], vals
        # the weights kept are those of the best epoch: its accuracies, recomputed from them
        classifier = trainer.network.compose(upto=j + 1, head=trainer.heads[j])
        for split in ("val", "test"):
            predicted = np.argmax(classifier(images[split], training=False), -1)
            accuracy = np.mean(predicted == data.labels(split))
            assert accuracy == pytest.approx(epochs[r["kept_epoch"]][f"{split}_accuracy"], abs=1e-9), (j, split)
        assert r["test_accuracy"] == pytest.approx(epochs[r["kept_epoch"]]["test_accuracy"], abs=1e-9)


def test_keep_best_without_validation_is_refused():
    with pytest.raises(ConfigError, match="validation_fraction"):
        tiny_config(keep_best=True).validate()
