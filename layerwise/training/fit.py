"""``layerwise.fit``: train any staged network on any data, layerwise, end to end or decoupled.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019
(``mode="layerwise"``, Algorithm 1); the end-to-end baseline; Decoupled Greedy Learning
(Belilovsky et al., ICML 2020, ``mode="decoupled"``). The network comes from
``layerwise.split_model`` (any functional Keras model) or the zoo (``models.build_model``); the
data is arrays ``x``, ``y`` or a ``tf.data`` pipeline of ``(images, labels)`` batches, as
``keras.Model.fit`` takes them.

Example:
    >>> network = layerwise.split_model(keras.applications.ResNet50(weights=None,
    ...     input_shape=(32, 32, 3), classes=10), 4)
    >>> result = layerwise.fit(network, x, y, validation_split=0.1, epochs_per_stage=2,
    ...                        callbacks=[keras.callbacks.EarlyStopping(patience=1)])
    >>> result.classifiers[-1].save("stage_03.keras")
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.data.base import DataSource
from layerwise.data.pipelines import DatasetSource, as_source, check_image_shape, labels_in_range
from layerwise.distribute import is_chief, make_strategy, worker_workdir
from layerwise.errors import ConfigError, did_you_mean
from layerwise.config import recorded, schema
from layerwise.config import CUSTOM_LOSS, RunOptions, TrainConfig
from layerwise.run.network_file import write_network
from layerwise.run.workdir import check_workdir, open_run
from layerwise.training.heads import AUX_FIELDS, AuxHead, head_options
from layerwise.training.local_losses import LocalLoss, local_loss_options
from layerwise.training.modules import group_stages
from layerwise.training.network import StagedNetwork, primary
from layerwise.training.optim import is_optimizer_or_factory, resolve_precision
from layerwise.training.portable import compiled, saved_classifier, standard_layers
from layerwise.training.problems import HeadPlan, ensemble_weights
from layerwise.training.epoch import epoch_logs
from layerwise.training.trainer import GreedyTrainer

__all__ = ["Result", "fit"]


@dataclasses.dataclass
class Result:
    """What ``fit`` returns.

    Attributes:
        history: the run's metrics per epoch as lists, like ``keras.callbacks.History.history``:
            ``loss``, ``accuracy``, ``lr`` and, where the run has the data, ``val_loss``,
            ``val_accuracy``, ``test_accuracy``; ``stage`` and ``epoch`` (within its stage) say
            which epoch each entry is. One entry per epoch of the run, in order.
        epochs: the per-epoch records the history is made of (as in ``workdir/metrics.jsonl``).
        records: the per-stage records (test and ensemble accuracy, params, FLOPs, seconds).
        network: the trained network (its stages share the layers of the model it was split from).
        heads: the trained head of every stage that has one, by stage.
        config: the run's configuration.
        stage_heads: every stage has its own head (layerwise and decoupled runs).
    """

    history: dict[str, list[Any]]
    epochs: list[dict[str, Any]]
    records: list[dict[str, Any]]
    network: StagedNetwork
    heads: dict[int, keras.Model]
    config: TrainConfig
    stage_heads: bool = True

    @property
    def classifiers(self) -> list[keras.Model]:
        """One Keras model per trained stage, images -> class probabilities (stage j's prefix and
        head), compiled with the sparse cross-entropy and accuracy so ``evaluate(x, y)`` works;
        each saves with ``model.save("x.keras")`` and loads with ``keras.saving.load_model`` in any
        process, with Keras alone: the layers that only speed up training are their standard Keras
        equivalents, holding a copy of the trained weights; every other layer is the network's own
        (:func:`layerwise.training.portable.standard_layers`). An end-to-end run has one, the whole
        network."""
        stages = sorted(self.heads) if self.stage_heads else [self.network.num_stages - 1]
        return [self._classifier(j) for j in stages]

    def _classifier(self, j: int) -> keras.Model:
        images = self.network.image_input()
        logits = self.heads[j](primary(self.network.run(images, 0, j + 1)))
        return saved_classifier(keras.Model(images, logits), name=f"{self.network.name}_stage_{j:02d}")

    def ensemble(self) -> keras.Model:
        """The paper's ensemble as one compiled Keras model: images -> sum_j 2^j p_j / sum_j 2^j
        over the stages' probabilities (the stages run once, each head reads its stage); of
        standard Keras layers, as :attr:`classifiers`."""
        if not self.stage_heads:
            raise ConfigError("an end-to-end run has one head: there is no ensemble of stages")
        members = sorted(self.heads)
        images = self.network.image_input()
        x, terms = images, []
        for j, weight in zip(members, ensemble_weights(len(members))):
            x = self.network.stages[j](x)
            probs = keras.layers.Activation("softmax", dtype="float32", name=f"probabilities_{j:02d}")(
                self.heads[j](primary(x)))
            terms.append(keras.layers.Rescaling(float(weight), name=f"weight_{j:02d}")(probs))
        out = terms[0] if len(terms) == 1 else keras.layers.Add(name="ensemble")(terms)
        return compiled(standard_layers(keras.Model(images, out, name=f"{self.network.name}_ensemble")))


def keras_history(epochs: Sequence[dict[str, Any]]) -> dict[str, list[Any]]:
    """``epochs`` (epoch records) as ``keras.callbacks.History.history``: one list per metric, in
    the callbacks' names (``loss``, ``accuracy``, ``val_loss``, ...), with ``stage`` and ``epoch``."""
    history: dict[str, list[Any]] = {}
    for record in epochs:
        logs = epoch_logs(record)
        logs["epoch"] = logs.pop("stage_epoch")
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
    return history


