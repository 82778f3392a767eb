"""Crash safety with real processes: kill -9 mid-stage, corrupt checkpoints, full disks."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve
from conftest import REPO, run_cli, tiny_config
from layerwise.files import atomic_write_bytes
from layerwise.run.checkpoints import ProblemCheckpoints, load_arrays, save_arrays
from layerwise.errors import CorruptCheckpointError, StorageError
from layerwise.training.trainer import GreedyTrainer

ARGS = ["--dataset", "digits", "--num_stages", "2", "--width", "8", "--downsample_at", "1",
        "--aux_width", "8", "--epochs_per_stage", "4", "--batch_size", "32", "--verbose", "0"]


def _stage_records(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(l) for l in f if json.loads(l)["event"] == "stage"]


def _epochs_done(workdir, problem):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        lines = [l for l in f if l.strip().endswith("}")]
    return sum(1 for l in lines if json.loads(l).get("problem") == problem and json.loads(l)["event"] == "epoch")


@pytest.mark.slow
def test_kill_9_mid_stage_then_resume_gives_the_uninterrupted_numbers(tmp_path):
    straight = str(tmp_path / "straight")
    assert run_cli("apps.train", "--workdir", straight, *ARGS).returncode == 0

    workdir = str(tmp_path / "killed")
    process = subprocess.Popen(
        [sys.executable, "-m", "apps.train", "--workdir", workdir, *ARGS],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    stage1 = ProblemCheckpoints(os.path.join(workdir, "checkpoints"), "stage_01")
    deadline = time.time() + 300
    while len(stage1.epochs()) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _epochs_done(workdir, "stage_01") < 4, "the run finished before it could be killed"
    stage0_final = os.path.join(workdir, "checkpoints", "stage_00", "final.npz")
    stage0_before = open(stage0_final, "rb").read()

    # the newest epoch checkpoint is damaged too: the resumed run must fall back to the one before
    newest = stage1.epoch_path(stage1.epochs()[-1])
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 2)

    resumed = run_cli("apps.train", "--workdir", workdir, *ARGS)
    assert resumed.returncode == 0, resumed.stderr
    assert "stage_00: finished earlier" in resumed.stdout
    assert "falling back to the previous checkpoint" in resumed.stdout
    assert "stage_01: resuming after epoch" in resumed.stdout
    assert open(stage0_final, "rb").read() == stage0_before  # not retrained, not rewritten
    for got, want in zip(_stage_records(workdir), _stage_records(straight)):
        for key in ("test_accuracy", "accuracy", "ensemble_accuracy", "params"):
            assert got[key] == want[key], key
    epochs = [(r["problem"], r["epoch"]) for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))
              if r["event"] == "epoch"]
    assert epochs == [("stage_00", e) for e in range(4)] + [("stage_01", e) for e in range(4)]


def test_truncated_checkpoint_is_detected(tmp_path):
    path = str(tmp_path / "c.npz")
    save_arrays(path, {"a": np.arange(1000.0)}, {"epoch": 1})
    arrays, meta = load_arrays(path)
    assert meta == {"epoch": 1} and arrays["a"].sum() == 499500.0
    data = open(path, "rb").read()
    for damaged in (data[: len(data) // 2], data[:200] + b"x" * 64 + data[264:]):
        open(path, "wb").write(damaged)
        with pytest.raises(CorruptCheckpointError, match="unreadable"):
            load_arrays(path)


def test_latest_epoch_falls_back_past_a_corrupt_file(tmp_path):
    messages = []
    checkpoints = ProblemCheckpoints(str(tmp_path), "stage_00", warn=messages.append)
    checkpoints.save_epoch(0, {"w": np.zeros(3)}, {})
    checkpoints.save_epoch(1, {"w": np.ones(3)}, {})
    open(checkpoints.epoch_path(1), "wb").write(b"not a zip")
    arrays, meta = checkpoints.latest_epoch()
    assert meta["epoch"] == 0 and "falling back" in messages[0]


def test_write_failure_is_a_clear_error_and_keeps_the_old_file(tmp_path):
    # The temporary file cannot be created (its name, path.tmp-<pid>-<random>, is longer than the
    # 255 bytes a file name may have): the write fails the way a full disk makes it fail, whatever
    # the user's permissions (the tests may run as root).
    path = tmp_path / ("f" * 220 + ".bin")
    path.write_bytes(b"old")
    with pytest.raises(StorageError, match="everything written before is intact"):
        atomic_write_bytes(str(path), b"new")
    assert path.read_bytes() == b"old"


def test_data_that_vanishes_mid_run_is_a_clear_error(tmp_path):
    import tensorflow as tf

    from layerwise.errors import DatasetUnavailableError
    from layerwise.training.epoch import data_errors

    paths = []
    for i in range(3):
        path = tmp_path / f"{i}.bin"
        path.write_bytes(b"x" * 10)
        paths.append(str(path))
    batches = tf.data.Dataset.from_tensor_slices(paths).map(tf.io.read_file)
    os.remove(paths[1])  # the dataset disappears while the run goes on
    seen = []
    with pytest.raises(DatasetUnavailableError, match="rerun the same command to resume"):
        with data_errors("stage_00 epoch 1"):
            for item in batches:
                seen.append(item)
    assert len(seen) == 1


def test_a_truncated_final_checkpoint_is_set_aside_and_the_stage_retrained(tmp_path):
    config = resolve(tiny_config(model_options={"num_stages": 1, "width": 8, "downsample_at": []}))
    workdir = str(tmp_path / "run")
    data = load_data(config)
    messages = []

    def train():
        trainer = GreedyTrainer(build_network(config, data), data, config, workdir, verbose=0, log=messages.append)
        return trainer.run(), trainer

    (first,), _ = train()
    checkpoints = ProblemCheckpoints(os.path.join(workdir, "checkpoints"), "stage_00")
    final = Path(checkpoints.final_path)
    truncated = final.read_bytes()[: final.stat().st_size // 2]
    final.write_bytes(truncated)

    (again,), trainer = train()
    assert Path(f"{final}.corrupt").read_bytes() == truncated  # kept for inspection
    assert any("retraining stage_00" in m and "final.npz.corrupt" in m for m in messages), messages
    assert not any("finished earlier" in m for m in messages)
    _, meta = load_arrays(checkpoints.final_path)  # a good final checkpoint again
    for key in ("test_accuracy", "accuracy", "ensemble_accuracy", "params"):  # deterministic: the same stage
        assert again[key] == first[key] == meta["record"][key], key
    epochs = [r for r in trainer.runlog.records if r["event"] == "epoch"]
    assert [(r["problem"], r["epoch"]) for r in epochs] == [("stage_00", 0)]  # retrained, logged once
