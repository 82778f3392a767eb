"""The apps' one-line errors (exit code 2, no traceback, nothing written)."""

import json
import os
import pickle
import subprocess
import sys

import pytest

from apps.runner import resolve
from conftest import REPO, run_cli, tiny_config

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
    (["--experiment", "cifar10_k1", "--data_dir", "/nonexistent/layerwise-data", "--download=false"], "download_and_prepare"),
    (["--keep_best"], "validation_fraction"),
    (["--data_dir", "/tmp"], "drop --data_dir"),
    (["--strategy", "sideways"], "unknown strategy 'sideways'"),
    (["--precision", "float8"], "unknown precision 'float8'"),
    (["--cache_prefix", "memory", "--augment", "crop", "--dataset", "digits"], "without random augmentation"),
    # issue #13, "Errors that are still tracebacks": checked before anything is read or written
    (["--model_option", "width=abc"], "option width must be an integer"),
    (["--seed", "-1"], "seed must be in 0 .. 4294967295"),
    (["--seed", "4294967296"], "seed must be in 0 .. 4294967295"),
    (["--split_seed", "-3"], "split_seed must be in 0 .. 4294967295"),
    (["--weight_decay", "inf"], "0 <= weight_decay < inf"),
    (["--lr", "nan"], "lr must be a number, got NaN"),
    (["--dataset", "digits", "--width", "8", "--prune_to_width", "9"], "prune_to_width 9 is more than the 8 filters"),
    (["--dataset", "digits", "stray"], "unexpected argument(s) 'stray'"),
    (["--workdir", ""], "the run directory is empty"),
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
    assert "precision: auto -> " in first.stdout  # the default, resolved for this machine and recorded
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["precision"] in ("float32", "mixed_bfloat16")
    for name in ("config.json", "metrics.jsonl", "tensorboard", "checkpoints", "export"):
        assert os.path.exists(os.path.join(workdir, name)), name
    again = run_cli(*args)
    assert again.returncode == 0 and "finished earlier" in again.stdout
    other = run_cli(*args, "--lr", "0.2")
    assert other.returncode == 2 and "different configuration" in other.stderr


# Every app: bad input is one line, exit code 2, no traceback, and nothing written (issue "a run
# a person can trust", issue #13). {tmp} holds the files of make_bad_inputs; "--workdir {tmp}/w"
# is a throwaway directory (left out of docs/trust.md's commands).
BAD_INPUT_BY_APP = [
    (["apps.tune", "--tuner", "grid", "--workdir", "{tmp}/w"], "unknown --tuner 'grid'"),
    (["apps.predict", "--model_dir", "{tmp}", "--npy", "{tmp}/x.npy"], "is neither a SavedModel"),
    (["apps.export", "{tmp}/missing"], "is not a run directory"),
    (["apps.report", "{tmp}/missing"], "is not a run directory"),
    (["apps.probe", "{tmp}/missing"], "is not a run directory"),
    (["apps.layer_responses", "--workdirs", "{tmp}/missing"], "is not a run directory"),
    (["apps.optnets", "--m", "0", "--workdir", "{tmp}/w"], "m must be positive"),
    (["apps.bench", "--size", "huge"], "--size=huge"),
    # issue #13: --config files of the wrong types
    (["apps.train", "--config", "{tmp}/config_string_batch.json", "--workdir", "{tmp}/w"],
     "batch_size must be an integer, got '64'"),
    (["apps.train", "--config", "{tmp}/config_float_batch.json", "--workdir", "{tmp}/w"],
     "batch_size must be an integer, got 64.5"),
    (["apps.train", "--config", "{tmp}/config_null_seed.json", "--workdir", "{tmp}/w"], "seed must be an integer, got None"),
    (["apps.train", "--config", "{tmp}/config_binary.json", "--workdir", "{tmp}/w"], "is not a text file"),
    # workdirs that cannot be one
    (["apps.train", "--workdir", "{tmp}/a_file"], "is a file, not a directory"),
    (["apps.train", "--workdir", "{tmp}/a_file/run"], "a_file is a file; pass another --workdir"),
    (["apps.train", "--workdir", "{tmp}/my_files"], "is not empty and holds no run"),
    (["apps.report", "{tmp}/my_files"], "is not a run directory"),
    # a corrupt config.json, in every app that reads one
    (["apps.train", "--workdir", "{tmp}/corrupt_config_run"], "config.json is corrupt"),
    (["apps.export", "{tmp}/corrupt_config_run"], "config.json is corrupt"),
    (["apps.report", "{tmp}/corrupt_config_run"], "config.json is corrupt"),
    (["apps.probe", "{tmp}/corrupt_config_run"], "config.json is corrupt"),
    # export
    (["apps.export", "{tmp}/run_without_stages", "--export_dir", "{tmp}/a_file"], "a_file is a file"),
    (["apps.export", "{tmp}/run_without_stages"], "has no finished stage"),
    # predict
    (["apps.predict", "--model_dir", "{tmp}", "--images", "a.png", "b.png"], "unexpected argument(s) 'b.png'"),
    (["apps.predict", "--model_dir", "{tmp}", "--dataset", "digits", "--limit", "-5"], "--limit must be >= 0"),
    (["apps.predict", "--server", "file:///etc/passwd", "--model_name", "m", "--dataset", "digits"],
     "must be http:// or https://"),
    (["apps.predict", "--server", "ftp://models.example.com", "--model_name", "m", "--dataset", "digits"],
     "must be http:// or https://"),
    # pickles are not loaded by default, and flags are checked before any data is read
    (["apps.train", "--dataset", "cifar10", "--data_dir", "{tmp}/cifar_pickles", "--workdir", "{tmp}/w"],
     "holds the python version of cifar10"),
    (["apps.train", "--dataset", "cifar10", "--data_dir", "{tmp}/cifar_pickles", "--trust_pickle", "--lr", "-1",
      "--workdir", "{tmp}/w"], "lr must be positive"),
]


