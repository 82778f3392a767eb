"""The training core every mode runs on: problems, epochs, evaluation, checkpoints, records.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019.
A :class:`GreedyTrainer` holds one run's state (network, data, configuration, heads, records,
the ensemble so far) and offers the steps a *mode* is made of (``layerwise.training.modes``):
build a problem, train it epoch by epoch with checkpoints, evaluate it, finish it (freeze, export,
record): the members of ``layerwise.training.session.TrainingSession``, the one interface modes and
post-stage hooks (pruning, head refit; ``layerwise.training.hooks``) use. The pieces it composes
have one job each: the epoch (``epoch``), evaluation (``evaluation``), what a rerun resumes
(``resume``), the epoch kept (``selection``), the steps (the ``steps`` package).

Layerwise (Algorithm 1): for j = 0..J-1, freeze stages 0..j-1 (``trainable=False``, BatchNorm in
inference mode), train stage j with a fresh auxiliary head, a fresh optimizer and a freshly traced
step, evaluate its head and the 2^j-weighted ensemble of all heads so far, checkpoint and export.

Every epoch is checkpointed (crash-safe, ``layerwise.run.checkpoints``): rerunning the same configuration on the
same workdir loads finished stages and continues the unfinished one from its last epoch, with the same numbers.

Example:
    >>> trainer = GreedyTrainer(network, data, config, workdir="runs/demo")
    >>> records = trainer.run()   # one dict per stage: accuracies, params, seconds
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import keras
import numpy as np
import tensorflow as tf

from layerwise.config import RunOptions, TrainConfig
from layerwise.data.base import DataSource, derive_seed
from layerwise.errors import ConfigError
from layerwise.run import checkpoints as ckpt
from layerwise.run.runlog import RunLog
from layerwise.serving.models_config import write_models_config
from layerwise.serving.versions import unfinished_servables
from layerwise.training.callbacks import RunCallbacks
from layerwise.training.epoch import EpochLoop, check_finite
from layerwise.training.evaluation import Evaluator
from layerwise.training.finishing import StageFinisher, export_once, record_once
from layerwise.training.hooks import StageHook, hooks_for
from layerwise.training.modes import Mode, mode_for
from layerwise.nn.network import StagedNetwork
from layerwise.onednn import CHOICE as ONEDNN
from layerwise.precision import adopt_policy, dtype_policy, settle_precision
from layerwise.training.optim import for_precision, make_optimizer, recorded_optimizer
from layerwise.training.prefix_cache import PrefixCache, check_option, problem_cache
from layerwise.training.problems import Ensemble, HeadPlan, Problem, end_to_end_problem, stage_problem
from layerwise.training.resume import load_or_retrain, restore_epoch
from layerwise.training.schedules import check_learning_rate_setter, describe_optimizer, make_schedule
from layerwise.training.selection import KeptEpoch
from layerwise.training.steps import make_multi_step, make_predict_step, make_problem_step

__all__ = ["GreedyTrainer"]

T = TypeVar("T")


def steps_per_epoch(data: DataSource, config: TrainConfig) -> int:
    """Training batches per epoch of ``data`` with ``config``'s batch size.

    Raises:
        ConfigError: the data's crops are not ``config.crop_size``, or a batch is larger than the
            training set.
    """
    if data.crop_size != config.crop_size:
        raise ConfigError(
            f"config.crop_size is {config.crop_size} but the data gives "
            f"{data.crop_size or 'whole images'}: pass it through "
            "layerwise.data.crops.with_crops(data, config.crop_size)"
        )
    steps = data.steps_per_epoch(config.batch_size)
    if steps == 0:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the training set "
            f"({data.num_train} examples); use a smaller --batch_size"
        )
    return steps


class GreedyTrainer:
    """Trains a staged network in one of the modes, with custom loops (a ``TrainingSession``).

    Args:
        network: the model as a list of stages (``models.build_model`` or ``layerwise.split_model``).
        data: the dataset (normalised ``tf.data`` batches).
        config: validated run configuration (mode, heads, optimiser, epochs, seed, ...).
        workdir: run directory for checkpoints, logs and SavedModels; ``None`` keeps
            everything in memory (no resume, no export).
        strategy: a ``tf.distribute.Strategy``; the default strategy when ``None``. The network
            must have been built under its scope.
        options: execution options that do not change results (XLA, prefix cache).
        heads: which head each stage trains with (default: from ``config``).
        mode: the training mode (default: ``config.mode``'s).
        hooks: post-stage steps (default: pruning / head refit as ``config`` asks).
        callbacks: Keras callbacks (see ``layerwise.training.callbacks``).
        optimizer: ``() -> keras Optimizer`` for a fresh optimizer per problem, with its own
            learning rate; default: ``config.optim`` and ``config.schedule``.
        verbose: 1 shows a progress bar per epoch (on a terminal) and a line per epoch, 2 only the
            line (Keras's ``verbose=2``), 0 is silent.
        log: where one-line messages go.
    """

    def __init__(
        self,
        network: StagedNetwork,
        data: DataSource,
        config: TrainConfig,
        workdir: str | None = None,
        *,
        strategy: tf.distribute.Strategy | None = None,
        options: RunOptions | None = None,
        heads: HeadPlan | None = None,
        mode: Mode | None = None,
        hooks: Sequence[StageHook] | None = None,
        callbacks: Sequence[keras.callbacks.Callback] | None = None,
        optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
        verbose: int = 1,
        log: Callable[[str], None] = print,
    ):
        self.network = network
        self.data = data
        config = config.validate(validation_data=data.num_val > 0)
        # "auto" is settled by the callers that log it (fit, the CLI); here for any other caller
        self.config = settle_precision(config)[0]
        adopt_policy(network.stages, self.config.precision)  # the whole network in it, as the CLI builds it
        self.workdir = workdir
        self.strategy = strategy or tf.distribute.get_strategy()
        self.distributed = strategy is not None
        self.options = (options or RunOptions()).validate(self.config)
        check_option(self.options.cache_prefix, data, workdir)
        self.head_plan = heads or HeadPlan.from_config(self.config)
        self.mode = mode or mode_for(self.config.mode)
        self.hooks = list(hooks_for(self.config) if hooks is None else hooks)
        self.optimizer_factory = optimizer or recorded_optimizer(self.config.optim)
        self.verbose = verbose
        self.log = log
        self.runlog = RunLog(workdir)
        self.records: list[dict[str, Any]] = []
        self.heads: dict[int, keras.Model] = {}
        self.ensemble = Ensemble()
        self.stop_requested = False  # a callback asked to end the run
        self.steps_per_epoch = steps_per_epoch(data, config)
        self.callbacks = RunCallbacks(callbacks, {
            "epochs": (sum(config.stage_epochs(network.num_stages)) if config.stage_overrides
                       else self.mode.total_epochs(network, config.epochs_per_stage)),
            "steps": self.steps_per_epoch,
            "verbose": verbose,
        })
        self.evaluator = Evaluator(data, self.config, self.callbacks)
        self.epoch_loop = EpochLoop(data, self.config, self.options, self.callbacks, self.evaluator, log=log,
                                    verbose=verbose, steps_per_epoch=self.steps_per_epoch)
        self.finisher = StageFinisher(network, data, self.config, self.evaluator, self.epoch_loop, self.ensemble,
                                      complete=self.complete, log=log)
        check_learning_rate_setter(self.callbacks.learning_rate_setter(), self.config, self.optimizer_factory)
        self.mode.check(self)
        for hook in self.hooks:
            hook.check(network)

    # ----------------------------------------------------------------------------- problems
    def build_head(self, j: int) -> keras.Model:
        """A fresh, seeded head for stage ``j`` (also kept in ``self.heads[j]``)."""
        with self.strategy.scope():
            head = self.head_plan.build(self.network, j)
        self.heads[j] = head
        return head

    def stage_problem(self, j: int) -> Problem:
        """Stage j with a fresh head (and its local loss's training-only layers) on top of the frozen
        stages 0..j-1."""
        head = self.build_head(j)
        epochs = self.config.stage_epochs(self.network.num_stages)  # stage_overrides may give each stage its own
        with self.strategy.scope():
            extras = self.head_plan.extras(self.network, j)
            return stage_problem(self.network, j, head, epochs[j], extras,
                                 self.head_plan.objective(self.network, j), first_epoch=sum(epochs[:j]))

    def end_to_end_problem(self) -> Problem:
        """All stages and the last head, trained together for J x epochs_per_stage epochs (with the
        earlier stages' local losses as auxiliary terms, for a local loss other than pred)."""
        head = self.build_head(self.network.num_stages - 1)
        with self.strategy.scope():
            auxiliary = self.head_plan.auxiliary(self.network)
            return end_to_end_problem(self.network, head, self.config.epochs_per_stage, auxiliary)

    def replace_head(self, j: int, head: keras.Model) -> None:
        """Makes ``head`` stage ``j``'s head (e.g. its pruned version)."""
        self.heads[j] = head

    def make_optimizer(self, problem: Problem, schedule=None) -> keras.optimizers.Optimizer:
        """A fresh optimizer for ``problem``, built for its trainable variables (under the scope)."""
        with self.strategy.scope():
            if self.optimizer_factory is not None:
                optimizer = for_precision(self.optimizer_factory(), self.config.precision)
            else:
                if schedule is None:
                    schedule = self.schedule(problem)
                optimizer = make_optimizer(self.config.for_stage(problem.stage).optim, schedule, self.config.precision)
            optimizer.build(problem.trainable.trainable_variables)
        return optimizer

    def schedule(self, problem: Problem):
        """``problem``'s learning rate or schedule (from ``config.schedule``; its stage's lr)."""
        lr = self.config.for_stage(problem.stage).optim.lr
        with self.strategy.scope():
            return make_schedule(self.config.schedule, lr, self.steps_per_epoch, problem.epochs, problem.stretch)

    # ----------------------------------------------------------------------------- running
    def run(self) -> list[dict[str, Any]]:
        """Trains every problem of the mode (then the hooks' final steps); returns the records."""
        self.runlog = RunLog(self.workdir)  # read again: the caller may have waited for the directory's lock
        if self.verbose:
            self.log(f"optimizer: {describe_optimizer(self.config, self.optimizer_factory)}")
            self.log(ONEDNN.describe())
        with dtype_policy(self.config.precision):
            self.mode.train(self)
            if not self.stop_requested:
                for hook in self.hooks:
                    hook.after_training(self)
        if self.workdir:
            export_root = os.path.join(self.workdir, "export")
            write_models_config(export_root)
            for servable in unfinished_servables(export_root):
                self.log(f"note: export/{servable} holds an export of the unfinished run (labelled 'unfinished', "
                         f"not 'stable'); python -m apps.export {self.workdir} exports the finished one")
        self.callbacks.train_end({"records": self.records})
        return self.records

    def after_stage(self, j: int) -> None:
        """Runs the hooks' post-stage steps on the just-finished stage ``j`` (layerwise mode)."""
        for hook in self.hooks:
            hook.after_stage(self, j)

    def checkpoints(self, name: str) -> ckpt.ProblemCheckpoints | None:
        """The checkpoints of problem ``name`` (``None`` without a workdir)."""
        if self.workdir is None:
            return None
        return ckpt.ProblemCheckpoints(os.path.join(self.workdir, "checkpoints"), name, warn=self.log)

    def load_or_retrain(self, name: str, checkpoints: ckpt.ProblemCheckpoints | None,
                        load: Callable[[], T]) -> T | None:
        """``load()`` when problem ``name`` finished earlier; ``None`` to train it (again)."""
        return load_or_retrain(checkpoints, name, load, self.log)

    def run_problem(self, problem: Problem) -> dict[str, Any]:
        """Trains ``problem`` (or loads it when a finished checkpoint exists); returns its record."""
        checkpoints = self.checkpoints(problem.name)
        classifier = problem.classifier(self.network.image_input())
        self.callbacks.stage_begin(problem.stage, problem.trainable, classifier)
        loaded = self.load_or_retrain(problem.name, checkpoints, lambda: self.load_finished(problem, checkpoints))
        if loaded is not None:
            return loaded
        schedule = self.schedule(problem) if self.optimizer_factory is None else None
        optimizer = self.make_optimizer(problem, schedule)
        problem.trainable.optimizer = optimizer  # what Keras callbacks read (learning rate, iterations)
        variables = problem.trainable.variables
        history = self.restore_epoch(problem.name, problem.epochs, variables, optimizer.variables, checkpoints)
        kept = KeptEpoch(self.config, schedule, checkpoints, history, problem.name, self.log)
        cache = self.prefix_cache(problem) if len(history) < problem.epochs else None
        run = self.multi_step(self.train_step(problem, optimizer, cached=cache is not None), optimizer)
        predict = make_predict_step(classifier)
        on_features = cache is not None and bool(cache.eval_splits)  # evaluations: the stage and head on the cache
        try:
            with self.evaluator.reading(cache if on_features else None):
                self.train_epochs(problem, run, make_predict_step(problem.logits_part()) if on_features else predict,
                                  history, variables, optimizer.variables, checkpoints, cache=cache,
                                  after_epoch=lambda epoch, record: kept.after_epoch(epoch, record, history, variables))
        finally:
            if cache is not None:
                cache.close()
        best_epoch = kept.restore_best(variables, history)
        restored = self.callbacks.stage_training_end(problem.stage)
        if restored is not None:  # EarlyStopping put an epoch's weights back: the stage keeps that epoch
            best_epoch = restored - problem.first_epoch
        return self.finish(problem, predict, classifier, history, checkpoints, best_epoch)

    def train_epochs(self, problem: Problem, run, predict, history: list[dict[str, Any]], model_variables: Sequence,
                     optimizer_variables: Sequence, checkpoints: ckpt.ProblemCheckpoints | None, *,
                     after_epoch: Callable[[int, dict], tuple[dict, dict]] | None = None,
                     cache: PrefixCache | None = None) -> list[dict[str, Any]]:
        """Trains ``problem``'s epochs after ``history`` with ``run`` (a ``multi_step``), each
        evaluated with ``predict`` and checkpointed (the model's and optimizer's variables, and the
        arrays and metadata ``after_epoch(epoch, record)`` adds); stops early when a callback asks.
        Returns ``history`` with the new epochs."""
        for epoch in range(len(history), problem.epochs):
            batches = self.train_batches(problem, epoch, cache)
            record = self.train_epoch(problem, run, predict, epoch, batches,
                                      list(model_variables) + list(optimizer_variables))
            stop = record.pop("stop", None)
            history.append(record)
            arrays, meta = after_epoch(epoch, record) if after_epoch is not None else ({}, {})
            if checkpoints is not None:
                arrays = {**ckpt.variables_to_arrays("model", model_variables),
                          **ckpt.optimizer_arrays(optimizer_variables), **arrays}
                checkpoints.save_epoch(epoch, arrays, {"history": history, **meta})
            if stop:
                break
        return history

    def prefix_cache(self, problem: Problem) -> PrefixCache | None:
        """The cached outputs of ``problem``'s frozen prefix, or ``None`` (not cached, or a local loss
        that reads the images, which the cache does not hold)."""
        needs_images = problem.objective is not None and problem.objective.needs_images
        return problem_cache(problem.name, problem.frozen, needs_images, self.data, self.options.cache_prefix,
                             self.options.cache_budget_mb, self.workdir, jit_compile=self.options.jit_compile,
                             batch_size=self.config.batch_size, epochs=problem.epochs,
                             log=self.log if self.verbose else None)

    def global_batch_size(self) -> int | None:
        """The loss's divisor: the configured batch size, or ``None`` (each batch's own size)
        for pipelines whose batches may differ in size."""
        return self.config.batch_size if self.data.fixed_batch_size else None

    def train_step(self, problem: Problem, optimizer, cached: bool = False):
        """The compiled step of ``problem`` (on cached features when ``cached``)."""
        weight_decay = self.config.for_stage(problem.stage).optim.weight_decay
        return make_problem_step(
            problem.trainable, optimizer, problem.objective, frozen=None if cached else problem.frozen,
            weight_decay=weight_decay, global_batch_size=self.global_batch_size(),
            strategy=self.strategy, jit_compile=self.options.jit_compile, prefix_mode=self.options.prefix_mode,
        )

    def multi_step(self, step, optimizer):
        """``step`` run several batches per device call (``layerwise.training.steps.groups``)."""
        return make_multi_step(step, optimizer, stop_on_nan=self.config.on_nan == "stop")

    def train_batches(self, problem: Problem, epoch: int, cache: PrefixCache | None = None):
        """One epoch of (distributed) training batches: images, or cached prefix features."""
        seed = derive_seed(self.config.seed, 2, problem.stage)
        if cache is not None:
            batches = cache.batches(self.data.train_order(seed, epoch), self.config.batch_size)
        else:
            batches = self.data.train_batches(self.config.batch_size, seed, epoch)
        if self.distributed:
            batches = self.strategy.experimental_distribute_dataset(batches)
        return batches

    def restore_epoch(self, name, epochs, model_variables, optimizer_variables, checkpoints) -> list[dict[str, Any]]:
        """Loads problem ``name``'s newest good epoch checkpoint; returns its metric history
        (``layerwise.training.resume.restore_epoch``)."""
        return restore_epoch(checkpoints, name, epochs, model_variables, optimizer_variables, self.runlog, self.log)

    def train_epoch(self, problem, run, predict, epoch, batches, state: Sequence) -> dict[str, Any]:
        """One epoch of ``run`` over ``batches`` and its evaluation (``layerwise.training.epoch``);
        its record, with ``"stop": True`` when a callback ended the stage or the run.

        Raises:
            NonFiniteLossError: a non-finite loss (``on_nan="stop"``) or variable.
            DatasetUnavailableError: the data became unreadable.
        """
        record, stop = self.epoch_loop.train(problem, run, predict, epoch, batches, state, self.runlog)
        if stop == "run":
            self.stop_requested = True
        if stop:
            record = {**record, "stop": True}
        return record

    def check_finite(self, name: str, epoch: int, variables: Sequence, lr: float) -> None:
        """Raises NonFiniteLossError when one of ``variables`` (problem ``name``) is not finite."""
        check_finite(self.config, name, epoch, variables, lr)

    # ----------------------------------------------------------------------------- evaluation
    def probabilities(self, predict, split: str) -> np.ndarray:
        """``predict``'s probabilities on every example of ``split``, in the split's order."""
        return self.evaluator.probabilities(predict, split)

    # ----------------------------------------------------------------------------- finishing
    def stage_record(self, problem: Problem, classifier: keras.Model, probs: np.ndarray | None) -> dict[str, Any]:
        """The fields of a finished problem's record that every mode shares; adds ``probs`` (its
        test probabilities) to the ensemble."""
        return self.finisher.stage_record(problem, classifier, probs)

    def finish(self, problem, predict, classifier, history, checkpoints, best_epoch=None) -> dict[str, Any]:
        """Evaluates a trained problem, saves its final checkpoint and completes it."""
        return self.finisher.finish(problem, predict, classifier, history, checkpoints, best_epoch)

    def load_finished(self, problem: Problem, checkpoints: ckpt.ProblemCheckpoints) -> dict[str, Any]:
        """Rebuilds a problem finished earlier from its final checkpoint and completes it."""
        return self.finisher.load_finished(problem, checkpoints)

    def complete(self, problem: Problem, classifier: keras.Model, record: dict[str, Any]) -> dict[str, Any]:
        """Freezes a finished stage, exports it (once), records it (once) and tells the callbacks."""
        if problem.name != "end_to_end":
            self.network.stages[problem.stage].trainable = False
        self.export(problem.name, classifier)
        self.add_record(record)
        self.callbacks.stage_end(problem.stage, record)
        return record

    def export(self, suffix: str, classifier: keras.Model) -> None:
        """Exports ``classifier`` as the servable ``<model>_<suffix>`` unless it has a version
        already (a resumed run does not re-export); nothing without a workdir."""
        export_once(self.workdir, self.network, self.data, suffix, classifier)

    def add_record(self, record: dict[str, Any]) -> None:
        """Appends a record to ``records`` and to ``metrics.jsonl`` (once per problem)."""
        record_once(self.workdir, self.runlog, self.records, record)
