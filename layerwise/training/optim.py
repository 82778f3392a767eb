"""Optimizers and dtype policies: one fresh optimizer per training problem.

A new optimizer for every stage (Algorithm 1 of Belilovsky et al. re-initialises the optimizer
with each block), built under the strategy scope and with ``optimizer.build(variables)`` before
the first step: Keras 3 optimizers built lazily inside ``strategy.run`` fail with several
replicas (keras-team/keras#23085).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Sequence

import keras
import tensorflow as tf

from layerwise.config import recorded
from layerwise.config import OptimConfig

__all__ = ["dtype_policy", "for_precision", "make_optimizer", "read_cpu_flags", "recorded_optimizer", "resolve_precision"]

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 matrix units


def make_optimizer(config: OptimConfig, learning_rate, precision: str = "float32") -> keras.optimizers.Optimizer:
    """A fresh optimizer: SGD with momentum (the paper's; Nesterov's with ``config.nesterov``) or
    Adam, at ``learning_rate``.

    Args:
        config: the optimizer's fields (name, momentum, nesterov; ``config.lr`` is already in
            ``learning_rate``).
        learning_rate: a float or a schedule (``layerwise.training.schedules.make_schedule``).
        precision: under ``mixed_float16`` the optimizer is wrapped in a ``LossScaleOptimizer``
            (dynamic loss scale).
    """
    if config.name == "adam":
        optimizer = keras.optimizers.Adam(learning_rate)
    else:
        # Nesterov: Keras's SGD update equals PyTorch's SGD(nesterov=True) at a constant learning rate
        optimizer = keras.optimizers.SGD(learning_rate, momentum=config.momentum, nesterov=config.nesterov)
    return for_precision(optimizer, precision)


def for_precision(optimizer: keras.optimizers.Optimizer, precision: str) -> keras.optimizers.Optimizer:
    """``optimizer``, wrapped in a ``LossScaleOptimizer`` (dynamic loss scale) under
    ``mixed_float16`` unless it is one already
    (https://keras.io/api/mixed_precision/loss_scale_optimizer/)."""
    if precision == "mixed_float16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def is_optimizer_or_factory(obj) -> bool:
    """A Keras optimizer, or a function (or other callable) returning one."""
    return isinstance(obj, keras.optimizers.Optimizer) or callable(obj)


def recorded_optimizer(config: OptimConfig) -> Callable[[], keras.optimizers.Optimizer] | None:
    """``() -> a fresh copy`` of the optimizer recorded in ``config.object`` (an optimizer
    object is rebuilt from its Keras-serialised form every time, a function is called), or
    ``None`` when the run uses ``config.name`` and ``config.lr``.

    Raises:
        ConfigError: the recorded optimizer cannot be rebuilt (its class or function is not
            registered and imported).
    """
    if not config.object:
        return None
    form = config.object
    recorded.rebuild(form, "optimizer", is_optimizer_or_factory)  # refused here, before training

    def fresh() -> keras.optimizers.Optimizer:
        obj = recorded.rebuild(form, "optimizer", is_optimizer_or_factory)
        return obj if isinstance(obj, keras.optimizers.Optimizer) else obj()

    return fresh


def read_cpu_flags() -> set[str]:
    """The flags of /proc/cpuinfo (empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def resolve_precision(name: str, *, gpu_details: Sequence[dict] | None = None,
                      cpu_flags: Iterable[str] | None = None) -> tuple[str, str]:
    """The dtype policy ``name`` stands for, and why: ``auto`` is the fastest policy that keeps
    the results (``docs/performance.md`` measures it), other names are themselves.

    - a GPU of compute capability 8.0 or more (Ampere, Hopper): ``mixed_bfloat16``; 7.x (Volta,
      Turing): ``mixed_float16`` (with a dynamic loss scale); older: ``float32``;
    - a CPU with bfloat16 matrix instructions (AVX512-BF16 or AMX, Cooper Lake, Sapphire Rapids
      and later): ``mixed_bfloat16`` (oneDNN's bfloat16 convolutions ran 2-3x faster than float32 on
      such a CPU, ``docs/performance.md``);
      other CPUs: ``float32``.

    ``gpu_details`` (``tf.config.experimental.get_device_details`` of each visible GPU) and
    ``cpu_flags`` (``/proc/cpuinfo``'s) default to this machine's; the first GPU decides.
    """
    if name != "auto":
        return name, "as configured"
    if gpu_details is None:
        gpu_details = [tf.config.experimental.get_device_details(g) for g in tf.config.list_physical_devices("GPU")]
    if gpu_details:
        capability = gpu_details[0].get("compute_capability") or (0, 0)
        if tuple(capability) >= (8, 0):
            return "mixed_bfloat16", f"GPU of compute capability {capability[0]}.{capability[1]}"
        if tuple(capability) >= (7, 0):
            return "mixed_float16", f"GPU of compute capability {capability[0]}.{capability[1]}"
        return "float32", "GPU without fast bfloat16 or float16"
    found = sorted(set(BF16_CPU_FLAGS) & set(read_cpu_flags() if cpu_flags is None else cpu_flags))
    if found:
        return "mixed_bfloat16", f"CPU with {', '.join(found)}"
    return "float32", "CPU without bfloat16 instructions"


@contextlib.contextmanager
def dtype_policy(name: str):
    """Sets Keras's global dtype policy (``float32``, ``mixed_bfloat16``, ``mixed_float16``)
    for the block and restores the previous one: models must be built inside it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
