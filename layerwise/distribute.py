"""Strategy selection and the chief/worker rules of distributed runs.

``make_strategy(name)`` returns one of TensorFlow's strategies:

- ``auto``: ``MirroredStrategy`` over every visible GPU when there is more than one, else the
  default strategy (one device);
- ``one_device``: ``OneDeviceStrategy`` on the first GPU, or the CPU;
- ``mirrored``: ``MirroredStrategy`` over the local GPUs (or the given devices);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured from the standard ``TF_CONFIG``
  environment variable (see ``docs/distributed.md``). TensorFlow's gRPC server then listens,
  unauthenticated, on every interface (TensorFlow binds ``0.0.0.0:<port>`` and offers no other
  address): a warning says to keep it on a trusted network.

Only the chief writes: logs, checkpoints and SavedModels go to the workdir on the chief; the
other workers write to a temporary directory they delete afterwards (the standard Keras
multi-worker pattern: every worker runs the same program, only the chief's output is kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from typing import Iterator, Sequence

import keras
import tensorflow as tf

from layerwise.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def make_strategy(name: str = "auto", devices: Sequence[str] | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute.Strategy`` called ``name`` (one of :data:`STRATEGIES`).

    Args:
        name: ``auto``, ``one_device``, ``mirrored`` or ``multi_worker``.
        devices: for ``mirrored``, explicit devices (e.g. ``["/cpu:0", "/cpu:1"]`` over logical
            CPUs in tests); default: every local GPU.

    Raises:
        ConfigError: unknown name, or ``multi_worker`` without a usable ``TF_CONFIG``.
    """
    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
    if name in ("auto", "one_device"):
        # Listing logical devices initialises the runtime: never before MultiWorkerMirrored.
        gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    config = os.environ.get("TF_CONFIG")
    if not config:
        raise ConfigError(
            "--strategy=multi_worker needs the TF_CONFIG environment variable "
            "(cluster and task of this worker); see docs/distributed.md"
        )
    try:
        json.loads(config)["task"]["type"]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"TF_CONFIG is not valid JSON with a 'task' entry: {config[:200]}") from None
    print(
        "warning: multi-worker training starts TensorFlow's gRPC server, which has no authentication and runs "
        "any graph it is sent, and listens on every network interface whatever host TF_CONFIG names: use a "
        "trusted network and firewall the worker ports (docs/distributed.md, 'Security')",
        file=sys.stderr,
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy()
    except RuntimeError as e:
        if "program startup" not in str(e):
            raise
        raise ConfigError(
            "MultiWorkerMirroredStrategy must be created before TensorFlow runs anything in this "
            "process; create it first (make_strategy('multi_worker') at program start)"
        ) from None


def is_chief(strategy: tf.distribute.Strategy | None) -> bool:
    """True on the worker that writes: the only one outside multi-worker runs.

    In a multi-worker cluster the chief is task ``chief`` or, when there is none, ``worker`` 0.
    """
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    if task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_id(strategy: tf.distribute.Strategy | None) -> str:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "local"
    return f"{resolver.task_type}_{resolver.task_id}"


@contextlib.contextmanager
def worker_workdir(workdir: str | None, strategy: tf.distribute.Strategy | None) -> Iterator[str | None]:
    """``workdir`` on the chief; a temporary directory, deleted on exit, on other workers.

    A worker that can see ``workdir`` (a shared filesystem, or a copy at the same path) starts
    from a copy of its configuration and checkpoints, so a rerun resumes on every worker at the
    chief's position: the workers' collective steps must line up, and a worker that retrained
    what the chief loads would wait on it forever.
    """
    if workdir is None or is_chief(strategy):
        yield workdir
        return
    temp = tempfile.mkdtemp(prefix=f"layerwise_{worker_id(strategy)}_")
    if os.path.isdir(workdir):
        shutil.copytree(workdir, temp, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("export", "tensorboard", "cache", "plots", "*.tmp-*"))
    try:
        yield temp
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def synchronize_batchnorm(model) -> int:
    """Makes every ``BatchNormalization`` layer of ``model`` use cross-replica statistics.

    Keras reads ``synchronized`` at call time, so built layers can be switched in place (the
    weights are unchanged). Returns the number of layers switched.
    """
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            count += 1
    return count


def _all_layers(model: keras.Model):
    """Every layer of a functional model, nested models' layers included."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
