"""The network of a run, saved with it (``workdir/network.json``), so a run restores from its directory alone.

``config.json`` names what trained; for a zoo model that name is enough for whoever has the zoo,
but a network of ``layerwise.split_model`` (any Keras model) or of a user's own builder has no
name to rebuild it from. ``layerwise.fit`` therefore writes, when a run starts in a new directory
(or resumes one written before this file existed), the untrained network's architecture:

- each stage's Keras config (``keras.saving.serialize_keras_object``, the format of a ``.keras``
  file's ``config.json``: https://keras.io/guides/serialization_and_saving/), the network's own
  final head's too (the classifier of a split model), its name, input shape, classes and options;
- the Python modules that define its classes outside Keras (``layerwise.nn.layers``, a zoo
  module such as ``models.resnet``, a user's package), which :func:`read_network` imports before
  rebuilding: Keras locates a registered class (``keras.saving.register_keras_serializable``)
  only once its module is imported;
- the input the network trained on: the per-channel ``mean``/``std`` an export normalises raw
  pixels with, and whether uint8 pixels are a valid input at all (``DataSource.uint8_pixels``).

No weights: they are in the checkpoints (``layerwise.run.checkpoints``). The file is written
atomically (``layerwise.files``). A network Keras cannot serialise (a custom layer without
``get_config``) is not saved: the run trains as before, and restoring it needs the caller's
``build_network`` (:func:`network_record` says why).

Example:
    >>> saved = read_network("runs/split")          # in a fresh process, after ``import layerwise``
    >>> saved.network.num_stages, saved.data.mean
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any

import keras
import numpy as np

from layerwise.data.base import DataSource
from layerwise.errors import CheckpointError, ConfigError
import layerwise.files as files
from layerwise.files import atomic_write_text
from layerwise.nn.network import StagedNetwork

NETWORK_FILE = "network.json"
FORMAT = 1

__all__ = ["NETWORK_FILE", "RecordedData", "SavedNetwork", "has_network", "network_record", "read_network",
           "write_network"]


def _own_classes(config: Any, found: list[dict]) -> list[dict]:
    """The config of every object of a class defined outside Keras, in a serialised Keras config."""
    if isinstance(config, dict):
        module = config.get("module")
        if isinstance(module, str) and "class_name" in config and not module.split(".")[0].startswith("keras"):
            found.append(config)
        for value in config.values():
            _own_classes(value, found)
    elif isinstance(config, list):
        for value in config:
            _own_classes(value, found)
    return found


def _unregistered(classes: list[dict]) -> list[str]:
    """The names of the classes Keras would not find when loading (not registered)."""
    return sorted({c["class_name"] for c in classes
                   if keras.saving.get_registered_object(c.get("registered_name") or c["class_name"]) is None})


def _weight_shapes(models) -> list[tuple]:
    return [tuple(w.shape) for model in models for w in model.weights]


def network_record(network: StagedNetwork, data: DataSource) -> dict[str, Any]:
    """What ``network.json`` holds for ``network`` trained on ``data`` (see the module doc).

    The network's final head builder is called once, for its architecture (a split model's
    returns its own classifier; a zoo builder a new, named model). The stages are rebuilt once
    from the record, here, so a file that is written rebuilds (in a process where the same
    classes are importable).

    Raises:
        ConfigError: Keras cannot serialise the network or rebuild it from its config (a layer
            without ``get_config``, a ``get_config`` that is not JSON or misses an argument, a
            ``Lambda`` layer), naming the reason.
    """
    try:
        stages = [keras.saving.serialize_keras_object(stage) for stage in network.stages]
        final_head, models = None, list(network.stages)
        if network.final_head is not None:
            head = network.final_head(network.output_shape(network.num_stages - 1), network.num_classes)
            final_head = keras.saving.serialize_keras_object(head)
            models.append(head)
        own = _own_classes([stages, final_head], [])
        unregistered = _unregistered(own)
        if unregistered:
            raise TypeError(f"{', '.join(unregistered)} not registered with keras.saving.register_keras_serializable")
        record = {
            "format": FORMAT,
            "name": network.name,
            "input_shape": list(network.input_shape),
            "num_classes": int(network.num_classes),
            "options": network.options,
            "stages": stages,
            "final_head": final_head,
            "modules": sorted({c["module"] for c in own}),
            "input": {
                "mean": [float(v) for v in np.asarray(data.mean, np.float32).reshape(-1)],
                "std": [float(v) for v in np.asarray(data.std, np.float32).reshape(-1)],
                "uint8_pixels": bool(data.uint8_pixels),
                "dataset": data.name,
            },
        }
        text = json.dumps(record, sort_keys=True)  # options that are not JSON: a TypeError here
        saved = json.loads(text)
        rebuilt = [keras.saving.deserialize_keras_object(config)
                   for config in saved["stages"] + ([saved["final_head"]] if final_head is not None else [])]
        if _weight_shapes(rebuilt) != _weight_shapes(models):
            raise ValueError("its configs rebuild other weights: a get_config misses an argument")
    except (TypeError, ValueError, NotImplementedError) as e:
        raise ConfigError(f"Keras cannot serialise network {network.name!r} ({type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]})") from None
    return record


def has_network(workdir: str) -> bool:
    """``workdir`` holds the run's saved network."""
    return files.exists(files.join(workdir, NETWORK_FILE))


