"""Peak tensor memory: what TensorFlow's allocator handed out, on the GPU or on the CPU.

``tf.config.experimental.get_memory_info`` reports the allocator's current and peak bytes for a
device, and ``reset_memory_stats`` restarts the peak, so the peak of one stage (or one epoch)
can be read inside one process. On TensorFlow 2.21 this works for ``CPU:0`` too (checked on
these machines), and it is the same quantity on both: activations, gradients, weights, optimizer
slots and cached tensors, but not the runtime's own code and buffers (a process's resident set
size adds ~0.8 GiB of those on a CPU, the same for every training mode). Where the allocator
does not report, the process's peak RSS is the fallback; it only grows over a process's life.
"""

from __future__ import annotations

import resource

import tensorflow as tf


def memory_device() -> str:
    """The device whose allocator is measured: the first GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return gpus[0].name if gpus else "/device:CPU:0"


def reset_peak_memory() -> None:
    """Restarts the peak of ``peak_memory_mb`` at the current usage (no-op where unsupported)."""
    try:
        tf.config.experimental.reset_memory_stats(memory_device())
    except (ValueError, tf.errors.OpError):
        pass


def _allocator_mib(key: str) -> float | None:
    """``current`` or ``peak`` of the measured device's allocator in MiB; None where unsupported."""
    try:
        return tf.config.experimental.get_memory_info(memory_device())[key] / 2**20
    except (ValueError, tf.errors.OpError):
        return None


def current_memory_mb() -> float:
    """Tensor memory allocated now, in MiB (0 where the allocator does not report)."""
    current = _allocator_mib("current")
    return 0.0 if current is None else current


def peak_memory_mb() -> float:
    """Peak tensor memory in MiB since the last ``reset_peak_memory`` (else the peak RSS).

    A peak of 0 means the allocator did not track the device (a CPU allocator whose statistics
    were off while a stage ran showed "peak MiB 0" in the stage table): the peak RSS then too.
    """
    peak = _allocator_mib("peak")
    return peak_rss_mb() if not peak else peak


def peak_rss_mb() -> float:
    """The process's peak resident set size in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