class _Payload:
    """Unpickling this runs a command: what a crafted CIFAR batch does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def make_bad_inputs(tmp) -> None:
    """The files BAD_INPUT_BY_APP refers to."""
    for name, text in (("config_string_batch.json", '{"batch_size": "64"}'), ("config_float_batch.json",
                       '{"batch_size": 64.5}'), ("config_null_seed.json", '{"seed": null}')):
        (tmp / name).write_text(text)
    (tmp / "config_binary.json").write_bytes(bytes(range(256)))
    (tmp / "a_file").write_text("not a directory\n")
    (tmp / "my_files").mkdir()
    (tmp / "my_files" / "report.md").write_text("my own report\n")
    (tmp / "corrupt_config_run").mkdir()
    (tmp / "corrupt_config_run" / "config.json").write_text('{"mode": ')
    (tmp / "corrupt_config_run" / "metrics.jsonl").write_text('{"event": "epoch"}\n')
    (tmp / "run_without_stages").mkdir()
    (tmp / "run_without_stages" / "config.json").write_text(json.dumps(resolve(tiny_config()).to_dict()))
    (tmp / "cifar_pickles" / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp / "cifar_pickles" / "cifar-10-batches-py" / name, "wb") as f:
            pickle.dump(_Payload(tmp / "pwned"), f)


def tree(path) -> dict[str, bytes]:
    """Every file under ``path`` with its content (directories too, as ``b"<dir>"``)."""
    out = {}
    for root, dirs, files in os.walk(path):
        for name in dirs:
            out[os.path.relpath(os.path.join(root, name), path)] = b"<dir>"
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                out[os.path.relpath(os.path.join(root, name), path)] = f.read()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("args, message", BAD_INPUT_BY_APP, ids=[" ".join(a)[5:60] for a, _ in BAD_INPUT_BY_APP])
def test_every_app_reports_bad_input_in_one_line(tmp_path, args, message):
    make_bad_inputs(tmp_path)
    before = tree(tmp_path)
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], timeout=180)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert tree(tmp_path) == before  # nothing written, nothing changed (and no pickle ran: no {tmp}/pwned)


APPS = ("alexnet_viz", "bench", "cascade_report", "degradation", "docs", "export", "layer_responses",
        "optnets", "predict", "probe", "report", "throughput", "train", "tune")


def test_help_imports_no_tensorflow():
    """Every app defines its flags without TensorFlow or Keras: ``--help`` answers in a fraction of a
    second instead of the ~6 s and 720 MB of importing TensorFlow (docs/performance.md)."""
    for app in APPS:  # one process each: apps may define flags of the same name
        code = f"import sys, apps.{app}; print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.stdout.strip() == "[]", (app, result.stdout + result.stderr)
    shown = run_cli("apps.train", "--help", timeout=60)
    assert "--epochs_per_stage" in shown.stdout and "--aux_width" in shown.stdout
