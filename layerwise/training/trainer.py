"""The training core every mode runs on: problems, epochs, evaluation, checkpoints, records.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet", ICML 2019.
A :class:`GreedyTrainer` holds one run's state (network, data, configuration, heads, records,
the ensemble so far) and offers the steps a *mode* is made of (``layerwise.training.modes``):
build a problem, train it epoch by epoch with checkpoints, evaluate it, finish it (freeze, export,
record). Post-stage steps (pruning, head refit) are hooks (``layerwise.training.hooks``) that use
the same public methods.

Layerwise (Algorithm 1): for j = 0..J-1, freeze stages 0..j-1 (``trainable=False``, BatchNorm in
inference mode), train stage j with a fresh auxiliary head, a fresh optimizer and a freshly traced
step, evaluate its head and the 2^j-weighted ensemble of all heads so far, checkpoint and export.

Every epoch is checkpointed (crash-safe, ``layerwise.run.checkpoints``): rerunning the same
configuration on the same workdir loads finished stages and continues the unfinished one from its
last epoch, with the same numbers an uninterrupted run gives.

Example:
    >>> trainer = GreedyTrainer(network, data, config, workdir="runs/demo")
    >>> records = trainer.run()   # one dict per stage: accuracies, params, seconds
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from layerwise.nn.flops import count_flops
from layerwise.analysis.memory import largest_peak, peak_memory_mb, reset_peak_memory
from layerwise.data.base import DataSource, derive_seed
from layerwise.errors import ConfigError, DatasetUnavailableError, NonFiniteLossError
from layerwise.run import checkpoints as ckpt
from layerwise.config import RunOptions, TrainConfig
from layerwise.run.runlog import RunLog, with_keras_names
from layerwise.serving.models_config import write_models_config
from layerwise.serving.servables import export_classifier
from layerwise.serving.versions import unfinished_servables, versions
from layerwise.training.callbacks import RunCallbacks
from layerwise.training.evaluation import ten_crop_probabilities, top_k_error
from layerwise.training.hooks import StageHook, hooks_for
from layerwise.training.local_steps import make_local_train_step
from layerwise.training.loop import Totals, make_multi_step
from layerwise.training.modes import Mode, mode_for
from layerwise.nn.network import StagedNetwork
from layerwise.precision import adopt_policy, dtype_policy, settle_precision
from layerwise.training.optim import for_precision, make_optimizer, recorded_optimizer
from layerwise.training.prefix_cache import PrefixCache, check_option, choose_mode
from layerwise.training.problems import (
    Ensemble, HeadPlan, Problem, end_to_end_problem, ensemble_probabilities, load_finished, stage_problem,
)
from layerwise.training.schedules import Plateau, changes_within_a_problem, describe, make_schedule
from layerwise.training.steps import make_predict_step, make_train_step

__all__ = ["GreedyTrainer", "ensemble_probabilities", "top_k_accuracy"]

PROGRESS_STEPS = 16  # steps per device call under a live progress bar


def top_k_accuracy(probs: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose label is among the ``k`` highest probabilities."""
    top = np.argsort(-probs, axis=-1)[:, :k]
    return float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=-1)))


def top5_fields(probs: np.ndarray, ensemble: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``test_top5`` and ``ensemble_top5`` for problems with at least 100 classes (ImageNet)."""
    if probs.shape[-1] < 100:
        return {}
    return {"test_top5": top_k_accuracy(probs, labels), "ensemble_top5": top_k_accuracy(ensemble, labels)}


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, -1) == labels))


def cross_entropy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean ``-log p[label]`` (probabilities clipped at 1e-7, as Keras's losses clip them)."""
    picked = probs[np.arange(len(labels)), np.asarray(labels, np.int64)]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))


@contextlib.contextmanager
def data_errors(where: str):
    """Turns a dataset that vanished mid-run into a clear error.

    Raises:
        DatasetUnavailableError: files behind the pipeline were deleted, truncated or made
            unreadable while training; the checkpoints written so far are intact.
    """
    try:
        yield
    except (tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.PermissionDeniedError) as e:
        first_line = (e.message or str(e)).splitlines()[0]
        raise DatasetUnavailableError(
            f"the training data became unreadable during {where} ({first_line}); the checkpoints so far "
            "are intact: restore the files and rerun the same command to resume"
        ) from e


