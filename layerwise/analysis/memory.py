"""Peak tensor memory: what TensorFlow's allocator handed out, on the GPU or on the CPU.

``tf.config.experimental.get_memory_info`` reports the allocator's current and peak bytes for a
device, and ``reset_memory_stats`` restarts the peak, so the peak of one stage (or one epoch)
can be read inside one process. It is the same quantity on every device: activations, gradients,
weights, optimizer slots and cached tensors, but not the runtime's own code and buffers (a
process's resident set size adds ~0.8 GiB of those on a CPU).

Not every CPU process has these statistics. TensorFlow's CPU allocator keeps them when oneDNN is
on (a BFC allocator underneath) or when ``TF_CPU_ALLOCATOR_USE_BFC=true`` is set before
TensorFlow starts; oneDNN is on by default only on CPUs with AVX-512 VNNI / bfloat16 / AMX, so on
an AVX2-only CPU ``get_memory_info("CPU:0")`` raises "Allocator stats not available". There the
functions below return ``None`` and tables show "n/a": the process's peak resident memory is not
a stand-in (it only grows over a process's life and counts the runtime's own ~0.8 GiB).

Where oneDNN's allocator keeps them, the statistics leave out tensors under 256 KiB (oneDNN serves
those from a separate small-size allocator): a stage of tiny tensors reads 0 there, while with
``TF_CPU_ALLOCATOR_USE_BFC=true`` every tensor counts.
"""

from __future__ import annotations

import resource
from collections.abc import Iterable

import tensorflow as tf

# Set before TensorFlow starts, this makes the CPU allocator keep statistics on any CPU.
ALLOCATOR_STATS_ENV = {"TF_CPU_ALLOCATOR_USE_BFC": "true"}


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


def allocator_reports_memory() -> bool:
    """Whether the measured device's allocator keeps statistics in this process."""
    return _allocator_mib("current") is not None


def current_memory_mb() -> float | None:
    """Tensor memory allocated now, in MiB; None where the allocator keeps no statistics."""
    return _allocator_mib("current")


def peak_memory_mb() -> float | None:
    """Peak tensor memory in MiB since the last ``reset_peak_memory``; None where the allocator
    keeps no statistics."""
    return _allocator_mib("peak")


def largest_peak(peaks: Iterable[float | None]) -> float | None:
    """The largest of several windows' peaks; None if any window was not measured."""
    peaks = list(peaks)
    if not peaks or any(p is None for p in peaks):
        return None
    return max(peaks)


def peak_rss_mb() -> float:
    """The process's peak resident set size in MiB (Linux reports KiB): a different measure from
    the allocator's, named as such wherever it is shown."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
