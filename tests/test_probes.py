"""Restoring a trained run from its workdir, and the separability probes / apps.probe reports."""

import json
import os

import keras
import numpy as np
import pytest

from apps.probe import probe_workdirs
from apps.runner import restore
from apps.runner import run_training
from conftest import tiny_config
from layerwise.training.hooks import probabilities_on_test
from layerwise.errors import CheckpointError
from layerwise.analysis.probes import average_to


def _restored_accuracy(run, j):
    images = run.network.image_input()
    model = keras.Model(images, run.heads[j](run.network.compose(upto=j + 1)(images)))
    return float(np.mean(np.argmax(probabilities_on_test(model, run.data), -1) == run.data.labels("test")))


@pytest.mark.parametrize("changes", [{}, {"prune_to_width": 4}], ids=["plain", "pruned"])
def test_restored_run_reproduces_the_recorded_accuracy(tmp_path, quiet_log, changes):
    workdir = str(tmp_path / "run")
    records = run_training(tiny_config(**changes), workdir, verbose=0, log=quiet_log)
    run = restore(workdir)
    assert run.trained_stages == 2
    last = [r for r in records if r["stage"] == 1][-1]  # the pruned record when pruning
    assert _restored_accuracy(run, 1) == pytest.approx(last["test_accuracy"], abs=1e-9)


def test_restore_needs_a_finished_stage(tmp_path):
    os.makedirs(tmp_path / "run")
    (tmp_path / "run" / "config.json").write_text(json.dumps(tiny_config().to_dict()))
    with pytest.raises(CheckpointError, match="no finished stage"):
        restore(str(tmp_path / "run"))


def test_average_to_2x2():
    x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
    out = average_to(x)
    assert out.shape == (2, 12)
    np.testing.assert_allclose(out[0, :3], x[0, :2, :2].mean(axis=(0, 1)))


def test_probe_app_writes_table_json_and_png(tmp_path, quiet_log):
    layerwise = str(tmp_path / "lw")
    e2e = str(tmp_path / "e2e")
    run_training(tiny_config(), layerwise, verbose=0, log=quiet_log)
    run_training(tiny_config(mode="end_to_end"), e2e, verbose=0, log=quiet_log)
    out = str(tmp_path / "probes")
    runs = probe_workdirs([layerwise, e2e], out, ["linear", "cnn1"], epochs=1, width=8, log=quiet_log)
    assert len(runs) == 2 and all(len(rows) == 2 for rows in runs.values())
    assert all(0.0 <= row[p] <= 1.0 for rows in runs.values() for row in rows for p in ("linear", "cnn1"))
    assert all(row["linear"] > 0.5 for rows in runs.values() for row in rows)  # digits are easy
    for name in ("probes.md", "probes.json", "probes.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert open(os.path.join(out, "probes.png"), "rb").read(4) == b"\x89PNG"