OLD_ARGUMENT_NAMES = ("train", "validation")  # x and validation_data before fit spoke Keras
# Keras's names for what fit calls otherwise
KERAS_HINTS = {"epochs": "epochs_per_stage", "learning_rate": "lr"}
# keras.Model.fit's arguments fit has no counterpart for, and why
KERAS_ONLY = {
    "sample_weight": "per-example weights are not supported yet",
    "initial_epoch": "a run resumes where it stopped when fit is called again with the same workdir",
    "steps_per_epoch": "an epoch is one pass over the training data",
    "validation_steps": "the whole validation data is evaluated every epoch",
    "validation_batch_size": "arrays are evaluated in batches of max(batch_size, 256), a dataset in its own",
    "validation_freq": "validation data is evaluated every epoch",
}


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (TrainConfig changes, RunOptions changes), or a one-line ConfigError naming
    an unknown option and the closest accepted name."""
    config_names, run_names = schema.flat_names(TrainConfig), schema.flat_names(RunOptions)
    unknown = sorted(set(options) - set(config_names) - set(run_names))
    if unknown:
        known = {*config_names, *run_names, *inspect.signature(fit).parameters, *OLD_ARGUMENT_NAMES}
        raise ConfigError("; ".join(
            f"fit does not take keras.Model.fit's {name!r}: {KERAS_ONLY[name]}" if name in KERAS_ONLY
            else f"unknown fit option {name!r}{did_you_mean(name, known, KERAS_HINTS)}" for name in unknown
        ) + " (help(layerwise.fit) lists the arguments)")
    return ({k: v for k, v in options.items() if k in config_names},
            {k: v for k, v in options.items() if k in run_names})


def _training_data(x: Any, y: Any, options: dict[str, Any]) -> Any:
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


def _validation_data(validation_data: Any, options: dict[str, Any]) -> Any:
    """``validation_data``, or the deprecated ``validation=`` keyword's value."""
    if "validation" in options:
        if validation_data is not None:
            raise ConfigError("pass validation_data only (validation= is its old name)")
        return options.pop("validation")
    return validation_data


def _split_off_validation(train: Any, validation_split: float) -> tuple[Any, Any]:
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


def _resolve_verbose(verbose: int | str) -> int:
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


def _optimizer_options(optimizer, required: bool) -> tuple[dict[str, Any], Callable[[], keras.optimizers.Optimizer] | None]:
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


