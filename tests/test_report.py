"""Run reports: report.md/html with the stage table, and real (headless) PNG plots."""

import os

import matplotlib.image
import numpy as np

from apps.runner import run_training
from conftest import run_cli, tiny_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_real_png(path):
    data = open(path, "rb").read()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5_000, path
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(np.std(pixels[..., :3])) > 0.01, "a blank image"


def test_a_run_writes_its_report_with_table_and_plots(tmp_path, quiet_log):
    layerwise = str(tmp_path / "layerwise")
    end_to_end = str(tmp_path / "e2e")
    run_training(tiny_config(epochs_per_stage=2), layerwise, verbose=0, log=quiet_log)
    run_training(tiny_config(mode="end_to_end"), end_to_end, verbose=0, log=quiet_log)
    report = open(os.path.join(layerwise, "report.md")).read()
    for column in ("params", "GFLOPs", "train acc", "test acc", "ensemble acc", "epoch s", "peak MiB"):
        assert column in report, column
    assert report.count("\n| 0 |") == 1 and report.count("\n| 1 |") == 1
    html = open(os.path.join(layerwise, "report.html")).read()
    assert "<table>" in html and "plots/accuracy_per_stage.png" in html
    for name in ("accuracy_per_stage.png", "training_curves.png"):
        _assert_real_png(os.path.join(layerwise, "plots", name))

    result = run_cli("apps.report", layerwise, "--compare", end_to_end, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    _assert_real_png(os.path.join(layerwise, "plots", "accuracy_per_stage.png"))


def test_probe_results_in_the_workdir_get_a_plot(tmp_path, quiet_log):
    import json

    from layerwise.run.report import write_report

    workdir = str(tmp_path / "run")
    run_training(tiny_config(), workdir, verbose=0, log=quiet_log)
    rows = [{"stage": 0, "shape": [8, 8, 8], "linear": 0.8, "cnn1": 0.85}, {"stage": 1, "shape": [4, 4, 16], "linear": 0.9, "cnn1": 0.92}]
    open(os.path.join(workdir, "probes.json"), "w").write(json.dumps({"run (layerwise)": rows}))
    report = open(write_report(workdir)).read()
    assert "plots/probe_accuracy.png" in report
    _assert_real_png(os.path.join(workdir, "plots", "probe_accuracy.png"))


def test_training_curves_show_validation_accuracy_when_there_is_a_split_else_label_test():
    from layerwise.run.report import curve_metric

    with_validation = [{"problem": "stage_00", "epoch": 0, "loss": 1.0, "test_accuracy": 0.5, "val_accuracy": 0.4}]
    assert curve_metric(with_validation)[0] == "val_accuracy"
    key, label, title = curve_metric([{"problem": "stage_00", "epoch": 0, "loss": 1.0, "test_accuracy": 0.5}])
    assert key == "test_accuracy" and "test" in label and "not tuning" in title
