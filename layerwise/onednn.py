"""oneDNN for TensorFlow's CPU kernels: decided once, before TensorFlow is imported, and said.

TensorFlow's Linux x86 wheels run convolutions, matmuls, BatchNorm and pooling through oneDNN
("oneDNN custom operations") only where ``TF_ENABLE_ONEDNN_OPTS`` says so or, when it is unset,
on CPUs with neural-network instructions (AVX512_VNNI, AVX512_BF16, AVX_VNNI or AMX:
``DefaultOneDnnPolicy`` in tensorflow/core/util/port.cc). Elsewhere, e.g. on an AVX2-only AMD
EPYC, convolutions run as Eigen tensor contractions cut into small GEMM tiles, which is slower for
this toolkit's layer shapes (``docs/performance.md`` has the measured A/B). TensorFlow reads the
variable once, when it is imported, so the choice must be made before that: importing
``layerwise`` (or any ``apps`` entry point) sets ``TF_ENABLE_ONEDNN_OPTS=1`` on x86-64 Linux when
the user has not set it and TensorFlow is not imported yet. A value the user set is never changed;
``TF_ENABLE_ONEDNN_OPTS=0`` turns oneDNN off. :data:`CHOICE` says which applies, and every run's
log opens with :meth:`OneDnnChoice.describe`.

See https://www.tensorflow.org/install/pip (oneDNN notes) and
https://github.com/tensorflow/community/pull/400 (the RFC that made oneDNN TensorFlow's default).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from typing import MutableMapping

__all__ = ["CHOICE", "ENV", "OneDnnChoice", "choose_onednn"]

ENV = "TF_ENABLE_ONEDNN_OPTS"
X86_64 = ("x86_64", "AMD64")


@dataclasses.dataclass(frozen=True)
class OneDnnChoice:
    """Whether TensorFlow's oneDNN ops are on (``None``: TensorFlow's own CPU-dependent default)
    and who decided it."""

    enabled: bool | None
    decided_by: str

    def describe(self) -> str:
        state = {True: "on", False: "off", None: "TensorFlow's default for this CPU"}[self.enabled]
        return f"oneDNN: {state} ({self.decided_by})"


def choose_onednn(environ: MutableMapping[str, str], *, tensorflow_loaded: bool, machine: str,
                  system: str) -> OneDnnChoice:
    """Decides oneDNN for this process and, where layerwise decides, writes ``environ[ENV] = "1"``.

    Args:
        environ: the process environment (``os.environ``).
        tensorflow_loaded: whether TensorFlow is already imported (then it has read ``environ``).
        machine, system: ``platform.machine()`` and ``platform.system()``.
    """
    if ENV in environ:
        value = environ[ENV].strip().lower()
        enabled = {"1": True, "true": True, "0": False, "false": False}.get(value)
        return OneDnnChoice(enabled, f"{ENV}={environ[ENV]} set by you")
    if tensorflow_loaded:
        return OneDnnChoice(None, f"TensorFlow was imported before layerwise, with {ENV} unset")
    if system == "Linux" and machine in X86_64:
        environ[ENV] = "1"
        return OneDnnChoice(True, f"layerwise's default on x86-64 Linux; {ENV}=0 turns it off")
    return OneDnnChoice(None, f"{ENV} unset; layerwise sets it only on x86-64 Linux")


CHOICE = choose_onednn(os.environ, tensorflow_loaded="tensorflow" in sys.modules,
                       machine=platform.machine(), system=platform.system())
