"""``layerwise.fit``'s arguments as ``keras.Model.fit`` takes them, checked and turned into a run.

``fit`` speaks Keras (https://keras.io/api/models/model_training_apis/#fit-method): ``x``, ``y``,
``validation_data``, ``validation_split``, ``verbose``, an optimizer object. The functions here
check those arguments (one-line ``ConfigError`` naming what to pass instead) and turn them into
the run's :class:`~layerwise.config.TrainConfig` changes, data and optimizer factory.

Example:
    >>> config_changes, run_changes = split_options({"lr": 0.1, "jit_compile": True}, ["x", "y"])
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Iterable

import keras
import numpy as np
import tensorflow as tf

from layerwise.config import CUSTOM_LOSS, RunOptions, TrainConfig, recorded, schema
from layerwise.data.base import DataSource
from layerwise.data.pipelines import DatasetSource, as_source, check_image_shape
from layerwise.errors import ConfigError, did_you_mean
from layerwise.nn.heads import AUX_FIELDS, head_options
from layerwise.precision import settle_precision
from layerwise.training.local_losses import LocalLoss, local_loss_options, with_image_statistics
from layerwise.training.optim import is_optimizer_or_factory
from layerwise.training.problems import HeadPlan

OLD_ARGUMENT_NAMES = ("train", "validation")  # x and validation_data before fit spoke Keras
# Keras's names for what fit calls otherwise
KERAS_HINTS = {"epochs": "epochs_per_stage", "learning_rate": "lr"}
# keras.Model.fit's arguments fit has no counterpart for, and why
KERAS_ONLY = {
    "sample_weight": "per-example weights are not supported yet",
    "initial_epoch": "a run resumes where it stopped when fit is called again with the same workdir",
    "steps_per_epoch": "an epoch is one pass over the training data",
    "validation_steps": "the whole validation data is evaluated (every epoch, or every validation_freq-th)",
    "validation_batch_size": "arrays are evaluated in batches of max(batch_size, 256), a dataset in its own",
}


def split_options(options: dict[str, Any], fit_arguments: Iterable[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (TrainConfig changes, RunOptions changes), or a one-line ConfigError naming
    an unknown option and the closest accepted name (``fit_arguments``: fit's own argument names)."""
    config_names, run_names = schema.flat_names(TrainConfig), schema.flat_names(RunOptions)
    unknown = sorted(set(options) - set(config_names) - set(run_names))
    if unknown:
        known = {*config_names, *run_names, *fit_arguments, *OLD_ARGUMENT_NAMES}
        raise ConfigError("; ".join(
            f"fit does not take keras.Model.fit's {name!r}: {KERAS_ONLY[name]}" if name in KERAS_ONLY
            else f"unknown fit option {name!r}{did_you_mean(name, known, KERAS_HINTS)}" for name in unknown
        ) + " (help(layerwise.fit) lists the arguments)")
    return ({k: v for k, v in options.items() if k in config_names},
            {k: v for k, v in options.items() if k in run_names})


def training_data(x: Any, y: Any, options: dict[str, Any]) -> Any:
    """The training data of ``fit(network, x, y)``: ``(x, y)`` arrays, or ``x`` itself when it
    is a dataset, a DataSource or an ``(x, y)`` pair (the old ``train=`` keyword too)."""
    if "train" in options:
        if x is not None:
            raise ConfigError("pass the training data once: as x (and y), or as train=, not both")
        x = options.pop("train")
    if x is None:
        raise ConfigError("fit needs training data: fit(network, x, y) with arrays or fit(network, dataset)")
    if y is None:
        if isinstance(x, np.ndarray):
            raise ConfigError("fit(network, x, y): the labels y are missing (x is an array of images)")
        return x
    if isinstance(x, (tf.data.Dataset, DataSource)):
        raise ConfigError("y must not be given when x is a dataset: its elements carry the labels")
    return (x, y)


def validation_data_of(validation_data: Any, options: dict[str, Any]) -> Any:
    """``validation_data``, or the deprecated ``validation=`` keyword's value."""
    if "validation" in options:
        if validation_data is not None:
            raise ConfigError("pass validation_data only (validation= is its old name)")
        return options.pop("validation")
    return validation_data


