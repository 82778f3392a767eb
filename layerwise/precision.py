"""Precision: which Keras dtype policy a run computes in, decided once per run.

``precision`` is one of ``float32``, ``mixed_bfloat16``, ``mixed_float16`` or ``auto`` (the fastest
of them that keeps the results on this hardware). :func:`settle_precision` turns a configuration's
``auto`` into a policy and says why; it is the one place that decides (``layerwise.fit`` calls it,
and the CLI before it builds the zoo network). The policy means the same on every path: the
network's stages and the heads compute in it (Keras mixed precision,
https://keras.io/api/mixed_precision/policy/), the logits stay ``float32``.

A ground-floor module: it imports TensorFlow, Keras and the standard library only.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Sequence, TypeVar

import keras
import tensorflow as tf

__all__ = ["adopt_policy", "dtype_policy", "read_cpu_flags", "resolve_precision", "settle_precision"]

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 matrix units

Config = TypeVar("Config")  # a TrainConfig (anything with ``precision`` and ``replace``)


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
    ``cpu_flags`` (``/proc/cpuinfo``'s) default to this machine's; the first GPU decides. A run
    decides through :func:`settle_precision`, which calls this.
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


def settle_precision(config: Config) -> tuple[Config, str]:
    """``config`` with its ``precision`` decided, and the line that says what was decided and
    why (``""`` when the precision was a policy already: nothing was decided, nothing to log).

    The one place a run's ``precision="auto"`` becomes a policy; the run records the policy it
    chose, so a resumed run or a restored one computes in the same.
    """
    if config.precision != "auto":
        return config, ""
    precision, why = resolve_precision("auto")
    return config.replace(precision=precision), f"precision: auto -> {precision} ({why})"


def adopt_policy(models: Iterable[keras.Model], name: str) -> None:
    """Sets the dtype policy ``name`` on every layer of ``models`` (nested models included) that
    computes in ``float32``, as if they had been built under it (``dtype_policy(name)``): a
    built layer's variables stay ``float32`` under a mixed policy, only its compute dtype changes
    (https://keras.io/api/mixed_precision/policy/). Layers built in another policy keep theirs,
    and input layers keep their dtype.

    The trainer calls it on the network's stages (``layerwise.fit``'s, the CLI's, any other
    caller's): a network built outside the run's policy (a user's, under Keras's default
    ``float32``) computes in it as the CLI's, which builds the zoo's network under the policy.
    """
    if name == "float32":
        return
    for model in models:
        if model.dtype_policy.name == "float32":
            model.dtype_policy = name
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                adopt_policy([layer], name)
            elif not isinstance(layer, keras.layers.InputLayer) and layer.dtype_policy.name == "float32":
                layer.dtype_policy = name


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
