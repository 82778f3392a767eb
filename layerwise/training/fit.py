"""``layerwise.fit``: train any staged network on any data, layerwise, end to end or decoupled.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019
(``mode="layerwise"``, Algorithm 1); the end-to-end baseline; Decoupled Greedy Learning
(Belilovsky et al., ICML 2020, ``mode="decoupled"``). The network comes from
``layerwise.split_model`` (any functional Keras model) or the zoo (``models.build_model``); the
data is a ``tf.data`` pipeline of ``(images, labels)`` batches or an ``(x, y)`` pair of arrays.

Example:
    >>> network = layerwise.split_model(keras.applications.ResNet50(weights=None,
    ...     input_shape=(32, 32, 3), classes=10), 4)
    >>> result = layerwise.fit(network, train_ds, validation=val_ds, epochs_per_stage=2,
    ...                        callbacks=[keras.callbacks.EarlyStopping(patience=1)])
    >>> result.classifiers[-1].save("stage_03.keras")
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from layerwise.data.pipelines import DatasetSource, as_source, check_image_shape, labels_in_range
from layerwise.distribute import is_chief, make_strategy, worker_workdir
from layerwise.errors import ConfigError
from layerwise.run import schema
from layerwise.run.config import CUSTOM_LOSS, RunOptions, TrainConfig
from layerwise.run.workdir import check_workdir, open_run
from layerwise.training.heads import AuxHead, head_options
from layerwise.training.local_losses import LocalLoss, local_loss_options
from layerwise.training.modules import group_stages
from layerwise.training.network import StagedNetwork, primary
from layerwise.training.optim import resolve_precision
from layerwise.training.portable import standard_layers
from layerwise.training.problems import HeadPlan, ensemble_weights
from layerwise.training.trainer import GreedyTrainer

__all__ = ["Result", "fit"]


@dataclasses.dataclass
class Result:
    """What ``fit`` returns.

    Attributes:
        history: every record of the run in order (one per epoch and one per stage, the same as
            ``workdir/metrics.jsonl``).
        records: the per-stage records (test and ensemble accuracy, params, FLOPs, seconds).
        network: the trained network (its stages share the layers of the model it was split from).
        heads: the trained head of every stage that has one, by stage.
        config: the run's configuration.
        stage_heads: every stage has its own head (layerwise and decoupled runs).
    """

    history: list[dict[str, Any]]
    records: list[dict[str, Any]]
    network: StagedNetwork
    heads: dict[int, keras.Model]
    config: TrainConfig
    stage_heads: bool = True

    @property
    def classifiers(self) -> list[keras.Model]:
        """One Keras model per trained stage, images -> class probabilities (stage j's prefix and
        head); each saves with ``model.save("x.keras")`` and loads with ``keras.saving.load_model``
        in any process, with Keras alone: the layers that only speed up training are their standard
        Keras equivalents, holding a copy of the trained weights; every other layer is the
        network's own (:func:`layerwise.training.portable.standard_layers`). An end-to-end run
        has one, the whole network."""
        stages = sorted(self.heads) if self.stage_heads else [self.network.num_stages - 1]
        return [self._classifier(j) for j in stages]

    def _classifier(self, j: int) -> keras.Model:
        images = self.network.image_input()
        logits = self.heads[j](primary(self.network.run(images, 0, j + 1)))
        probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
        return standard_layers(keras.Model(images, probabilities, name=f"{self.network.name}_stage_{j:02d}"))

    def ensemble(self) -> keras.Model:
        """The paper's ensemble as one Keras model: images -> sum_j 2^j p_j / sum_j 2^j over the
        stages' probabilities (the stages run once, each head reads its stage); of standard Keras
        layers, as :attr:`classifiers`."""
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
        return standard_layers(keras.Model(images, out, name=f"{self.network.name}_ensemble"))


def _split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``options`` as (TrainConfig changes, RunOptions changes), or a ConfigError for unknown names."""
    config_names, run_names = schema.flat_names(TrainConfig), schema.flat_names(RunOptions)
    unknown = sorted(set(options) - set(config_names) - set(run_names))
    if unknown:
        raise ConfigError(
            f"unknown fit option(s) {unknown}; known: {', '.join(sorted(set(config_names) | set(run_names)))}"
        )
    return ({k: v for k, v in options.items() if k in config_names},
            {k: v for k, v in options.items() if k in run_names})


def _optimizer_factory(optimizer) -> tuple[dict[str, Any], Callable[[], keras.optimizers.Optimizer] | None]:
    """A fresh optimizer per problem from ``optimizer``: a name (config field), a Keras optimizer
    (cloned from its config, with its own learning rate), or a factory."""
    if optimizer is None:
        return {}, None
    if isinstance(optimizer, str):
        return {"optimizer": optimizer}, None
    if isinstance(optimizer, keras.optimizers.Optimizer):
        template = keras.optimizers.serialize(optimizer)
        return {}, lambda: keras.optimizers.deserialize(template)
    if callable(optimizer):
        return {}, optimizer
    raise ConfigError(
        f"optimizer must be 'sgd', 'adam', a keras.optimizers.Optimizer or a function returning one, got {optimizer!r}"
    )