def split_off_validation(train: Any, validation_split: float) -> tuple[Any, Any]:
    """(training, validation) arrays: the last ``validation_split`` of the ``(x, y)`` arrays held out
    before any shuffling, as ``keras.Model.fit(validation_split=...)`` does."""
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), got {validation_split}")
    if isinstance(train, (tf.data.Dataset, DataSource)):
        raise ConfigError(
            "validation_split applies to arrays (as in keras.Model.fit); pass validation_data for a dataset"
        )
    x, y = np.asarray(train[0]), np.asarray(train[1])
    split_at = int(np.floor(len(x) * (1.0 - validation_split)))
    if split_at == 0 or split_at == len(x):
        raise ConfigError(f"validation_split={validation_split} of {len(x)} examples leaves one side empty")
    return (x[:split_at], y[:split_at]), (x[split_at:], y[split_at:])


def resolve_verbose(verbose: int | str) -> int:
    """Keras's ``verbose``: 0 silent, 1 a progress bar (on a terminal) and a line per epoch, 2 a
    line per epoch; ``"auto"`` is 1 on a terminal and 2 otherwise."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    if isinstance(verbose, bool) or verbose not in (0, 1, 2):
        raise ConfigError(f"verbose must be 0, 1, 2 or 'auto' (as in keras.Model.fit), got {verbose!r}")
    return int(verbose)


# the options an optimizer object replaces (it brings its own learning rate or schedule)
OPTIMIZER_OPTIONS = ("lr", "momentum", "nesterov", "lr_schedule", "lr_decay_every", "lr_decay_factor", "lr_milestones",
                     "lr_milestone_unit", "plateau_patience", "warmup_steps", "warmup_lr", "warmup_epochs")


def optimizer_options(optimizer, required: bool) -> tuple[dict[str, Any], Callable[[], keras.optimizers.Optimizer] | None]:
    """(configuration changes, ``() -> fresh optimizer``) for ``optimizer``: a name (the
    ``optimizer`` field), a Keras optimizer (recorded as ``optimizer_object``; every problem gets a
    copy made from its config, with its own learning rate or schedule), or a function returning a
    fresh optimizer (recorded likewise).

    Raises:
        ConfigError: anything else, or (with ``required``) an optimizer or function that cannot be
            recorded in the run's ``config.json``.
    """
    if optimizer is None:
        return {}, None
    if isinstance(optimizer, str):
        return {"optimizer": optimizer, "optimizer_object": {}}, None
    if isinstance(optimizer, keras.optimizers.Optimizer):
        form = recorded.record(optimizer, "optimizer", is_optimizer_or_factory, required=required)
        template = keras.optimizers.serialize(optimizer)
        return {"optimizer_object": form}, lambda: keras.optimizers.deserialize(template)
    if callable(optimizer):
        return {"optimizer_object": recorded.record(optimizer, "optimizer function", is_optimizer_or_factory,
                                                    required=required)}, optimizer
    raise ConfigError(
        f"optimizer must be 'sgd', 'adam', a keras.optimizers.Optimizer or a function returning one, got {optimizer!r}"
    )


def silent(message: str) -> None:
    """``log`` under ``verbose=0``."""


def hold_out(data: DataSource, config: TrainConfig) -> DataSource:
    """``data`` with ``config.validation_fraction`` of its training split held out (stratified,
    seeded by ``split_seed``) as its validation split, as the CLI loads a dataset."""
    if data.num_val:
        raise ConfigError("validation_fraction holds out its own validation data: drop validation_data or "
                          "validation_split")
    if isinstance(data, DatasetSource):
        raise ConfigError(
            "validation_fraction holds out part of arrays; for a tf.data pipeline pass validation_data"
        )
    return data.with_validation(config.validation_fraction, config.split_seed)


def model_changes(config_changes: dict[str, Any], *, optimizer, mode: str | None, epochs_per_stage: int | None,
                  head, local_loss, required: bool) -> Callable[[], keras.optimizers.Optimizer] | None:
    """Adds to ``config_changes`` what ``fit``'s optimizer, mode, epochs, head and local-loss
    arguments record; returns the optimizer factory (``None``: the configured optimizer).
    ``required``: each object must be recordable (a run with a workdir).

    Raises:
        ConfigError: an optimizer with learning-rate options it would ignore, head fields given
            twice, or a local loss that is neither a name nor a ``LocalLoss``.
    """
    optimizer_changes, optimizer_factory = optimizer_options(optimizer, required=required)
    if optimizer_factory is not None:
        replaced = sorted(set(config_changes) & set(OPTIMIZER_OPTIONS))
        if replaced:
            raise ConfigError(
                f"{', '.join(replaced)} would be ignored: the optimizer given brings its own learning rate (a float or a "
                "keras.optimizers.schedules.LearningRateSchedule); set it there, or pass optimizer='sgd' or 'adam'"
            )
    config_changes.update(optimizer_changes)
    if mode is not None:
        config_changes["mode"] = mode
    if epochs_per_stage is not None:
        config_changes["epochs_per_stage"] = epochs_per_stage
    if head is not None:  # recorded in the configuration, or refused here before anything is written
        recorded_head = head_options(head, required=required)
        both = sorted(set(config_changes) & (set(recorded_head) | set(AUX_FIELDS)))
        if both:
            raise ConfigError(f"{', '.join(both)} and head= both describe the head: give its fields in "
                              "head=layerwise.AuxHead(...) only")
        config_changes.update(recorded_head)
    if isinstance(local_loss, str):
        config_changes.update(local_loss=local_loss, local_loss_object={})
    elif isinstance(local_loss, LocalLoss):
        config_changes.update(local_loss_options(local_loss, required=required))
    elif local_loss is not None:
        raise ConfigError(f"local_loss must be a name (pred, sim, predsim, infopro) or a LocalLoss, got {local_loss!r}")
    return optimizer_factory


def run_data(train: Any, validation_data: Any, test: Any, network, shuffle: bool) -> DataSource:
    """The run's data from ``fit``'s training, validation and test data (each in any form ``fit``
    takes), checked against ``network``'s input shape."""
    if not shuffle and isinstance(train, DataSource):
        raise ConfigError("shuffle=False applies to arrays; a DataSource orders its own training examples")
    data = as_source(train, validation_data, test, num_classes=network.num_classes, shuffle=shuffle)
    check_image_shape(data.image_shape, network.input_shape)
    return data


