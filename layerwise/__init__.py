"""layerwise: greedy layerwise training of deep networks in Keras/TensorFlow.

Implements Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to
ImageNet" (ICML 2019): a network is an ordered list of stages; stage j is trained with an
auxiliary classifier while stages 0..j-1 stay frozen. The same network trains end to end (the
baseline) or decoupled (Decoupled Greedy Learning, Belilovsky et al., ICML 2020).

The public API:

- :func:`split_model` turns any functional Keras model into a :class:`StagedNetwork`;
- :func:`fit` trains it (``mode="layerwise" | "end_to_end" | "decoupled"``) on a ``tf.data``
  pipeline or arrays, with Keras callbacks, and returns a :class:`Result` (``history``,
  ``classifiers`` as Keras models, ``ensemble()``);
- :class:`AuxHead` describes the paper's auxiliary heads; :class:`TrainConfig` is the whole
  configuration (what ``python -m apps.train`` builds from its flags);
- :class:`LocalLoss` is what each module minimises: :class:`Pred` (the paper's, the default),
  :class:`Sim`, :class:`PredSim` (Nøkland & Eidnes, ICML 2019) and :class:`InfoPro` (Wang et al.,
  ICLR 2021), in every mode (``fit(..., local_loss=...)``);
- :func:`export_run` writes a finished run's SavedModels for TF Serving; :func:`restore_run`
  rebuilds a finished run from its directory.

Example:
    >>> import keras, layerwise
    >>> model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    >>> result = layerwise.fit(layerwise.split_model(model, 4), x, y, epochs_per_stage=2)
    >>> result.classifiers[-1].save("stage_03.keras")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from layerwise import onednn  # noqa: F401  (decides TF_ENABLE_ONEDNN_OPTS before TensorFlow is imported)
from layerwise.errors import ConfigError, LayerwiseError

if TYPE_CHECKING:  # what the names below resolve to, for readers and type checkers
    from layerwise.config import RunOptions, TrainConfig
    from layerwise.export import export_run
    from layerwise.restore import RestoredRun, restore_run
    from layerwise.training.callbacks import PerStage, StageCallback, per_stage
    from layerwise.training.fit import Result, fit
    from layerwise.nn.heads import AuxHead
    from layerwise.training.local_losses import InfoPro, LocalLoss, Pred, PredSim, Sim
    from layerwise.nn.network import StagedNetwork
    from layerwise.training.split import split_model

__version__ = "0.3.0"

# The public names and the modules that define them. They are imported on first use (PEP 562), so
# that ``import layerwise.config`` (and with it an app's ``--help``) does not import
# TensorFlow, which takes seconds; ``layerwise.fit`` and ``from layerwise import fit`` work as usual.
_PUBLIC = {
    "RunOptions": "layerwise.config", "TrainConfig": "layerwise.config",
    "export_run": "layerwise.export",
    "RestoredRun": "layerwise.restore", "restore_run": "layerwise.restore",
    "PerStage": "layerwise.training.callbacks", "StageCallback": "layerwise.training.callbacks",
    "per_stage": "layerwise.training.callbacks",
    "Result": "layerwise.training.fit", "fit": "layerwise.training.fit",
    "AuxHead": "layerwise.nn.heads",
    "InfoPro": "layerwise.training.local_losses", "LocalLoss": "layerwise.training.local_losses",
    "Pred": "layerwise.training.local_losses", "PredSim": "layerwise.training.local_losses",
    "Sim": "layerwise.training.local_losses",
    "StagedNetwork": "layerwise.nn.network",
    "split_model": "layerwise.training.split",
}

__all__ = ["ConfigError", "LayerwiseError", *sorted(_PUBLIC)]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'layerwise' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
