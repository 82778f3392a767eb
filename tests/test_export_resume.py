"""Per-stage SavedModels (loaded in a fresh process) and resuming a run directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve, run_training
from conftest import tiny_config
from layerwise.errors import WorkdirMismatchError
from layerwise.training.trainer import GreedyTrainer
from layerwise.run.workdir import check_workdir, prepare_workdir

LOAD_AND_PREDICT = """
import sys, numpy as np, tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
images = np.load(sys.argv[2])
out = model.signatures["serving_default"](images=tf.constant(images))
flt = model.signatures["serving_float"](images=tf.constant(np.load(sys.argv[3])))
np.savez(sys.argv[4], probs=out["probabilities"].numpy(), classes=out["classes"].numpy(),
         float_probs=flt["probabilities"].numpy())
"""


def test_exported_stages_load_in_a_fresh_process_and_match(tmp_path, quiet_log):
    config = resolve(tiny_config())
    workdir = str(tmp_path / "run")
    run_training(config, workdir, verbose=0, log=quiet_log)
    data = load_data(config)
    network = build_network(config, data)
    trainer = GreedyTrainer(network, data, config, workdir, verbose=0, log=quiet_log)
    raw, _ = data.arrays("test")
    raw = raw[:16].astype(np.uint8)
    np.save(tmp_path / "raw.npy", raw)
    normalized = data.normalize(raw.astype(np.float32)).numpy()
    np.save(tmp_path / "float.npy", normalized)
    for j in range(2):
        problem = trainer.stage_problem(j)
        record = trainer.run_problem(problem)  # loads the finished stage
        classifier = problem.classifier(network.image_input())
        expected = np.asarray(keras_softmax(classifier(normalized, training=False)))
        path = os.path.join(workdir, "export", f"layerwise_cnn_stage_{j:02d}", "1")
        assert os.path.exists(os.path.join(path, "saved_model.pb"))
        out = tmp_path / f"out{j}.npz"
        subprocess.run(
            [sys.executable, "-c", LOAD_AND_PREDICT, path, str(tmp_path / "raw.npy"), str(tmp_path / "float.npy"), str(out)],
            check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        got = np.load(out)
        np.testing.assert_allclose(got["probs"], expected, atol=1e-5)
        np.testing.assert_allclose(got["float_probs"], expected, atol=1e-5)
        np.testing.assert_array_equal(got["classes"], expected.argmax(-1))
        assert record["stage"] == j
    config_text = open(os.path.join(workdir, "export", "models.config")).read()
    assert config_text.count("config {") == 2 and "layerwise_cnn_stage_01" in config_text


def keras_softmax(logits):
    import tensorflow as tf

    return tf.nn.softmax(logits)


def test_resume_does_not_retrain_finished_stages(tmp_path, quiet_log):
    config = resolve(tiny_config(epochs_per_stage=2))
    workdir = str(tmp_path / "run")
    prepare_workdir(workdir, config)
    data = load_data(config)
    first = GreedyTrainer(build_network(config, data), data, config, workdir, verbose=0, log=quiet_log)
    first.run_problem(first.stage_problem(0))  # "stopped" after stage 0
    stage0 = {v.path: v.numpy().copy() for v in first.network.stages[0].variables}
    record0 = dict(first.records[0])

    messages = []
    records = run_training(config, workdir, verbose=0, log=messages.append)
    assert any("stage_00: finished earlier" in m for m in messages)
    assert records[0] == record0
    assert len(records) == 2
    resumed = GreedyTrainer(build_network(config, data), data, config, workdir, verbose=0, log=quiet_log)
    resumed.run_problem(resumed.stage_problem(0))
    for v in resumed.network.stages[0].variables:
        np.testing.assert_array_equal(v.numpy(), stage0[v.path])
    lines = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [(l["problem"], l["epoch"]) for l in lines if l["event"] == "epoch"] == [
        ("stage_00", 0), ("stage_00", 1), ("stage_01", 0), ("stage_01", 1)
    ]
    assert sum(l["event"] == "stage" for l in lines) == 2


def test_resume_mid_stage_gives_the_uninterrupted_numbers(tmp_path, quiet_log):
    config = resolve(tiny_config(epochs_per_stage=3, model_options={"num_stages": 1, "width": 8, "downsample_at": []}))
    straight = run_training(config, str(tmp_path / "straight"), verbose=0, log=quiet_log)

    def crash_in_second_epoch(message):  # the trainer logs an epoch before checkpointing it
        if "epoch 2/3" in message:
            raise KeyboardInterrupt

    workdir = str(tmp_path / "interrupted")
    metrics = Path(workdir) / "metrics.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_training(config, workdir, verbose=1, log=crash_in_second_epoch)
    (epoch_0,) = [line for line in metrics.read_text().splitlines() if '"event": "epoch"' in line]
    messages = []
    resumed = run_training(config, workdir, verbose=1, log=messages.append)
    assert any("resuming after epoch 1 of 3" in m for m in messages)
    # epoch 1 was loaded, not trained again: only epochs 2 and 3 ran, and the record of epoch 1
    # (with its wall-clock seconds) is the one the interrupted run wrote
    assert [m.split(":")[0] for m in messages if " epoch " in m and "/3:" in m] == [
        "stage_00 epoch 2/3", "stage_00 epoch 3/3"
    ]
    lines = [line for line in metrics.read_text().splitlines() if '"event": "epoch"' in line]
    assert len(lines) == 3 and lines[0] == epoch_0
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    assert resumed[0]["test_accuracy"] == straight[0]["test_accuracy"]
    assert resumed[0]["accuracy"] == straight[0]["accuracy"]


def test_workdir_of_another_config_is_refused_untouched(tmp_path, quiet_log):
    workdir = str(tmp_path / "run")
    config = resolve(tiny_config())
    prepare_workdir(workdir, config)
    before = open(os.path.join(workdir, "config.json")).read()
    with pytest.raises(WorkdirMismatchError, match="lr: 0.05 -> 0.1"):
        run_training(tiny_config(lr=0.1), workdir, verbose=0, log=quiet_log)
    assert open(os.path.join(workdir, "config.json")).read() == before
    assert sorted(os.listdir(workdir)) == ["config.json"]



def test_a_rerun_with_other_nested_options_is_refused_and_names_the_field(tmp_path, quiet_log):
    workdir = str(tmp_path / "run")
    config = resolve(tiny_config())
    prepare_workdir(workdir, config)
    assert config.model_options["width"] == 8
    with pytest.raises(WorkdirMismatchError, match=r"model_options(\.width)?: "):
        run_training(tiny_config(model_options={**config.model_options, "width": 16}), workdir, verbose=0,
                     log=quiet_log)
    with pytest.raises(WorkdirMismatchError, match=r"model_options(\.downsample_at)?: "):
        run_training(tiny_config(model_options={**config.model_options, "downsample_at": []}), workdir, verbose=0,
                     log=quiet_log)
    # the same options in another order are the same configuration: it resumes
    assert check_workdir(workdir, config.replace(model_options=dict(reversed(config.model_options.items()))))
    assert sorted(os.listdir(workdir)) == ["config.json"]


@pytest.mark.slow
def test_decoupled_run_restores_with_its_recorded_accuracy(tmp_path, quiet_log):
    from apps.runner import restore

    workdir = str(tmp_path / "run")
    records = run_training(tiny_config(mode="decoupled"), workdir, verbose=0, log=quiet_log)
    run = restore(workdir)
    assert run.problems == ["stage_00", "stage_01"] and run.trained_stages == 2
    images = np.concatenate([x.numpy() for x, _ in run.data.eval_batches("test", 512)])
    for classifier, record in zip(run.classifiers, records):
        predicted = np.argmax(classifier(images, training=False), -1)
        assert np.mean(predicted == run.data.labels("test")) == pytest.approx(record["test_accuracy"], abs=1e-9)
