"""Issue #13, "Trust under attack": a second process on a run directory, NaN states, torn logs,
damaged checkpoints, stale exports, foreign directories, pickles and server addresses.

The one-line errors of the apps are cases of the tables in tests/test_cli.py; exported
signatures under malformed requests are tested in tests/test_serving.py.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_cli, tiny_config

from apps.runner import build_network, resolve, run_training
from layerwise.data import load_dataset
from layerwise.errors import (
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    DatasetUnavailableError,
    ModelServerError,
    NonFiniteLossError,
    WorkdirBusyError,
)
from layerwise.run.checkpoints import ProblemCheckpoints, load_arrays, save_arrays
from layerwise.export import export_run
from layerwise.run.lock import LOCK_FILE, workdir_lock
from layerwise.run.report import write_report
from layerwise.run.runlog import RunLog, read_records
from layerwise.run.workdir import open_run
from layerwise.serving import clients as serving
from layerwise.serving.versions import version_labels, versions

NET = "layerwise_cnn"
TINY_ARGS = ["--dataset", "digits", "--num_stages", "2", "--width", "8", "--downsample_at", "1",
             "--aux_width", "8", "--batch_size", "32", "--verbose", "0"]


# ------------------------------------------------------------------ two processes, one workdir
def _hold_lock_in_a_child(workdir: str) -> int:
    """A forked process that takes the run directory's lock and sleeps; returns its pid once it holds it."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest, no TensorFlow, only the lock
        try:
            os.close(read)
            with workdir_lock(workdir, "training"):
                os.write(write, b"x")
                time.sleep(120)
        finally:
            os._exit(0)
    os.close(write)
    assert os.read(read, 1) == b"x"
    os.close(read)
    return pid


