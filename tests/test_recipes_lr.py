"""The papers' LR schedules and 10-crop testing: multistep + warm-up (He et al. 2016), reduce on
plateau (Krizhevsky et al. 2012) through a real run and its resume, and eval_crops=10."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from apps.runner import resolve, restore, run_training
from layerwise.run.checkpoints import ProblemCheckpoints
from layerwise.config import TrainConfig
from layerwise.data.crops import random_crops
from layerwise.errors import ConfigError
from layerwise.training.evaluation import ten_crop_probabilities
from layerwise.training.schedules import Plateau, make_schedule


def _lr(schedule, step):
    return float(schedule(tf.constant(step, tf.int64))) if callable(schedule) else schedule


def test_multistep_and_warmup_give_the_papers_lr_at_given_iterations():
    resnet110 = TrainConfig().replace(lr=0.1, lr_decay_factor=0.1, lr_schedule="multistep", lr_milestones=[32000, 48000],
                            lr_milestone_unit="step", warmup_steps=400, warmup_lr=0.01)
    schedule = make_schedule(resnet110.schedule, 0.1, steps_per_epoch=351, epochs=184, stretch=4)  # not stretched
    expected = {0: 0.01, 399: 0.01, 400: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 64000: 0.001}
    assert {s: _lr(schedule, s) for s in expected} == pytest.approx(expected)
    # epoch milestones are per stage and stretched J times end to end, like lr_decay_every
    epochs = resnet110.replace(lr_milestones=[2, 3], lr_milestone_unit="epoch", warmup_steps=0)
    schedule = make_schedule(epochs.schedule, 0.1, steps_per_epoch=10, epochs=8, stretch=2)
    assert [_lr(schedule, s) for s in (39, 40, 59, 60)] == pytest.approx([0.1, 0.01, 0.01, 0.001])
    # the default step schedule is still Keras's PiecewiseConstantDecay with the same boundaries
    default = make_schedule(TrainConfig().schedule, 0.05, steps_per_epoch=10, epochs=4)
    assert isinstance(default, keras.optimizers.schedules.PiecewiseConstantDecay)
    assert default.boundaries == [20] and default.values == pytest.approx([0.05, 0.01])


def test_plateau_decays_after_patience_epochs_without_improvement_and_not_before():
    plateau = Plateau(patience=2, factor=0.1)
    decisions = [plateau.update(a) for a in (0.50, 0.60, 0.60, 0.55, 0.70, 0.65, 0.70, 0.69, 0.71)]
    # 0.60 again is no improvement; the 2nd epoch without one decays, then the count restarts
    assert decisions == [False, False, False, True, False, False, True, False, False]
    assert plateau.scale == pytest.approx(0.01) and plateau.best == 0.71
    assert Plateau.from_config(TrainConfig().replace(plateau_patience=2, lr_decay_factor=0.1).schedule, plateau.state()) == plateau


@pytest.mark.parametrize("changes, message", [
    ({"lr_schedule": "plateau"}, "never the test set: also pass --validation_fraction"),
    ({"lr_schedule": "multistep"}, "needs positive integer lr_milestones"),
    ({"lr_schedule": "multistep", "lr_milestones": [5, 3]}, "strictly increasing"),
    ({"lr_milestones": [5]}, "apply to lr_schedule=multistep only"),
    ({"lr_schedule": "exponential"}, "unknown lr_schedule 'exponential'"),  # cosine exists since issue 24
    ({"warmup_steps": 400}, "warmup_lr > 0"),
    ({"eval_crops": 10}, "also pass --crop_size"),
    ({"eval_crops": 5, "crop_size": 6}, "eval_crops 5; choose one of: 1, 10"),
])
def test_bad_recipe_settings_are_one_line_errors(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**changes).validate()


def _epochs(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["event"] == "epoch"]


def test_plateau_run_decays_on_validation_and_resumes_to_the_uninterrupted_numbers(tmp_path, quiet_log):
    # lr 1e-8 on one stage: once the BatchNorm statistics settle, the validation accuracy stops
    # improving, so the schedule acts (a strictly higher accuracy is an improvement)
    config = resolve(tiny_config(
        epochs_per_stage=4, lr=1e-8, lr_schedule="plateau", plateau_patience=1, lr_decay_factor=0.5,
        validation_fraction=0.2, model_options={"num_stages": 1, "width": 8, "downsample_at": []},
    ))
    straight_dir = str(tmp_path / "straight")
    straight = run_training(config, straight_dir, verbose=0, log=quiet_log)
    epochs = _epochs(straight_dir)
    replay, scales = Plateau(1, 0.5), []
    for record in epochs:  # each epoch ran at the scale decided after the previous ones
        scales.append(replay.scale)
        replay.update(record["val_accuracy"])
    assert [r["lr"] for r in epochs] == pytest.approx([1e-8 * s for s in scales], rel=1e-6)

    def crash_in_third_epoch(message):  # after epoch 2's checkpoint, before epoch 3's
        if "epoch 3/4" in message:
            raise KeyboardInterrupt

    workdir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, workdir, verbose=1, log=crash_in_third_epoch)
    after_two = Plateau(1, 0.5)
    for record in epochs[:2]:
        after_two.update(record["val_accuracy"])
    assert after_two.reductions >= 1, [r["val_accuracy"] for r in epochs]  # the resumed run must restore it
    _, meta = ProblemCheckpoints(os.path.join(workdir, "checkpoints"), "stage_00").latest_epoch()
    assert meta["epoch"] == 1 and meta["plateau"] == after_two.state()  # saved with the epoch
    messages = []
    resumed = run_training(config, workdir, verbose=0, log=messages.append)
    assert any("resuming after epoch 2 of 4" in m for m in messages)
    assert [r["lr"] for r in _epochs(workdir)] == [r["lr"] for r in epochs]
    for key in ("test_accuracy", "accuracy", "val_accuracy"):
        assert resumed[0][key] == straight[0][key], key


def test_random_crops_are_windows_of_each_image():
    images = tf.reshape(tf.range(2 * 8 * 8, dtype=tf.float32), [2, 8, 8, 1])
    crops = random_crops(images, 6, tf.constant([1, 2], tf.int64)).numpy()
    assert crops.shape == (2, 6, 6, 1)
    for image, crop in zip(images.numpy(), crops):
        top, left = np.argwhere(image[..., 0] == crop[0, 0, 0])[0]
        np.testing.assert_array_equal(crop, image[top: top + 6, left: left + 6])
    again = random_crops(images, 6, tf.constant([1, 2], tf.int64)).numpy()
    np.testing.assert_array_equal(crops, again)  # stateless: a resumed epoch sees the same crops


def test_ten_crop_run_reports_top1_top5_error_and_warmup_multistep_lrs(tmp_path, quiet_log):
    # digits: 8x8 images, 6x6 training crops; warm-up for the first epoch, then /10 at iteration 60
    config = resolve(tiny_config(
        epochs_per_stage=2, crop_size=6, eval_crops=10, lr_schedule="multistep", lr_milestones=[60],
        lr_milestone_unit="step", lr_decay_factor=0.1, warmup_steps=44, warmup_lr=0.01,
        model_options={"num_stages": 1, "width": 8, "downsample_at": []},
    ))
    workdir = str(tmp_path / "run")
    record = run_training(config, workdir, verbose=0, log=quiet_log)[0]
    assert [r["lr"] for r in _epochs(workdir)] == pytest.approx([0.01, 0.005])  # 44 iterations/epoch
    assert record["eval_crops"] == 10 and record["test_top1_error"] == pytest.approx(1 - record["test_accuracy"])
    assert 0 <= record["test_top5_error"] < record["test_top1_error"] and 0 < record["centre_crop_accuracy"] < 1

    run = restore(workdir)  # the record's number is the 10-crop average of the trained classifier
    assert run.network.input_shape == (6, 6, 1)  # the network is built for the crops
    images = np.concatenate([x.numpy() for x, _ in run.data.full_eval_batches("test", 512)])
    probs = ten_crop_probabilities(run.classifiers[0], images, (6, 6))
    assert np.mean(probs.argmax(-1) == run.data.labels("test")) == pytest.approx(record["test_accuracy"], abs=1e-9)
    with open(os.path.join(workdir, "report.md")) as f:
        assert "10-crop top-1 err" in f.read()