def run_config(config: TrainConfig | None, config_changes: dict[str, Any], network, data: DataSource, train: Any,
               log: Callable[[str], None]) -> tuple[TrainConfig, DataSource]:
    """The run's validated configuration (``config`` or the defaults for ``network`` and ``data``,
    with ``config_changes``; ``precision="auto"`` resolved and said through ``log``) and its data
    (with ``validation_fraction`` held out unless ``train`` held it out already)."""
    if isinstance(data, DatasetSource) and "batch_size" in config_changes:
        raise ConfigError("batch_size applies to arrays; a tf.data pipeline brings its own batches")
    if config is None:
        config = TrainConfig().replace(dataset=data.name, model=network.name, model_options=dict(network.options))
    if isinstance(data, DatasetSource):
        config_changes["batch_size"] = data.batch_size
    config = config.replace(**config_changes).validate(validation_data=data.num_val > 0)
    # a DataSource with a validation split has held it out already (as the apps' load_data does)
    if config.validation_fraction and not (isinstance(train, DataSource) and data.num_val):
        data = hold_out(data, config)
    config = with_image_statistics(config, data.unit_statistics())  # InfoPro's target: the de-normalised image
    config, decided = settle_precision(config)
    if decided:
        log(decided)
    return config, data


def head_plan(config: TrainConfig, head, local_loss) -> HeadPlan:
    """The heads and the loss the configuration records, built from it as ``restore_run`` does; an
    object of the user's own is used as it is (its recorded form rebuilds to an equal one). A head
    the user gave is refused where it does not fit; the default one turns linear there."""
    return dataclasses.replace(HeadPlan.from_config(
        config, aux=head if config.heads.object and head is not None else None,
        local_loss=local_loss if config.local.loss == CUSTOM_LOSS and isinstance(local_loss, LocalLoss) else None),
        fit_features=head is None,
    )


def keras_arguments(x: Any, y: Any, validation_data: Any, options: dict[str, Any], *, batch_size: int | None,
                    validation_split: float, shuffle: bool, class_weight, verbose: int | str,
                    fit_arguments: Iterable[str]) -> tuple:
    """``fit``'s Keras arguments as (training data, validation data, TrainConfig changes, RunOptions
    changes, verbose); ``options``: fit's ``**options`` (the old ``train=`` and ``validation=`` too).

    Raises:
        ConfigError: the first argument Keras would take but ``fit`` does not, or cannot use.
    """
    train = training_data(x, y, options)
    validation_data = validation_data_of(validation_data, options)
    if batch_size is not None:
        options["batch_size"] = batch_size
    config_changes, run_changes = split_options(options, fit_arguments)
    if class_weight is not None:
        raise ConfigError("class_weight is not supported yet: leave it None (or balance the classes of x, y)")
    verbose = resolve_verbose(verbose)
    config_changes.update(validation_split=validation_split, shuffle=shuffle)  # recorded: a resume must repeat them
    if validation_split:
        if validation_data is not None:
            raise ConfigError("give validation_data or validation_split, not both")
        train, validation_data = split_off_validation(train, validation_split)
    return train, validation_data, config_changes, run_changes, verbose