def test_a_held_workdir_is_refused_with_the_holders_pid_and_a_killed_holder_blocks_nothing(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = _hold_lock_in_a_child(str(workdir))
    try:
        with pytest.raises(WorkdirBusyError, match=rf"in use by another process \(pid {holder}, training since"):
            with workdir_lock(str(workdir), "exporting"):
                pass
        with pytest.raises(WorkdirBusyError, match=f"pid {holder}"):
            with open_run(str(workdir), resolve(tiny_config())):
                pass
        assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # no config.json written by the refused run
    finally:
        os.kill(holder, signal.SIGKILL)  # kill -9: the kernel drops the lock with the process
        os.waitpid(holder, 0)
    with workdir_lock(str(workdir), "training"):
        with workdir_lock(str(workdir), "writing the report"):  # re-entrant in one process
            pass
    with open_run(str(workdir), resolve(tiny_config())) as resumed:
        assert resumed is False and (workdir / "config.json").exists()


@pytest.mark.slow
def test_a_training_on_a_held_workdir_is_one_line_naming_the_holder(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = _hold_lock_in_a_child(str(workdir))
    try:
        result = run_cli("apps.train", "--workdir", str(workdir), *TINY_ARGS, "--epochs_per_stage", "1")
        report = run_cli("apps.report", str(workdir))
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and f"pid {holder}" in errors[0], result.stderr[-2000:]
    assert sorted(os.listdir(workdir)) == [LOCK_FILE]
    assert report.returncode == 2 and "is not a run directory" in report.stderr


@pytest.mark.slow
def test_two_trainings_started_together_leave_one_consistent_run(tmp_path):
    """The issue's race: both passed the config check, and config.json said seed 1 while stage 0
    held seed 2's weights. Now one run is refused, and the run left is one seed's, bit for bit."""
    workdir = str(tmp_path / "run")
    args = {seed: [sys.executable, "-m", "apps.train", "--workdir", workdir, *TINY_ARGS, "--epochs_per_stage", "2",
                   "--seed", str(seed)] for seed in (1, 2)}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = {seed: subprocess.Popen(a, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed, a in args.items()}
    outputs = {seed: p.communicate(timeout=600) for seed, p in procs.items()}
    codes = {seed: p.returncode for seed, p in procs.items()}
    assert sorted(codes.values()) == [0, 2], outputs
    winner = next(seed for seed, code in codes.items() if code == 0)
    loser = 3 - winner
    errors = [line for line in outputs[loser][1].splitlines() if line.startswith("error:")]
    assert len(errors) == 1, outputs[loser][1]
    assert f"pid {procs[winner].pid}" in errors[0] or "different configuration" in errors[0], errors[0]
    assert json.loads(Path(workdir, "config.json").read_text())["seed"] == winner
    stages = [(r["problem"]) for r in read_records(os.path.join(workdir, "metrics.jsonl")) if r["event"] == "stage"]
    assert stages == ["stage_00", "stage_01"]  # each stage recorded once
    alone = str(tmp_path / "alone")
    assert run_cli(*args[winner][2:4], alone, *args[winner][5:]).returncode == 0
    for stage in ("stage_00", "stage_01"):
        got, _ = load_arrays(os.path.join(workdir, "checkpoints", stage, "final.npz"))
        want, _ = load_arrays(os.path.join(alone, "checkpoints", stage, "final.npz"))
        assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in got), stage


# ------------------------------------------------------------------ NaN and infinite states
@pytest.mark.parametrize("mode", ["layerwise", "decoupled"])
def test_on_nan_skip_never_checkpoints_finalises_or_exports_a_non_finite_stage(tmp_path, mode):
    workdir = str(tmp_path / "run")
    config = resolve(tiny_config(lr=10.0, on_nan="skip", mode=mode))
    with pytest.raises(NonFiniteLossError) as raised:
        run_training(config, workdir, verbose=0, log=lambda _: None)
    message = str(raised.value)
    assert "became NaN or infinite" in message and "new --workdir with a lower --lr (now 10)" in message
    assert "refused as a different configuration" in message
    found = [os.path.join(root, f) for root, _, files in os.walk(workdir) for f in files]
    assert not [f for f in found if f.endswith(".npz")], found  # no epoch checkpoint, no final.npz
    assert not os.path.exists(os.path.join(workdir, "export"))
    assert not [r for r in read_records(os.path.join(workdir, "metrics.jsonl")) if r["event"] in ("epoch", "stage")]


def test_a_non_finite_loss_says_how_to_retry(tmp_path):
    with pytest.raises(NonFiniteLossError, match=r"the loss became -?(nan|inf).*new --workdir with a lower --lr "
                       r"\(now 1e\+30\).*--on_nan=skip"):
        run_training(resolve(tiny_config(lr=1e30)), str(tmp_path / "run"), verbose=0, log=lambda _: None)


def test_non_finite_checkpoints_are_never_the_last_good_one(tmp_path):
    messages = []
    checkpoints = ProblemCheckpoints(str(tmp_path), "stage_00", warn=messages.append)
    checkpoints.save_epoch(0, {"model/0000": np.ones(3, np.float32)}, {"history": []})
    checkpoints.save_epoch(1, {"model/0000": np.array([1.0, np.nan, 2.0], np.float32)}, {"history": []})
    _, meta = checkpoints.latest_epoch()
    assert meta["epoch"] == 0 and "NaN or infinite values (model/0000)" in messages[0]
    checkpoints.save_final({"model/0000": np.array([np.inf], np.float32)}, {"record": {}})
    with pytest.raises(CorruptCheckpointError, match="NaN or infinite"):
        checkpoints.load_final()


# ------------------------------------------------------------------ metrics.jsonl
def test_a_torn_metrics_line_is_cut_before_the_next_append_and_skipped_by_readers(tmp_path):
    def epoch_record(n):  # the keys an epoch record needs (layerwise.run.runlog.REQUIRED_KEYS)
        return {"event": "epoch", "problem": "stage_00", "stage": 0, "epoch": n, "loss": 1.0}

    log = RunLog(str(tmp_path))
    log.write(epoch_record(0))
    log.write(epoch_record(1))
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(path.read_bytes()[:-9])  # a crash mid-line
    again = RunLog(str(tmp_path))
    assert again.records == [epoch_record(0)]
    again.write(epoch_record(1))
    assert [json.loads(line) for line in path.read_text().splitlines()] == again.records  # every line parses
    # a whole last record without its newline keeps it; a glued line (the old bug) is skipped
    path.write_text(json.dumps(epoch_record(0)) + '\n{"event": "ep{"event": "stage"}\n' + json.dumps(epoch_record(1)))
    third = RunLog(str(tmp_path))
    third.write({"event": "stage", "problem": "stage_00", "stage": 0})
    assert [r.get("epoch", r.get("problem")) for r in read_records(str(path))] == [0, 1, "stage_00"]
    (tmp_path / "config.json").write_text(json.dumps(resolve(tiny_config()).to_dict()))
    epoch = {"event": "epoch", "problem": "stage_00", "stage": 0, "epoch": 0, "loss": 1.0, "test_accuracy": 0.5}
    path.write_bytes(json.dumps(epoch).encode() + b'\n{"event": "stage", "problem": "stage_0\xff')
    assert write_report(str(tmp_path)).endswith("report.md")  # readers tolerate it too
    assert (tmp_path / "plots" / "training_curves.png").exists()


# ------------------------------------------------------------------ damaged checkpoints
def _central_directory(data: bytes) -> list[int]:
    """Offsets of the central-directory entries of a zip archive."""
    offsets, start = [], 0
    while (i := data.find(b"PK\x01\x02", start)) >= 0:
        offsets.append(i)
        start = i + 4
    return offsets


def test_any_damaged_checkpoint_byte_is_a_corrupt_checkpoint_and_never_another_error(tmp_path):
    path = str(tmp_path / "c.npz")
    save_arrays(path, {"model/0000": np.arange(12, dtype=np.float32), "model/0001": np.ones(2)}, {"epoch": 0})
    data = Path(path).read_bytes()
    entry = _central_directory(data)[0]
    # the two: the "encrypted" flag of a directory entry (RuntimeError before), and its
    # compression method (NotImplementedError before)
    flags, = struct.unpack_from("<H", data, entry + 8)
    for offset, value in ((entry + 8, struct.pack("<H", flags | 1)), (entry + 10, struct.pack("<H", 99))):
        Path(path).write_bytes(data[:offset] + value + data[offset + 2:])
        with pytest.raises(CorruptCheckpointError, match="unreadable"):
            load_arrays(path)
    detected = 0
    for i in range(len(data)):  # every byte, flipped
        Path(path).write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
        try:
            load_arrays(path)
        except CorruptCheckpointError:
            detected += 1
    assert detected > len(data) // 2


def test_an_unreadable_epoch_checkpoint_falls_back_whatever_the_reader_raises(tmp_path):
    messages = []
    checkpoints = ProblemCheckpoints(str(tmp_path), "stage_00", warn=messages.append)
    checkpoints.save_epoch(0, {"w": np.zeros(3)}, {})
    checkpoints.save_epoch(1, {"w": np.ones(3)}, {})
    newest = Path(checkpoints.epoch_path(1))
    data = newest.read_bytes()
    entry = _central_directory(data)[0]
    newest.write_bytes(data[:entry + 8] + b"\x01\x00" + data[entry + 10:])
    _, meta = checkpoints.latest_epoch()
    assert meta["epoch"] == 0 and "RuntimeError" in messages[0] and "falling back" in messages[0]


# ------------------------------------------------------------------ stale exports
@pytest.mark.slow
def test_an_unfinished_run_is_not_exported_and_a_partial_export_is_never_stable(tmp_path):
    workdir = str(tmp_path / "run")
    config = resolve(tiny_config())
    run_training(config, workdir, verbose=0, log=lambda _: None)
    for path in ("checkpoints/stage_01", f"export/{NET}_stage_01"):  # as if killed before stage 1 finished
        subprocess.run(["rm", "-r", os.path.join(workdir, path)], check=True)
    export = os.path.join(workdir, "export")
    before = sorted(os.listdir(export))
    with pytest.raises(CheckpointError, match=r"is unfinished \(1 of 2 stages trained\).*--allow_unfinished"):
        export_run(workdir, build_network)
    assert sorted(os.listdir(export)) == before
    warnings = []
    export_run(workdir, build_network, allow_unfinished=True, log=warnings.append)
    assert "exporting 1 of 2 stages" in warnings[0]
    assert version_labels(os.path.join(export, f"{NET}_ensemble")) == {"unfinished": 1}
    assert version_labels(os.path.join(export, f"{NET}_cascade")) == {"unfinished": 1}
    assert version_labels(os.path.join(export, f"{NET}_stage_00")) == {"stable": 2}  # a finished stage is whole

    messages = []
    run_training(config, workdir, verbose=0, log=messages.append)  # training finishes
    assert any(f"export/{NET}_ensemble holds an export of the unfinished run" in m for m in messages), messages
    text = Path(export, "models.config").read_text()
    ensemble = text.split(f'name: "{NET}_ensemble"')[1].split("}\n  }")[0]
    assert 'key: "unfinished" value: 1' in ensemble and "stable" not in ensemble
    export_run(workdir, build_network)
    assert version_labels(os.path.join(export, f"{NET}_ensemble")) == {"stable": 2}
    assert versions(os.path.join(export, f"{NET}_stage_01")) == [1, 2]


# ------------------------------------------------------------------ directories that are not runs
def test_a_non_empty_directory_that_is_not_a_run_is_refused_untouched(tmp_path):
    import layerwise

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.md").write_text("my notes\n")
    config = resolve(tiny_config())
    data = load_dataset("digits")
    with pytest.raises(ConfigError, match=r"is not empty and holds no run \(no config.json; it has report.md\)"):
        layerwise.fit(build_network(config, data), data, config=config, workdir=str(mine), verbose=0)
    assert sorted(os.listdir(mine)) == ["report.md"] and (mine / "report.md").read_text() == "my notes\n"


# ------------------------------------------------------------------ CIFAR files
def _write_cifar_binary(path, n, rng, label_bytes=1, classes=10):
    labels = rng.integers(0, classes, size=(n, label_bytes), dtype=np.uint8)
    pixels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    np.concatenate([labels, pixels], axis=1).tofile(path)
    return labels[:, -1], pixels


def test_cifar10_and_cifar100_binary_versions_in_the_real_layout(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    batches = [_write_cifar_binary(root / f"data_batch_{i}.bin", 4, rng) for i in range(1, 6)]
    _write_cifar_binary(root / "test_batch.bin", 3, rng)
    data = load_dataset("cifar10", data_dir=str(tmp_path), augment="none")
    assert (data.num_train, data.num_test, data.image_shape, data.num_classes) == (20, 3, (32, 32, 3), 10)
    x, y = data.arrays("train")
    labels, flat = batches[0]
    assert list(y[:4]) == list(labels)
    # channel planes R, G, B of 32x32, row-major (as the python version)
    assert x[0, 0, 1, 0] == flat[0, 1] and x[0, 0, 0, 1] == flat[0, 1024] and x[0, 1, 0, 2] == flat[0, 2048 + 32]

    root100 = tmp_path / "c100" / "cifar-100-binary"
    root100.mkdir(parents=True)
    fine, _ = _write_cifar_binary(root100 / "train.bin", 6, rng, label_bytes=2, classes=100)
    _write_cifar_binary(root100 / "test.bin", 2, rng, label_bytes=2, classes=100)
    data = load_dataset("cifar100", data_dir=str(tmp_path / "c100"), augment="none")
    assert data.num_classes == 100 and list(data.arrays("train")[1]) == list(fine)  # the fine label

    with open(root / "data_batch_3.bin", "r+b") as f:  # truncated mid-record
        f.truncate(4 * 3073 - 100)
    with pytest.raises(DatasetUnavailableError, match="not a whole number of 3073-byte records"):
        load_dataset("cifar10", data_dir=str(tmp_path))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_pickles_are_never_unpickled_without_trust_pickle(tmp_path, capsys):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump(_Payload(tmp_path / "pwned"), f)
    with pytest.raises(DatasetUnavailableError, match="holds the python version.*cifar-10-binary.tar.gz.*--trust_pickle"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(DatasetUnavailableError):  # trusted: unpickled (and then not a CIFAR batch)
        load_dataset("cifar10", data_dir=str(tmp_path), trust_pickle=True)
    assert (tmp_path / "pwned").exists() and "warning: unpickling" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="reads no pickles"):
        load_dataset("digits", trust_pickle=True)


# ------------------------------------------------------------------ server addresses
@pytest.mark.parametrize("address", ["file:///etc/passwd", "ftp://models.example.com", "gopher://x:70", "ws://localhost:8501"])
def test_the_rest_client_takes_http_addresses_only(address):
    with pytest.raises(ConfigError, match="must be http:// or https://"):
        serving.RestClient(address, "m")


def test_the_rest_client_follows_no_redirect_off_http(tmp_path):
    import http.server
    import threading

    secret = tmp_path / "secret.json"
    secret.write_text('{"predictions": [[1.0]]}')

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", f"file://{secret}")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = serving.RestClient(f"http://127.0.0.1:{server.server_address[1]}", "m", timeout=5)
        with pytest.raises(ModelServerError, match="HTTP 302"):
            client.input_specs()
    finally:
        server.shutdown()
        server.server_close()
    assert serving.RestClient("localhost:8501", "m").server == "http://localhost:8501"
    assert serving.RestClient("https://serving.example.com/", "m").server == "https://serving.example.com"