class GreedyTrainer:
    """Trains a staged network in one of the modes, with custom loops.

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
        self.options = (options or RunOptions()).validate()
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
        self.latest_test_probs: tuple[str | None, int, np.ndarray | None] = (None, -1, None)
        self.stop_requested = False  # a callback asked to end the run
        if data.crop_size != config.crop_size:
            raise ConfigError(
                f"config.crop_size is {config.crop_size} but the data gives "
                f"{data.crop_size or 'whole images'}: pass it through "
                "layerwise.data.crops.with_crops(data, config.crop_size)"
            )
        self.steps_per_epoch = data.steps_per_epoch(config.batch_size)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"batch_size {config.batch_size} is larger than the training set "
                f"({data.num_train} examples); use a smaller --batch_size"
            )
        self.callbacks = RunCallbacks(callbacks, {
            "epochs": (sum(config.stage_epochs(network.num_stages)) if config.stage_overrides
                       else self.mode.total_epochs(network, config.epochs_per_stage)),
            "steps": self.steps_per_epoch,
            "verbose": verbose,
        })
        self.check_learning_rate_callbacks()
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

    def describe_optimizer(self) -> str:
        """Every problem's optimizer and learning rate in words (the run's first line)."""
        optim = self.config.optim
        if self.optimizer_factory is not None:
            given = self.optimizer_factory()
            return (f"{type(given).__name__}, the one passed to fit or compiled into the split model (a fresh copy "
                    "per problem, with its own learning rate), "
                    f"weight_decay {optim.weight_decay:g}")
        nesterov = ", Nesterov" if optim.nesterov else ""
        momentum = f" (momentum {optim.momentum:g}{nesterov})" if optim.name == "sgd" else ""
        return (f"{optim.name}{momentum}, {describe(self.config.schedule, optim.lr)}, "
                f"weight_decay {optim.weight_decay:g}{self.config.describe_stage_overrides()}")

    def check_learning_rate_callbacks(self) -> None:
        """Refuses a callback that sets the learning rate (``ReduceLROnPlateau``,
        ``LearningRateScheduler``) where a schedule moves it already: Keras cannot set the
        learning rate of an optimizer built on a ``LearningRateSchedule``.

        Raises:
            ConfigError: which callback, which schedule, and how to get a constant learning rate.
        """
        setter = self.callbacks.learning_rate_setter()
        if setter is None:
            return
        if self.optimizer_factory is not None:
            learning_rate = keras.optimizers.serialize(self.optimizer_factory())["config"].get("learning_rate")
            if isinstance(learning_rate, dict):
                raise ConfigError(
                    f"{type(setter).__name__} sets the optimizer's learning rate, which its "
                    f"{learning_rate.get('class_name')} moves already: give the optimizer a float learning_rate"
                )
        elif changes_within_a_problem(self.config.schedule):
            raise ConfigError(
                f"{type(setter).__name__} sets the optimizer's learning rate, which the schedule moves already "
                f"({describe(self.config.schedule, self.config.optim.lr)}): pass lr_schedule='step' with "
                "lr_decay_every=0 for a constant learning rate the callback can set"
            )

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
            self.log(f"optimizer: {self.describe_optimizer()}")
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

    def run_problem(self, problem: Problem) -> dict[str, Any]:
        """Trains ``problem`` (or loads it when a finished checkpoint exists); returns its record."""
        checkpoints = self.checkpoints(problem.name)
        classifier = problem.classifier(self.network.image_input())
        self.callbacks.stage_begin(problem.stage, problem.trainable, classifier)
        if checkpoints is not None and checkpoints.has_final():
            try:
                return self._load_finished(problem, checkpoints)
            except ckpt.CorruptCheckpointError as e:
                checkpoints.quarantine_final()
                self.log(f"warning: {e}; retraining {problem.name} (the bad file is kept as final.npz.corrupt)")
        schedule = self.schedule(problem) if self.optimizer_factory is None else None
        optimizer = self.make_optimizer(problem, schedule)
        problem.trainable.optimizer = optimizer  # what Keras callbacks read (learning rate, iterations)
        history = self.restore_epoch(
            problem.name, problem.epochs, problem.trainable.variables, optimizer.variables, checkpoints
        )
        best = self._best_so_far(checkpoints, history)
        plateau = self._plateau_so_far(schedule, checkpoints, history)
        cache = self.prefix_cache(problem) if len(history) < problem.epochs else None
        run = self.multi_step(self.train_step(problem, optimizer, cached=cache is not None), optimizer)
        predict = make_predict_step(classifier)
        try:
            for epoch in range(len(history), problem.epochs):
                batches = self.train_batches(problem, epoch, cache)
                record = self.train_epoch(problem, run, predict, epoch, batches,
                                          problem.trainable.variables + optimizer.variables)
                history.append(record)
                if self.config.keep_best and (
                        not best or record["val_accuracy"] > history[best["epoch"]]["val_accuracy"]):
                    best = {"epoch": epoch, **ckpt.variables_to_arrays("best", problem.trainable.variables)}
                if plateau is not None and plateau.update(record["val_accuracy"]):
                    schedule.set_scale(plateau.scale)
                    self.log(f"{problem.name}: validation accuracy has not improved for {plateau.patience} "
                             f"epoch(s); lr x{self.config.schedule.decay_factor:g} (scale now {plateau.scale:g})")
                if checkpoints is not None:
                    arrays = {
                        **ckpt.variables_to_arrays("model", problem.trainable.variables),
                        **ckpt.optimizer_arrays(optimizer.variables),
                        **{k: v for k, v in best.items() if k != "epoch"},
                    }
                    meta = {"history": history, "best_epoch": best.get("epoch")}
                    if plateau is not None:
                        meta["plateau"] = plateau.state()
                    checkpoints.save_epoch(epoch, arrays, meta)
                if record.pop("stop", None):
                    break
        finally:
            if cache is not None:
                cache.close()
        if best:  # Prop. 3.1: keep the best point of the trajectory (chosen on validation data)
            ckpt.assign_arrays("best", problem.trainable.variables, best, f"best epoch of {problem.name}")
            kept = history[best["epoch"]]["val_accuracy"]
            self.log(f"{problem.name}: keeping epoch {best['epoch'] + 1} (val acc {kept:.2%})")
        restored = self.callbacks.stage_training_end(problem.stage)
        if restored is not None:  # EarlyStopping put an epoch's weights back: the stage keeps that epoch
            best = {"epoch": restored - problem.first_epoch}
        return self._finish(problem, predict, classifier, history, checkpoints, best.get("epoch"))

    def _best_so_far(self, checkpoints, history) -> dict[str, Any]:
        """The best-validation weights saved with the newest epoch checkpoint (keep_best)."""
        if not self.config.keep_best or not history or checkpoints is None:
            return {}
        restored = checkpoints.latest_epoch()
        if restored is None:
            return {}
        arrays, meta = restored
        if meta.get("best_epoch") is None:
            return {}
        return {"epoch": meta["best_epoch"], **{k: v for k, v in arrays.items() if k.startswith("best/")}}

    def _plateau_so_far(self, schedule, checkpoints, history) -> Plateau | None:
        """The reduce-on-plateau controller (``lr_schedule=plateau``), as the newest epoch
        checkpoint left it, with ``schedule``'s scale set to match; ``None`` for other schedules."""
        if self.config.schedule.kind != "plateau" or schedule is None:
            return None
        state = None
        if history and checkpoints is not None:
            restored = checkpoints.latest_epoch()
            state = restored[1].get("plateau") if restored is not None else None
        plateau = Plateau.from_config(self.config.schedule, state)
        schedule.set_scale(plateau.scale)
        return plateau

    def prefix_cache(self, problem: Problem) -> PrefixCache | None:
        """The cached outputs of ``problem``'s frozen prefix, or ``None`` (not cached, or a local loss
        that reads the images, which the cache does not hold)."""
        if problem.objective is not None and problem.objective.needs_images:
            return None
        mode = choose_mode(self.options.cache_prefix, self.data, problem.frozen, self.options.cache_budget_mb)
        if mode == "off":
            return None
        directory = os.path.join(self.workdir, "cache", problem.name) if self.workdir else None
        start = time.perf_counter()
        cache = PrefixCache(problem.frozen, self.data, mode, directory, jit_compile=self.options.jit_compile)
        if self.verbose:
            self.log(f"{problem.name}: cached the frozen prefix ({mode}, {cache.nbytes / 2**20:.0f} MiB, "
                     f"{time.perf_counter() - start:.1f} s)")
        return cache

    def global_batch_size(self) -> int | None:
        """The loss's divisor: the configured batch size, or ``None`` (each batch's own size)
        for pipelines whose batches may differ in size."""
        return self.config.batch_size if self.data.fixed_batch_size else None

    def train_step(self, problem: Problem, optimizer, cached: bool = False):
        """The compiled step of ``problem`` (on cached features when ``cached``)."""
        weight_decay = self.config.for_stage(problem.stage).optim.weight_decay
        if problem.objective is not None:
            return make_local_train_step(
                problem.trainable, optimizer, problem.objective, frozen=None if cached else problem.frozen,
                weight_decay=weight_decay, global_batch_size=self.global_batch_size(),
                strategy=self.strategy, jit_compile=self.options.jit_compile, prefix_mode=self.options.prefix_mode,
            )
        return make_train_step(
            problem.trainable,
            optimizer,
            frozen=None if cached else problem.frozen,
            weight_decay=weight_decay,
            global_batch_size=self.global_batch_size(),
            strategy=self.strategy,
            jit_compile=self.options.jit_compile,
            prefix_mode=self.options.prefix_mode,
        )

    def multi_step(self, step, optimizer):
        """``step`` run several batches per device call (``layerwise.training.loop``)."""
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
        """Loads problem ``name``'s newest good epoch checkpoint; returns its metric history.

        Also drops the ``metrics.jsonl`` records of epochs after that checkpoint (an interrupted
        epoch is retrained, and logged again).
        """
        if checkpoints is not None:
            ckpt.variable_keys(model_variables)  # paths must be unique: refused before anything trains
        restored = checkpoints.latest_epoch() if checkpoints is not None else None
        if restored is None:
            self.runlog.keep_only(lambda r: r.get("problem") != name)
            return []
        arrays, meta = restored
        source = f"checkpoint of {name} epoch {meta['epoch']}"
        ckpt.assign_arrays("model", model_variables, arrays, source)
        ckpt.assign_optimizer_arrays(optimizer_variables, arrays, source)
        history = [with_keras_names(r) for r in meta["history"]]
        self.runlog.keep_only(
            lambda r: r.get("problem") != name or (r["event"] == "epoch" and r["epoch"] < len(history))
        )
        self.log(f"{name}: resuming after epoch {len(history)} of {epochs}")
        return history

    def train_epoch(self, problem, run, predict, epoch, batches, state: Sequence) -> dict[str, Any]:
        """One epoch of ``run`` (a ``layerwise.training.loop.make_multi_step`` of the problem's
        step) over ``batches``, then evaluation; returns (and logs) its record.

        The device runs a group of steps per call and Python reads the totals once per group:
        the whole epoch in one call, or groups of :data:`PROGRESS_STEPS` for a live progress bar,
        or one step at a time when a callback has batch hooks, or ``options.steps_per_execution``
        steps when set (Keras's ``steps_per_execution``: the batch hooks run once per call).
        ``state``: the variables the epoch trains (the problem's and its optimizer's); they must all be finite after the epoch
        (:meth:`check_finite`), else nothing of it is recorded. The record has ``"stop": True``
        when a callback ended the stage or the run.

        Raises:
            NonFiniteLossError: a non-finite loss with ``on_nan="stop"`` (the batch's update
                was skipped; the last epoch checkpoint is the last good state), every batch
                non-finite, or a non-finite variable.
            DatasetUnavailableError: the data became unreadable.
        """
        start = time.perf_counter()
        run_epoch = problem.first_epoch + epoch
        stop = self.callbacks.epoch_begin(run_epoch, {"stage": problem.stage, "stage_epoch": epoch})
        # A live bar only on a terminal: in logs and CI the per-epoch summary line is enough.
        live = self.verbose == 1 and sys.stdout.isatty()
        bar = keras.utils.Progbar(self.steps_per_epoch, stateful_metrics=["loss", "acc"]) if live else None
        group = (self.options.steps_per_execution
                 or (1 if self.callbacks.batch_hooks else PROGRESS_STEPS if live else self.steps_per_epoch))
        loss_sum = correct = seen = 0.0
        steps = skipped = 0
        lr = float("nan")
        reset_peak_memory()
        iterator = iter(batches)
        where = f"{problem.name} epoch {epoch + 1}"
        while True:
            stop = self.callbacks.batch_begin(steps) or stop
            with data_errors(where):
                totals = Totals(*(value.numpy() for value in run(iterator, tf.constant(group))))
            if totals.steps:
                lr = float(totals.lr)
            if totals.first_bad >= 0 and self.config.on_nan == "stop":
                raise NonFiniteLossError(
                    f"{where} batch {steps + totals.first_bad + 1}: the loss became {float(totals.bad_loss)}; "
                    f"{self.retry_advice(lr)}"
                )
            loss_sum += float(totals.loss_sum)
            correct += float(totals.correct)
            seen += float(totals.count)
            steps += int(totals.steps)
            skipped += int(totals.skipped)
            if bar is not None and seen:
                bar.update(steps, [("loss", loss_sum / (steps - skipped)), ("acc", correct / seen)])
            if totals.steps:  # the running means, as Keras's metrics give them; NaN after a skipped batch
                finite = not totals.skipped and steps > skipped
                logs = {"loss": loss_sum / (steps - skipped) if finite else float("nan"),
                        "accuracy": correct / seen if seen else float("nan")}
                stop = self.callbacks.batch_end(steps - 1, logs) or stop
                if stop:
                    break
            if totals.exhausted or totals.steps < group or steps == self.steps_per_epoch:
                break
        if seen == 0:
            raise NonFiniteLossError(
                f"{where}: every batch had a non-finite loss; {self.retry_advice(lr)}"
            )
        self.check_finite(problem.name, epoch, state, lr)
        train_seconds = time.perf_counter() - start  # the steps alone, before the evaluation
        train_peak = peak_memory_mb()  # the training steps' peak, before evaluation's batches
        test_probs = self.probabilities(predict, "test") if self.data.num_test else None
        test_accuracy = None if test_probs is None else accuracy(test_probs, self.data.labels("test"))
        self.latest_test_probs = (problem.name, epoch, test_probs)  # the stage's final evaluation reuses them
        val_probs = self.validation_probabilities(predict) if self.data.num_val else None
        record = {
            "event": "epoch",
            "problem": problem.name,
            "stage": problem.stage,
            "epoch": epoch,
            "loss": loss_sum / (steps - skipped),
            "accuracy": correct / seen,
            "test_accuracy": test_accuracy,
            "val_accuracy": None if val_probs is None else accuracy(val_probs, self.data.labels("val")),
            "lr": lr,
            "skipped_batches": int(skipped),
            "seconds": time.perf_counter() - start,
            "train_seconds": train_seconds,
            "peak_memory_mb": train_peak,
        }
        if val_probs is not None:
            record["val_loss"] = cross_entropy(val_probs, self.data.labels("val"))
        if self.verbose:
            shown = "".join(f", {name} acc {record[key]:.2%}"
                            for name, key in (("val", "val_accuracy"), ("test", "test_accuracy"))
                            if record[key] is not None)
            self.log(
                f"{problem.name} epoch {epoch + 1}/{problem.epochs}: loss {record['loss']:.4f}, "
                f"train acc {record['accuracy']:.2%}{shown}, lr {lr:.3g} ({record['seconds']:.1f} s)"
            )
        self.runlog.write(record)
        self.runlog.scalars(run_epoch, problem.name,
                            {k: record[k] for k in ("loss", "accuracy", "test_accuracy", "lr")})
        stop = self.callbacks.epoch_end(run_epoch, epoch_logs(record)) or stop
        if stop == "run":
            self.stop_requested = True
        if stop:
            record = {**record, "stop": True}
        return record

    def retry_advice(self, lr: float) -> str:
        """What to do after a non-finite loss or state: the part of the message after the facts."""
        skip = ", or with --on_nan=skip to skip batches whose loss is not finite" if self.config.on_nan == "stop" else ""
        decay = self.config.optim.weight_decay
        decay = f" or a smaller --weight_decay (now {decay:g})" if decay >= 1e-2 else ""  # a large L2 term diverges too
        return (
            "the last good checkpoint is kept and nothing after it is saved. A run's configuration is fixed (a "
            "rerun with another --lr on this --workdir is refused as a different configuration): start a new run "
            f"in a new --workdir with a lower --lr (now {lr:g}){decay}{skip}"
        )

    def check_finite(self, name: str, epoch: int, variables: Sequence, lr: float) -> None:
        """Refuses a state with a NaN or infinite variable (weights, BatchNorm moving statistics,
        optimizer slots) of problem ``name`` after ``epoch``: it is never checkpointed, finalised
        or exported. ``--on_nan=skip`` skips batches whose *loss* is not finite, but weights can
        still overflow (a huge learning rate gives finite losses and infinite kernels).

        Raises:
            NonFiniteLossError: with the variables and what to do.
        """
        bad = [v.path for v in variables if not np.all(np.isfinite(np.asarray(v.numpy())))]
        if bad:
            shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise NonFiniteLossError(
                f"{name} epoch {epoch + 1}: {len(bad)} variable(s) became NaN or infinite ({shown}); "
                f"{self.retry_advice(lr)}"
            )

    # ----------------------------------------------------------------------------- evaluation
    def probabilities(self, predict, split: str) -> np.ndarray:
        """``predict``'s probabilities on every example of ``split``, in the split's order."""
        batches = self.data.eval_batches(split, max(self.config.batch_size, 256))
        return np.concatenate([predict(x).numpy() for x, _ in batches])

    def validation_probabilities(self, predict) -> np.ndarray:
        """``predict``'s probabilities on the validation split, calling the callbacks' test hooks
        (``on_test_begin``, ``on_test_batch_begin`` / ``_end`` with the running ``loss`` and
        ``accuracy``, ``on_test_end``) as ``keras.Model.fit``'s validation pass does."""
        labels = self.data.labels("val")
        parts: list[np.ndarray] = []
        seen, loss_sum, correct = 0, 0.0, 0.0
        self.callbacks.test_begin()
        for batch, (x, _) in enumerate(self.data.eval_batches("val", max(self.config.batch_size, 256))):
            self.callbacks.test_batch_begin(batch)
            probs = predict(x).numpy()
            batch_labels = labels[seen:seen + len(probs)]
            seen += len(probs)
            loss_sum += cross_entropy(probs, batch_labels) * len(probs)
            correct += accuracy(probs, batch_labels) * len(probs)
            parts.append(probs)
            self.callbacks.test_batch_end(batch, {"loss": loss_sum / seen, "accuracy": correct / seen})
        self.callbacks.test_end({"loss": loss_sum / seen, "accuracy": correct / seen} if seen else {})
        return np.concatenate(parts)

    def accuracy(self, predict, split: str) -> float:
        return accuracy(self.probabilities(predict, split), self.data.labels(split))

    def test_evaluation(self, predict) -> tuple[np.ndarray, dict[str, Any]]:
        """A finished problem's test probabilities, and the record fields of ``eval_crops``.

        ``eval_crops=1``: one pass over the test images (their centre crop with ``crop_size``).
        ``eval_crops=10``: the softmax averaged over the ten crops of each whole test image
        (Krizhevsky et al. 2012, Sec. 4.1), with its top-1 and top-5 error
        (``layerwise.training.evaluation``) and the centre-crop accuracy for comparison.
        """
        probs = self.probabilities(predict, "test")
        if self.config.eval_crops != 10:
            return probs, {}
        labels = self.data.labels("test")
        size = (self.config.crop_size, self.config.crop_size)
        batch = max(self.config.batch_size, 256) // 10 or 1
        relaxed = tf.function(predict.python_function, reduce_retracing=True)  # 10 x batch crops
        ten = np.concatenate([
            ten_crop_probabilities(relaxed, x.numpy(), size, batch_size=batch, from_logits=False)
            for x, _ in self.data.full_eval_batches("test", batch)
        ])
        return ten, {
            "eval_crops": 10,
            "centre_crop_accuracy": accuracy(probs, labels),
            "test_top1_error": top_k_error(ten, labels, 1),
            "test_top5_error": top_k_error(ten, labels, min(5, ten.shape[-1])),
        }

    def stage_record(self, problem: Problem, classifier: keras.Model, probs: np.ndarray | None) -> dict[str, Any]:
        """The fields of a finished problem's record that every mode shares; adds ``probs`` (its
        test probabilities) to the ensemble."""
        record = {
            "event": "stage",
            "problem": problem.name,
            "stage": problem.stage,
            "params": int(classifier.count_params()),
            "trainable_params": int(problem.trainable.count_params()),
            "test_accuracy": None,
            "ensemble_accuracy": None,
        }
        if probs is not None:
            self.ensemble.add(probs)
            labels = self.data.labels("test")
            ensemble = self.ensemble.probabilities()
            record.update(test_accuracy=accuracy(probs, labels), ensemble_accuracy=accuracy(ensemble, labels),
                          **top5_fields(probs, ensemble, labels))
        return record

    def _finish(self, problem, predict, classifier, history, checkpoints, best_epoch=None) -> dict[str, Any]:
        self.check_finite(problem.name, len(history) - 1, problem.trainable.variables, history[-1]["lr"])
        last = len(history) - 1
        if (self.latest_test_probs[:2] == (problem.name, last) and best_epoch in (None, last)
                and self.config.eval_crops != 10):
            probs, crops = self.latest_test_probs[2], {}  # the weights the last epoch evaluated: no second pass
        else:
            probs, crops = self.test_evaluation(predict) if self.data.num_test else (None, {})
        kept = history[-1] if best_epoch is None else history[best_epoch]
        record = {
            **self.stage_record(problem, classifier, probs),
            "accuracy": kept["accuracy"],
            "val_accuracy": kept.get("val_accuracy"),
            **crops,
            "kept_epoch": best_epoch,
            "flops": count_flops(classifier),
            "epochs": len(history),
            "stopped_early": len(history) < problem.epochs,  # a callback's stop_training: final, said so
            "seconds": float(sum(r["seconds"] for r in history)),
            "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in history)),
            "epoch_seconds": float(np.mean([r["seconds"] for r in history])),
            "peak_memory_mb": largest_peak(r.get("peak_memory_mb") for r in history),
        }
        if checkpoints is not None:
            arrays = ckpt.variables_to_arrays("model", problem.trainable.variables)
            if probs is not None:
                arrays["test_probs"] = probs
            checkpoints.save_final(arrays, {"record": record})
            checkpoints.clear_epochs()
        return self.complete(problem, classifier, record)

    def _load_finished(self, problem, checkpoints) -> dict[str, Any]:
        arrays, meta = load_finished(problem, checkpoints, self.network.image_input())
        if "test_probs" in arrays:
            self.ensemble.add(arrays["test_probs"])
        self.log(f"{problem.name}: finished earlier, loaded from {checkpoints.final_path}")
        return self.complete(problem, problem.classifier(self.network.image_input()), with_keras_names(meta["record"]))

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
        if self.workdir is None:
            return
        servable = os.path.join(self.workdir, "export", f"{self.network.name}_{suffix}")
        if not versions(servable):
            export_classifier(classifier, servable, self.data.mean, self.data.std,
                              uint8=self.data.uint8_pixels)

    def add_record(self, record: dict[str, Any]) -> None:
        """Appends a record to ``records`` and to ``metrics.jsonl`` (once per problem)."""
        if self.workdir is not None:
            if not any(r.get("event") == record["event"] and r.get("problem") == record["problem"]
                       for r in self.runlog.records):
                self.runlog.write(record)
        else:
            self.runlog.records.append(record)
        self.records.append(record)


def epoch_logs(record: dict[str, Any]) -> dict[str, Any]:
    """A Keras callback's ``logs`` for an epoch record (Keras's metric names)."""
    logs = {"loss": record["loss"], "accuracy": record["accuracy"], "lr": record["lr"],
            "stage": record["stage"], "stage_epoch": record["epoch"]}
    if record.get("val_accuracy") is not None:
        logs.update(val_loss=record["val_loss"], val_accuracy=record["val_accuracy"])
    if record.get("test_accuracy") is not None:
        logs["test_accuracy"] = record["test_accuracy"]
    return logs
