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
from typing import Any, Callable, Sequence

import keras
import tensorflow as tf

from layerwise.data.pipelines import labels_in_range
from layerwise.distribute import is_chief, make_strategy, worker_workdir
from layerwise.errors import ConfigError
from layerwise.config import RunOptions, TrainConfig
from layerwise.run.network_file import write_network
from layerwise.run.workdir import check_workdir, open_run
from layerwise.training.epoch import epoch_logs
from layerwise.training.fit_arguments import head_plan, keras_arguments, model_changes, run_config, run_data, silent
from layerwise.nn.heads import AuxHead
from layerwise.training.local_losses import LocalLoss
from layerwise.training.stage_groups import group_stages
from layerwise.nn.network import StagedNetwork, primary
from layerwise.nn.portable import compiled, saved_classifier, standard_layers
from layerwise.training.problems import ensemble_weights
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
        (:func:`layerwise.nn.portable.standard_layers`). An end-to-end run has one, the whole
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
    train, validation_data, config_changes, run_changes, verbose = keras_arguments(
        x, y, validation_data, dict(options), batch_size=batch_size, validation_split=validation_split,
        shuffle=shuffle, class_weight=class_weight, verbose=verbose, fit_arguments=inspect.signature(fit).parameters)
    if log is None:  # Keras's verbose=0 prints nothing; a log given explicitly still gets the notes
        log = silent if verbose == 0 else print
    if optimizer is None and network.optimizer is not None and "optimizer" not in config_changes:
        optimizer = network.optimizer  # what the model was compiled with, as keras.Model.fit trains with it
    optimizer_factory = model_changes(config_changes, optimizer=optimizer, mode=mode, epochs_per_stage=epochs_per_stage,
                                      head=head, local_loss=local_loss, required=workdir is not None)
    data = run_data(train, validation_data, test, network, shuffle)
    config, data = run_config(config, config_changes, network, data, train, log)
    run_options = RunOptions().replace(**run_changes).validate()
    given_network = network  # what network.json records: restore_run groups it again, as here
    if config.local.modules:
        network = group_stages(network, config.local.modules)
    heads = head_plan(config, head, local_loss)
    if not is_chief(strategy):
        verbose, log = 0, silent
    with worker_workdir(workdir, strategy) as writes_to:
        if writes_to is not None:
            check_workdir(writes_to, config)  # before anything is written
        trainer = GreedyTrainer(
            network, data, config, writes_to, strategy=strategy, options=run_options, heads=heads,
            callbacks=callbacks, optimizer=optimizer_factory, verbose=verbose, log=log,
        )
        records = run(trainer, writes_to, given_network)
        epochs = [r for r in trainer.runlog.records if r["event"] == "epoch"]
    return Result(keras_history(epochs), epochs, records, network, dict(trainer.heads), config,
                  trainer.mode.stage_heads)


def run(trainer: GreedyTrainer, writes_to: str | None, given_network: StagedNetwork) -> list[dict[str, Any]]:
    """Runs ``trainer`` (``fit``'s last step): in memory, or holding the lock of ``writes_to``
    with the network saved beside the run (``given_network``: before ``local_modules`` grouped it)."""
    network, data, log = trainer.network, trainer.data, trainer.log
    linear = trainer.head_plan.linear_stages(network, trainer.mode.trained_stages(network))
    if linear and trainer.verbose:
        log(f"head: the features of stage(s) {', '.join(map(str, linear))} are too small for the head's 3x3 "
            "convs: those stages get a linear head (k=1)")
    if writes_to is None:
        with labels_in_range(network.num_classes):
            return trainer.run()
    with open_run(writes_to, trainer.config) as resumed:  # the directory's lock, for the whole run
        if resumed:
            log(f"resuming the run in {writes_to}")
        not_saved = write_network(writes_to, given_network, data)  # restore_run's source
        if not_saved:
            log(f"note: the network is not saved with the run ({not_saved}): restore_run and export_run "
                "of it need build_network")
        with labels_in_range(network.num_classes):
            return trainer.run()
