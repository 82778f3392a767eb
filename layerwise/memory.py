"""Peak memory of this process: device memory on a GPU, resident set size on a CPU."""

from __future__ import annotations

import resource

import tensorflow as tf


def peak_memory_mb() -> float:
    """Peak memory in MiB so far: the first GPU's peak allocation, else the process's peak RSS.

    On a CPU the peak RSS only grows over a process's life: to compare cases, measure each in
    a fresh process (``apps.bench`` does).
    """
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_memory_info(gpus[0].name)["peak"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