def fit(
    network: StagedNetwork,
    x: Any = None,
    y: Any = None,
    *,
    batch_size: int | None = None,
    epochs_per_stage: int | None = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    shuffle: bool = True,
    class_weight: dict[int, float] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    verbose: int | str = "auto",
    mode: str | None = None,
    head: AuxHead | Callable[..., keras.Model] | None = None,
    local_loss: str | LocalLoss | None = None,
    optimizer: Any = None,
    test: Any = None,
    workdir: str | None = None,
    strategy: tf.distribute.Strategy | str | None = None,
    config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
    **options,
) -> Result:
    """Trains ``network`` on ``x``, ``y``: stage by stage (``layerwise``), ``end_to_end``, or ``decoupled``.

    The arguments it shares with ``keras.Model.fit`` (https://keras.io/api/models/model_training_apis/#fit-method)
    mean what they mean there; ``epochs_per_stage`` is Keras's ``epochs`` for each stage.

    Args:
        network: a :class:`StagedNetwork` (``layerwise.split_model`` or ``models.build_model``).
        x, y: images and integer labels as arrays (shuffled per epoch unless ``shuffle=False``,
            batched to ``batch_size``); or, with ``y`` left out, a ``tf.data.Dataset`` of
            ``(images, integer labels)`` batches (used as it is, every epoch), an ``(x, y)`` pair
            or a ``layerwise.data.DataSource``.
        batch_size: examples per batch of arrays (default 128); a dataset brings its own batches.
        epochs_per_stage: epochs of every stage (end to end: J times as many, the same total).
        validation_data: evaluation data in the same forms as ``x`` (an ``(x, y)`` pair or a
            dataset): what callbacks monitor (``val_loss``, ``val_accuracy``) and ``keep_best``
            picks on. ``validation=`` is its old name.
        validation_split: hold out the last fraction of the arrays ``x``, ``y`` (before shuffling)
            as validation data, as Keras does. ``validation_fraction=`` instead holds out a
            stratified, seeded fraction (the CLI's ``--validation_fraction``).
        shuffle: a new order of the training arrays every epoch (seeded, so a resumed run repeats
            it); ``False`` keeps their order. A dataset's order is its own.
        class_weight: not supported yet; ``None`` only (a ConfigError says so).
        callbacks: Keras callbacks (``layerwise.training.callbacks`` says what they see);
            ``EarlyStopping`` ends the current stage.
        verbose: 0 silent (nothing is printed); 1 a progress bar (on a terminal) and a line per
            epoch; 2 a line per epoch; ``"auto"``: 1 on a terminal, else 2.
        mode: ``layerwise`` (default), ``end_to_end`` or ``decoupled``.
        head: every stage's auxiliary head: an :class:`AuxHead` (default ``AuxHead(k=2,
            width=128)``; every field is recorded in the configuration, ``aux_*``) or any
            ``(feature_shape, num_classes) -> keras.Model``, recorded as a Keras-serialised object
            (``aux_head_object``: register it with ``keras.saving.register_keras_serializable``;
            with a ``workdir``, one that cannot be recorded, such as a lambda, is refused before
            anything is written). The last stage uses the network's own classifier when it has one.
            Where a stage's features are too small for the default head's 3x3 convs (1x1) it turns
            linear (k=1), said once through ``log``; an :class:`AuxHead` given here is refused there.
        local_loss: what every stage minimises: ``"pred"`` (default: cross-entropy through its
            head), ``"sim"``, ``"predsim"``, ``"infopro"`` (their weights are options:
            ``predsim_beta``, ``infopro_recon_weight``, ...), or a
            ``layerwise.training.local_losses.LocalLoss``: a built-in with its own values (recorded
            as its name and fields, ``PredSim(beta=0.5)`` as ``predsim`` and ``predsim_beta``),
            or your own subclass (recorded as ``custom`` and a Keras-serialised object, refused with
            a ``workdir`` where it cannot be). See ``docs/local_learning.md``. ``local_modules=K`` groups the
            network's stages into K modules of roughly equal cost first.
        optimizer: ``"sgd"`` (default, with ``lr``, ``momentum`` and the paper's step decay:
            ``lr_decay_every=0`` keeps the learning rate constant), ``"adam"``, a Keras optimizer
            (each problem gets a fresh copy of it, with its own float learning rate or
            ``LearningRateSchedule``; ``lr`` and the schedule options are then refused) or a
            function returning a fresh optimizer; either is recorded in the run's configuration
            (``optimizer_object``; with a ``workdir``, one Keras cannot serialise is refused).
            Left out, a model compiled before ``split_model`` trains with its compiled optimizer,
            as ``keras.Model.fit`` would. ``weight_decay`` (coupled L2 in the loss) applies to every
            optimizer. The run's first line (``verbose`` > 0) says which trains.
        test: test data in the same forms as ``validation_data``, reported per epoch and per stage.
        workdir: run directory: crash-safe checkpoints every epoch, ``metrics.jsonl``,
            TensorBoard logs, a SavedModel per stage and the network's architecture
            (``network.json``: ``restore_run(workdir)`` and ``export_run(workdir)`` rebuild the run
            from the directory alone); rerunning the same call resumes, and a
            directory of another configuration, or a non-empty one that is not a run, is refused.
            The run holds the directory's lock (``layerwise.run.lock``): a second process on it
            is refused. ``None``: in memory only.
        strategy: a ``tf.distribute.Strategy`` or a name (``auto``, ``one_device``, ``mirrored``,
            ``multi_worker``); build the network under its scope.
        config: a whole :class:`TrainConfig` to start from (the CLI's path); the arguments above
            and ``options`` override it.
        log: where the lines go. ``None`` (default): ``print``, or nothing at all with
            ``verbose=0``; a function given here (``print`` too) gets the run's notes (resuming,
            warnings) whatever ``verbose`` says, and the epoch lines unless ``verbose=0``.
        **options: any other field of :class:`TrainConfig` or :class:`RunOptions` by its name
            (``lr``, ``weight_decay``, ``seed``, ``keep_best``, ``on_nan``, ``precision``,
            ``cache_prefix``, ``validation_fraction``, ...). An unknown name is refused with the
            closest accepted one.

    Returns:
        A :class:`Result`: ``history`` (Keras's dict of lists), ``epochs``, ``records``,
        ``classifiers`` and ``ensemble()``.

    Raises:
        ConfigError: an unknown option, an impossible setting or data of the wrong form (one-hot
            or out-of-range labels, channels-first images or another size than the network's;
            a pipeline's labels after its first batch are checked as they are read).
        WorkdirMismatchError: ``workdir`` holds a run of another configuration.
        WorkdirBusyError: another process is using ``workdir`` (its pid is in the message).
        NonFiniteLossError: the loss became NaN or infinite (``on_nan="stop"``).
    """
    if not isinstance(network, StagedNetwork):
        raise ConfigError(
            f"fit needs a StagedNetwork, got {type(network).__name__}: split a Keras model first with "
            "layerwise.split_model(model, at)"
        )
    if isinstance(strategy, str):  # first: multi_worker must start before TensorFlow runs
        strategy = make_strategy(strategy)
    options = dict(options)
    train = _training_data(x, y, options)
    validation_data = _validation_data(validation_data, options)
    if batch_size is not None:
        options["batch_size"] = batch_size
    config_changes, run_changes = _split_options(options)
    if class_weight is not None:
        raise ConfigError("class_weight is not supported yet: leave it None (or balance the classes of x, y)")
    verbose = _resolve_verbose(verbose)
    if log is None:  # Keras's verbose=0 prints nothing; a log given explicitly still gets the notes
        log = _silent if verbose == 0 else print
    config_changes.update(validation_split=validation_split, shuffle=shuffle)  # recorded: a resume must repeat them
    if validation_split:
        if validation_data is not None:
            raise ConfigError("give validation_data or validation_split, not both")
        train, validation_data = _split_off_validation(train, validation_split)
    if optimizer is None and network.optimizer is not None and "optimizer" not in config_changes:
        optimizer = network.optimizer  # what the model was compiled with, as keras.Model.fit trains with it
    optimizer_changes, optimizer_factory = _optimizer_options(optimizer, required=workdir is not None)
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
        recorded_head = head_options(head, required=workdir is not None)
        both = sorted(set(config_changes) & (set(recorded_head) | set(AUX_FIELDS)))
        if both:
            raise ConfigError(f"{', '.join(both)} and head= both describe the head: give its fields in "
                              "head=layerwise.AuxHead(...) only")
        config_changes.update(recorded_head)
    if isinstance(local_loss, str):
        config_changes.update(local_loss=local_loss, local_loss_object={})
    elif isinstance(local_loss, LocalLoss):
        config_changes.update(local_loss_options(local_loss, required=workdir is not None))
    elif local_loss is not None:
        raise ConfigError(f"local_loss must be a name (pred, sim, predsim, infopro) or a LocalLoss, got {local_loss!r}")
    if not shuffle and isinstance(train, DataSource):
        raise ConfigError("shuffle=False applies to arrays; a DataSource orders its own training examples")
    data = as_source(train, validation_data, test, num_classes=network.num_classes, shuffle=shuffle)
    check_image_shape(data.image_shape, network.input_shape)
    if isinstance(data, DatasetSource) and "batch_size" in config_changes:
        raise ConfigError("batch_size applies to arrays; a tf.data pipeline brings its own batches")
    if config is None:
        config = TrainConfig().replace(dataset=data.name, model=network.name, model_options=dict(network.options))
    if isinstance(data, DatasetSource):
        config_changes["batch_size"] = data.batch_size
    config = config.replace(**config_changes).validate(validation_data=data.num_val > 0)
    # a DataSource with a validation split has held it out already (as the apps' load_data does)
    if config.validation_fraction and not (isinstance(train, DataSource) and data.num_val):
        data = _hold_out(data, config)
    if config.precision == "auto":
        precision, why = resolve_precision("auto")
        log(f"precision: auto -> {precision} ({why})")
        config = config.replace(precision=precision)
    run_options = RunOptions().replace(**run_changes).validate()
    given_network = network  # what network.json records: restore_run groups it again, as here
    if config.local.modules:
        network = group_stages(network, config.local.modules)
    # the heads and the loss the configuration records, built from it as restore_run does; an
    # object of the user's own is used as it is (its recorded form rebuilds to an equal one). A head
    # the user gave is refused where it does not fit; the default one turns linear there.
    heads = dataclasses.replace(HeadPlan.from_config(
        config, aux=head if config.heads.object and head is not None else None,
        local_loss=local_loss if config.local.loss == CUSTOM_LOSS and isinstance(local_loss, LocalLoss) else None),
        fit_features=head is None,
    )
    if not is_chief(strategy):
        verbose, log = 0, _silent
    with worker_workdir(workdir, strategy) as writes_to:
        if writes_to is not None:
            check_workdir(writes_to, config)  # before anything is written
        trainer = GreedyTrainer(
            network, data, config, writes_to, strategy=strategy, options=run_options, heads=heads,
            callbacks=callbacks, optimizer=optimizer_factory, verbose=verbose, log=log,
        )
        linear = heads.linear_stages(trainer.network, trainer.mode.trained_stages(trainer.network))
        if linear and verbose:
            log(f"head: the features of stage(s) {', '.join(map(str, linear))} are too small for the head's 3x3 "
                "convs: those stages get a linear head (k=1)")
        if writes_to is None:
            with labels_in_range(network.num_classes):
                records = trainer.run()
        else:
            with open_run(writes_to, config) as resumed:  # the directory's lock, for the whole run
                if resumed:
                    log(f"resuming the run in {writes_to}")
                not_saved = write_network(writes_to, given_network, data)  # restore_run's source
                if not_saved:
                    log(f"note: the network is not saved with the run ({not_saved}): restore_run and export_run "
                        "of it need build_network")
                with labels_in_range(network.num_classes):
                    records = trainer.run()
        epochs = [r for r in trainer.runlog.records if r["event"] == "epoch"]
    return Result(keras_history(epochs), epochs, records, network, dict(trainer.heads), config,
                  trainer.mode.stage_heads)


def _silent(message: str) -> None:
    """``log`` under ``verbose=0``."""


def _hold_out(data: DataSource, config: TrainConfig) -> DataSource:
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
