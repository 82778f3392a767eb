"""The apps' one-line errors (exit code 2, no traceback, nothing written)."""

import os

import pytest

from conftest import run_cli

BAD_FLAGS = [
    (["--dataset", "cifar11"], "unknown dataset 'cifar11'"),
    (["--mode", "sideways"], "unknown mode 'sideways'"),
    (["--model", "resnet9000"], "unknown model 'resnet9000'"),
    (["--width", "0"], "width must be positive"),
    (["--epochs_per_stage", "-1"], "epochs_per_stage must be positive"),
    (["--downsample_at", "1,2,3,4", "--num_stages", "5"], "divisible by 16"),
    (["--batch_size", "100000"], "absurd"),
    (["--epochs_per_stage", "many"], "epochs_per_stage"),
    (["--no_such_flag"], "no_such_flag"),
    (["--experiment", "cifar10_k9"], "unknown experiment 'cifar10_k9'"),
    (["--experiment", "cifar10_k1", "--data_dir", "/nonexistent/layerwise-data"], "download_and_prepare"),
    (["--keep_best"], "validation_fraction"),
    (["--data_dir", "/tmp"], "drop --data_dir"),
    (["--strategy", "sideways"], "unknown strategy 'sideways'"),
    (["--precision", "float8"], "unknown precision 'float8'"),
    (["--dataset", "digits", "--downsample_input", "--downsample_at", "1,2", "--aux_conv_layers", "1"], "features are 1x1"),
    (["--cache_prefix", "memory", "--augment", "crop", "--dataset", "digits"], "without random augmentation"),
]


@pytest.mark.parametrize("flags, message", BAD_FLAGS)
def test_bad_flags_give_one_line_and_exit_code_2(tmp_path, flags, message):
    workdir = tmp_path / "run"
    result = run_cli("apps.train", "--workdir", str(workdir), *flags, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not workdir.exists()


def test_debug_flag_shows_the_traceback(tmp_path):
    result = run_cli("apps.train", "--workdir", str(tmp_path / "r"), "--width", "0", "--debug", timeout=120)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_cli_trains_resumes_and_refuses_other_configs(tmp_path):
    workdir = str(tmp_path / "run")
    args = ["apps.train", "--workdir", workdir, "--dataset", "digits", "--num_stages", "2", "--width", "8",
            "--downsample_at", "1", "--aux_width", "8", "--epochs_per_stage", "1"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert "| stage |" in first.stdout and "ensemble acc" in first.stdout
    for name in ("config.json", "metrics.jsonl", "tensorboard", "checkpoints", "export"):
        assert os.path.exists(os.path.join(workdir, name)), name
    again = run_cli(*args)
    assert again.returncode == 0 and "finished earlier" in again.stdout
    other = run_cli(*args, "--lr", "0.2")
    assert other.returncode == 2 and "different configuration" in other.stderr


# Every app: bad input is one line, exit code 2, no traceback (issue "a run a person can trust").
BAD_INPUT_BY_APP = [
    (["apps.tune", "--tuner", "grid", "--workdir", "{tmp}/w"], "unknown --tuner 'grid'"),
    (["apps.predict", "--model_dir", "{tmp}", "--npy", "{tmp}/x.npy"], "is neither a SavedModel"),
    (["apps.export", "{tmp}/missing"], "is not a run directory"),
    (["apps.report", "{tmp}/missing"], "is not a run directory"),
    (["apps.probe", "{tmp}/missing"], "is not a run directory"),
    (["apps.layer_responses", "--workdirs", "{tmp}/missing"], "is not a run directory"),
    (["apps.optnets", "--m", "0", "--workdir", "{tmp}/w"], "m must be positive"),
    (["apps.bench", "--size", "huge"], "--size=huge"),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_INPUT_BY_APP, ids=[a[0][0] for a in BAD_INPUT_BY_APP])
def test_every_app_reports_bad_input_in_one_line(tmp_path, args, message):
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