def fit(
    network: StagedNetwork,
    train: Any,
    *,
    mode: str | None = None,
    epochs_per_stage: int | None = None,
    head: AuxHead | Callable[..., keras.Model] | None = None,
    local_loss: str | LocalLoss | None = None,
    optimizer: Any = None,
    validation: Any = None,
    test: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] | None = None,
    workdir: str | None = None,
    strategy: tf.distribute.Strategy | str | None = None,
    config: TrainConfig | None = None,
    verbose: int = 1,
    log: Callable[[str], None] = print,
    **options,
) -> Result:
    """Trains ``network`` on ``train``: stage by stage (``layerwise``), ``end_to_end``, or ``decoupled``.

    Args:
        network: a :class:`StagedNetwork` (``layerwise.split_model`` or ``models.build_model``).
        train: a ``tf.data.Dataset`` of ``(images, integer labels)`` batches (used as it is, every
            epoch), an ``(x, y)`` pair of arrays (shuffled per epoch, batched to ``batch_size``),
            or a ``layerwise.data.DataSource``.
        mode: ``layerwise`` (default), ``end_to_end`` or ``decoupled``.
        epochs_per_stage: epochs of every stage (end to end: J times as many, the same total).
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
        optimizer: ``"sgd"`` (default, with ``lr``, ``momentum`` and the step schedule),
            ``"adam"``, a Keras optimizer (each problem gets a fresh copy of it, with its own
            learning rate or schedule) or a function returning a fresh optimizer.
        validation, test: evaluation data, in the same forms as ``train``. ``validation`` is
            what callbacks monitor (``val_loss``, ``val_accuracy``) and ``keep_best`` picks on;
            ``test`` is reported per epoch and per stage.
        callbacks: Keras callbacks (``layerwise.training.callbacks`` says what they see);
            ``EarlyStopping`` ends the current stage.
        workdir: run directory: crash-safe checkpoints every epoch, ``metrics.jsonl``,
            TensorBoard logs and a SavedModel per stage; rerunning the same call resumes, and a
            directory of another configuration, or a non-empty one that is not a run, is refused.
            The run holds the directory's lock (``layerwise.run.lock``): a second process on it
            is refused. ``None``: in memory only.
        strategy: a ``tf.distribute.Strategy`` or a name (``auto``, ``one_device``, ``mirrored``,
            ``multi_worker``); build the network under its scope.
        config: a whole :class:`TrainConfig` to start from (the CLI's path); the arguments above
            and ``options`` override it.
        verbose: 1: a line per epoch (and a progress bar on a terminal); 0: silent.
        log: where the lines go.
        **options: any other field of :class:`TrainConfig` or :class:`RunOptions` by its flag
            name (``lr``, ``weight_decay``, ``batch_size``, ``seed``, ``keep_best``, ``on_nan``,
            ``precision``, ``cache_prefix``, ...).

    Returns:
        A :class:`Result`: ``history``, ``records``, ``classifiers`` and ``ensemble()``.

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
    config_changes, run_changes = _split_options(options)
    optimizer_changes, optimizer_factory = _optimizer_factory(optimizer)
    config_changes.update(optimizer_changes)
    if mode is not None:
        config_changes["mode"] = mode
    if epochs_per_stage is not None:
        config_changes["epochs_per_stage"] = epochs_per_stage
    if head is not None:  # recorded in the configuration, or refused here before anything is written
        config_changes.update(head_options(head, required=workdir is not None))
    if isinstance(local_loss, str):
        config_changes.update(local_loss=local_loss, local_loss_object={})
    elif isinstance(local_loss, LocalLoss):
        config_changes.update(local_loss_options(local_loss, required=workdir is not None))
    elif local_loss is not None:
        raise ConfigError(f"local_loss must be a name (pred, sim, predsim, infopro) or a LocalLoss, got {local_loss!r}")
    data = as_source(train, validation, test, num_classes=network.num_classes)
    check_image_shape(data.image_shape, network.input_shape)
    if isinstance(data, DatasetSource) and "batch_size" in config_changes:
        raise ConfigError("batch_size applies to arrays; a tf.data pipeline brings its own batches")
    if config is None:
        config = TrainConfig().replace(dataset=data.name, model=network.name, model_options=dict(network.options))
    if isinstance(data, DatasetSource):
        config_changes["batch_size"] = data.batch_size
    config = config.replace(**config_changes).validate(validation_data=data.num_val > 0)
    if config.precision == "auto":
        precision, why = resolve_precision("auto")
        log(f"precision: auto -> {precision} ({why})")
        config = config.replace(precision=precision)
    run_options = RunOptions().replace(**run_changes).validate()
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
        verbose, log = 0, (lambda message: None)
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
                with labels_in_range(network.num_classes):
                    records = trainer.run()
        history = list(trainer.runlog.records)
    return Result(history, records, network, dict(trainer.heads), config, trainer.mode.stage_heads)
