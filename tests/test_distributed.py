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
        np.testing.assert_allclose(arrays[f"one_{name}"], arrays[f"two_{name}"], rtol=1e-4, atol=1e-5, err_msg=name)


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_two_worker_processes_end_with_identical_weights(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    workdir = str(tmp_path / "run")
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, WORKER, "worker", str(tmp_path / f"w{index}.npz"), workdir],
            cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [p.communicate(timeout=180) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    chief, other = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert bool(chief["chief"]) and not bool(other["chief"])
    assert str(chief["workdir"]) == workdir and str(other["workdir"]) != workdir
    assert not os.path.exists(str(other["workdir"]))  # the non-chief's temp dir is deleted
    assert os.path.exists(os.path.join(workdir, "export", "models.config"))
    weights = [k for k in chief.files if k.startswith("var_")]
    assert weights
    for name in weights:
        np.testing.assert_array_equal(chief[name], other[name], err_msg=name)