def write_network(workdir: str, network: StagedNetwork, data: DataSource) -> str | None:
    """Writes ``workdir/network.json`` (atomically) unless it is there already.

    The record is made either way, so a resumed run builds what its first start built (a final
    head builder's unnamed layers take the same automatic names).

    Returns:
        ``None`` when the file is there (written now or before), else why the network could not
        be saved (one line; the run then restores only with a ``build_network``).
    """
    try:
        record = network_record(network, data)
    except ConfigError as e:
        return None if has_network(workdir) else str(e)
    if has_network(workdir):
        return None
    atomic_write_text(files.join(workdir, NETWORK_FILE), json.dumps(record, sort_keys=True) + "\n")
    return None


class RecordedData(DataSource):
    """The input a run's network trained on, as recorded in ``network.json``: shape, classes and
    normalisation, without examples (the run's data were the caller's own, e.g. arrays given to
    ``layerwise.fit``). Enough to export; reading examples is refused, naming what to pass."""

    augment = "none"
    num_train = num_test = num_val = 0

    def __init__(self, name: str, image_shape, num_classes: int, mean, std, uint8_pixels: bool):
        self.name = name
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_classes = int(num_classes)
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.uint8_pixels = bool(uint8_pixels)

    def _no_examples(self, *args, **kwargs):
        raise ConfigError(
            f"the run's data ({self.name!r}) are not in its directory, only their shape and normalisation: pass "
            "load_data=lambda config: <a DataSource> to restore_run to evaluate"
        )

    train_batches = eval_batches = labels = _no_examples


@dataclasses.dataclass
class SavedNetwork:
    """A run's saved network, rebuilt (untrained) from ``network.json``.

    Attributes:
        network: the staged network, with fresh weights (the checkpoints hold the trained ones).
        data: the input it trained on (:class:`RecordedData`).
    """

    network: StagedNetwork
    data: RecordedData


# Where the modules that define layers recorded by layerwise 0.3.0 live now (Keras finds each
# layer by its registered name, once the module that defines it is imported).
MOVED_MODULES = {
    "layerwise.training.network": "layerwise.nn.network",
    "layerwise.training.layers": "layerwise.nn.layers",
    "layerwise.training.downsampling": "layerwise.nn.downsampling",
    "layerwise.training.heads": "layerwise.nn.heads",
}


def _import_modules(modules: list[str], path: str) -> None:
    """Imports the modules that define the network's classes (registering them with Keras)."""
    for recorded in modules:
        module = MOVED_MODULES.get(recorded, recorded)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise CheckpointError(
                f"{path} needs the module {module!r} (it defines layers of the network) but it cannot be imported "
                f"here ({e}); install it, or pass build_network to rebuild the network"
            ) from None


def _deserialize(config: dict, path: str) -> keras.Model:
    try:
        return keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(
            f"{path}: Keras cannot rebuild the network ({' '.join(str(e).split())[:240]}); import the module that "
            "defines its custom layers first, or pass build_network"
        ) from None


def read_network(workdir: str) -> SavedNetwork:
    """The network saved in ``workdir`` (fresh weights) and the input it trained on.

    Raises:
        CheckpointError: no ``network.json`` (a run of an older version, or of a network Keras
            cannot serialise: pass ``build_network``), an unreadable one, or a class that cannot be
            found.
    """
    path = files.join(workdir, NETWORK_FILE)
    if not files.exists(path):
        raise CheckpointError(
            f"{workdir} holds no saved network ({NETWORK_FILE}: the run was written by an older version, or its "
            "network could not be serialised); pass build_network, e.g. apps.runner.build_network for a zoo model"
        )
    try:
        record = json.loads(files.read_text(path))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}); pass build_network") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a network file of format {FORMAT}; pass build_network")
    _import_modules(record["modules"], path)
    stages = [_deserialize(config, path) for config in record["stages"]]
    final_head = None
    if record["final_head"] is not None:
        head_config = record["final_head"]

        def final_head(feature_shape, num_classes, head_config=head_config):
            return _deserialize(head_config, path)

    network = StagedNetwork(record["name"], record["input_shape"], record["num_classes"], stages,
                            final_head=final_head, options=record["options"])
    given = record["input"]
    data = RecordedData(given["dataset"], record["input_shape"], record["num_classes"], given["mean"], given["std"],
                        given["uint8_pixels"])
    return SavedNetwork(network, data)
