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
    >>> result = layerwise.fit(layerwise.split_model(model, 4), (x, y), epochs_per_stage=2)
    >>> result.classifiers[-1].save("stage_03.keras")
"""

from layerwise.errors import ConfigError, LayerwiseError
from layerwise.run.config import RunOptions, TrainConfig
from layerwise.run.exports import export_run
from layerwise.run.restore import RestoredRun, restore_run
from layerwise.training.callbacks import PerStage, StageCallback, per_stage
from layerwise.training.fit import Result, fit
from layerwise.training.heads import AuxHead
from layerwise.training.local_losses import InfoPro, LocalLoss, Pred, PredSim, Sim
from layerwise.training.network import StagedNetwork
from layerwise.training.split import split_model

__version__ = "0.2.0"

__all__ = [
    "AuxHead", "ConfigError", "InfoPro", "LayerwiseError", "LocalLoss", "PerStage", "Pred", "PredSim", "RestoredRun",
    "Result", "RunOptions", "Sim", "StageCallback", "StagedNetwork", "TrainConfig", "export_run", "fit", "per_stage",
    "restore_run", "split_model",
]
