"""Distribution: MirroredStrategy over 2 logical CPUs and two real multi-worker processes.

Each runs in fresh Python processes: logical devices and TF_CONFIG must be set before
TensorFlow initialises its runtime.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from layerwise.distribute import is_chief, make_strategy
from layerwise.errors import ConfigError

WORKER = os.path.join(REPO, "tests", "distributed_worker.py")


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def test_unknown_strategy_and_missing_tf_config_are_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="unknown strategy"):
        make_strategy("sideways")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        make_strategy("multi_worker")
    assert is_chief(None) and is_chief(make_strategy("auto"))


def test_mirrored_over_two_cpus_matches_one_device(tmp_path):
    """Layerwise and decoupled, synchronized BatchNorm, the same global batch."""
    out = tmp_path / "weights.npz"
    result = subprocess.run([sys.executable, WORKER, "mirrored", str(out)], cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    arrays = np.load(out)
    names = sorted(k[4:] for k in arrays.files if k.startswith("one_"))
    assert any(n.startswith("decoupled_") for n in names) and any(n.startswith("layerwise_") for n in names)
    for name in names:
        np.testing.assert_allclose(arrays[f"two_{name}"], arrays[f"one_{name}"], rtol=1e-3, atol=2e-3, err_msg=name)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(tmp_path, workdir, tag, num_stages=1):
    """Trains ``config(num_stages)`` on two localhost worker processes; returns their npz files."""
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "worker", str(tmp_path / f"{tag}{index}.npz"), workdir, str(num_stages)],
            cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [np.load(tmp_path / f"{tag}{index}.npz") for index in range(2)]


def _assert_same_weights(a, b, exact=True):
    weights = [k for k in a.files if k.startswith("var_")]
    assert weights
    for name in weights:
        if exact:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], atol=1e-5, err_msg=name)


@pytest.mark.slow
def test_two_worker_processes_end_with_identical_weights(tmp_path):
    workdir = str(tmp_path / "run")
    chief, other = _run_two_workers(tmp_path, workdir, "w")
    assert bool(chief["chief"]) and not bool(other["chief"])
    assert str(chief["workdir"]) == workdir and str(other["workdir"]) != workdir
    assert not os.path.exists(str(other["workdir"]))  # the non-chief's temp dir is deleted
    assert os.path.exists(os.path.join(workdir, "export", "models.config"))
    _assert_same_weights(chief, other)


@pytest.mark.slow
def test_a_multi_worker_rerun_resumes_on_every_worker(tmp_path):
    """After a crash between stages the rerun loads stage 0 on both workers (on a shared
    filesystem); a worker that retrained it instead would wait forever on the chief."""
    workdir = str(tmp_path / "run")
    first, _ = _run_two_workers(tmp_path, workdir, "first", num_stages=2)
    os.remove(os.path.join(workdir, "checkpoints", "stage_01", "final.npz"))  # "crashed" in stage 1
    chief, other = _run_two_workers(tmp_path, workdir, "again", num_stages=2)
    _assert_same_weights(chief, other)
    _assert_same_weights(chief, first, exact=False)
