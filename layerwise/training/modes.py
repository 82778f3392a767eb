"""Training modes: layerwise (Algorithm 1), end to end, and decoupled, on one small interface.

A :class:`Mode` (an abstract base class, https://docs.python.org/3/library/abc.html) says how many
epochs a run has, checks that its heads fit before anything trains, trains a network through a
:class:`~layerwise.training.session.TrainingSession` (``train``: the public members of
:class:`~layerwise.training.trainer.GreedyTrainer`, never its internals), and rebuilds a finished
run from its checkpoints without training (``restore``). A new mode subclasses :class:`Mode` and
is added to :data:`MODES`.

- :class:`Layerwise`: Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to
  ImageNet", ICML 2019, Algorithm 1: stage j trains with a fresh auxiliary head while stages
  0..j-1 are frozen; post-stage hooks (pruning) run after each stage.
- :class:`EndToEnd`: every stage and the last head together, for J x epochs_per_stage epochs
  (the baseline the paper compares with).
- :class:`Decoupled`: Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs",
  ICML 2020: every stage takes a step on every batch, on the ``tf.stop_gradient`` output of the
  stage before, with its own head and optimizer: one pass trains all J stages. Its checkpoints
  are one problem, ``decoupled``, holding every stage, head and optimizer.

Example:
    >>> mode_for("decoupled").total_epochs(network, epochs_per_stage=4)
    4
"""

from __future__ import annotations

import abc
import dataclasses
import os
from typing import Any, Sequence

import keras

from layerwise.analysis.memory import largest_peak
from layerwise.errors import UnknownNameError
from layerwise.run import checkpoints as ckpt
from layerwise.run.runlog import with_keras_names
from layerwise.training.hooks import StageHook
from layerwise.nn.network import StagedNetwork
from layerwise.training.problems import (
    DECOUPLED, END_TO_END, HeadPlan, Problem, decoupled_models, end_to_end_problem, load_finished, stage_name,
    stage_problem,
)
from layerwise.training.replay import check_async, make_async_decoupled_step, make_replay_buffers
from layerwise.training.session import TrainingSession
from layerwise.training.steps import make_decoupled_step, make_local_decoupled_step, make_predict_step


@dataclasses.dataclass
class FinishedProblem:
    """A trained problem rebuilt from its checkpoints: its head, classifier and record."""

    name: str
    stage: int
    head: keras.Model
    classifier: keras.Model  # images -> logits
    record: dict[str, Any]


class Mode(abc.ABC):
    """How a staged network is trained; implementations drive a :class:`TrainingSession` (a
    ``GreedyTrainer``) through its public members only.

    Attributes:
        name: the ``--mode`` name.
        stage_heads: every stage has its own trained head (its ensemble and cascade exist).
    """

    name: str = ""
    stage_heads: bool = True

    def total_epochs(self, network: StagedNetwork, epochs_per_stage: int) -> int:
        """Epochs of the whole run (what callbacks see as ``params["epochs"]``)."""
        return network.num_stages * epochs_per_stage

    def trained_stages(self, network: StagedNetwork) -> Sequence[int]:
        """The stages that get a head of their own."""
        return range(network.num_stages)

    def check(self, trainer: TrainingSession) -> None:
        """Raises ConfigError when a head this run builds does not fit its stage's features, or the
        per-stage hyperparameters do not give one object per stage."""
        trainer.config.check_stage_count(trainer.network.num_stages)
        trainer.head_plan.check(trainer.network, self.trained_stages(trainer.network))

    @abc.abstractmethod
    def train(self, trainer: TrainingSession) -> None:
        """Trains every problem of the mode through ``trainer``, completing each (``complete``)."""

    @abc.abstractmethod
    def restore(self, network: StagedNetwork, heads: HeadPlan, root: str, epochs_per_stage: int,
                hooks: Sequence[StageHook] = ()) -> list[FinishedProblem]:
        """Every finished problem under ``root`` (``workdir/checkpoints``), rebuilt on ``network``
        with its trained weights, in training order; stops at the first unfinished one.

        Raises:
            CheckpointError: a checkpoint of another architecture.
        """


def _load(problem: Problem, checkpoints: ckpt.ProblemCheckpoints, image_input: keras.KerasTensor) -> dict[str, Any]:
    _, meta = load_finished(problem, checkpoints, image_input)
    if "record" in meta:  # a run written before records used Keras's metric names
        meta["record"] = with_keras_names(meta["record"])
    return meta


class Layerwise(Mode):
    name = "layerwise"

    def train(self, trainer: TrainingSession) -> None:
        for j in range(trainer.network.num_stages):
            if trainer.stop_requested:
                break
            trainer.run_problem(trainer.stage_problem(j))
            trainer.after_stage(j)

    def restore(self, network, heads, root, epochs_per_stage, hooks=()):
        finished = []
        built = {}
        for j in range(network.num_stages):
            checkpoints = ckpt.ProblemCheckpoints(root, stage_name(j))
            if not checkpoints.has_final():
                break
            built[j] = heads.build(network, j)
            problem = stage_problem(network, j, built[j], epochs_per_stage, heads.extras(network, j),
                                    heads.objective(network, j))
            meta = _load(problem, checkpoints, network.image_input())
            network.stages[j].trainable = False
            classifier = problem.classifier(network.image_input())
            if any([hook.restore_stage(network, built, j, checkpoints.directory) for hook in hooks]):
                classifier = network.compose(upto=j + 1, head=built[j])
            finished.append(FinishedProblem(problem.name, j, built[j], classifier, meta.get("record", {})))
        return finished


class EndToEnd(Mode):
    name = "end_to_end"
    stage_heads = False

    def trained_stages(self, network):
        return [network.num_stages - 1]

    def train(self, trainer: TrainingSession) -> None:
        trainer.run_problem(trainer.end_to_end_problem())

    def restore(self, network, heads, root, epochs_per_stage, hooks=()):
        checkpoints = ckpt.ProblemCheckpoints(root, END_TO_END)
        if not checkpoints.has_final():
            return []
        head = heads.build(network, network.num_stages - 1)
        problem = end_to_end_problem(network, head, epochs_per_stage, heads.auxiliary(network))
        meta = _load(problem, checkpoints, network.image_input())
        return [FinishedProblem(END_TO_END, problem.stage, head, problem.classifier(network.image_input()),
                                meta.get("record", {}))]


def _decoupled_classifier(network: StagedNetwork, problem: Problem) -> keras.Model:
    """Image -> logits of stage ``problem.stage``'s head (drops the stage-output branch)."""
    images = network.image_input()
    x = images if problem.frozen is None else problem.frozen(images)
    return keras.Model(images, problem.trainable(x)[1], name=f"{problem.name}_classifier")


@dataclasses.dataclass
class DecoupledRun:
    """The models of a decoupled run: every stage with its head, trained in one pass."""

    heads: list[keras.Model]
    objectives: list  # each stage's local loss (None: cross-entropy)
    models: list[keras.Model]  # stage j + head j, on stage j - 1's stopped-gradient output
    problems: list[Problem]  # one per stage, for its record
    run: Problem  # the one problem the epochs train (the last stage's, holding every stage)
    classifiers: list[keras.Model]

    @property
    def variables(self) -> list:
        return [v for m in self.models for v in m.variables]


def decoupled_run(trainer: TrainingSession) -> DecoupledRun:
    """Builds every stage's head and model for a decoupled run of ``trainer``'s network."""
    network, epochs = trainer.network, trainer.config.epochs_per_stage
    heads = [trainer.build_head(j) for j in range(network.num_stages)]
    objectives = [trainer.head_plan.objective(network, j) for j in range(network.num_stages)]
    with trainer.strategy.scope():
        extras = [trainer.head_plan.extras(network, j) for j in range(network.num_stages)]
        models = decoupled_models(network, heads, extras, objectives)
    problems = [Problem(stage_name(j), j, m, network.prefix(j), epochs) for j, m in enumerate(models)]
    classifiers = [_decoupled_classifier(network, p) if objective is None
                   else network.compose(upto=p.stage + 1, head=heads[p.stage])
                   for p, objective in zip(problems, objectives)]
    run = Problem(DECOUPLED, network.num_stages - 1, models[-1], None, epochs)
    return DecoupledRun(heads, objectives, models, problems, run, classifiers)


def decoupled_step(trainer: TrainingSession, built: DecoupledRun, optimizers: list, buffers: list):
    """The compiled step that trains every stage on a batch, and the step's own training state
    (the asynchronous step's counters, checkpointed with the optimizers)."""
    common = dict(weight_decay=trainer.config.optim.weight_decay, global_batch_size=trainer.global_batch_size(),
                  strategy=trainer.strategy, jit_compile=trainer.options.jit_compile)
    local, network = trainer.config.local, trainer.network
    if local.replay_buffer:  # asynchronous: the buffers are training state, checkpointed with the epochs
        return make_async_decoupled_step(
            built.models, optimizers, built.objectives, stage_outputs=[stage.output for stage in network.stages],
            buffers=buffers, buffer_size=local.replay_buffer,
            ratios=check_async(network.num_stages, local.step_ratios, trainer.strategy.num_replicas_in_sync,
                               trainer.data.fixed_batch_size),
            seed=trainer.config.seed, batch_size=trainer.config.batch_size, image_shape=network.input_shape,
            policy=local.replay_policy, schedule=local.replay_schedule, **common)
    if any(objective is not None for objective in built.objectives):
        return make_local_decoupled_step(built.models, optimizers, built.objectives, **common), []
    return make_decoupled_step(built.models, optimizers, **common), []


def load_decoupled(trainer: TrainingSession, built: DecoupledRun, checkpoints: ckpt.ProblemCheckpoints,
                   loaded: tuple) -> None:
    """Completes every stage of a decoupled run finished earlier (``loaded``: its final checkpoint)."""
    arrays, meta = loaded
    ckpt.assign_arrays("model", built.variables, arrays, checkpoints.final_path)
    trainer.log(f"decoupled: finished earlier, loaded from {checkpoints.final_path}")
    for problem, classifier, record in zip(built.problems, built.classifiers, map(with_keras_names, meta["records"])):
        key = f"test_probs_{problem.stage}"
        if key in arrays:
            trainer.ensemble.add(arrays[key])
        trainer.complete(problem, classifier, record)


def finish_decoupled(trainer: TrainingSession, built: DecoupledRun, history: list, predicts: list, buffers: list,
                     checkpoints: ckpt.ProblemCheckpoints | None) -> None:
    """Evaluates every stage of a trained decoupled run, saves the final checkpoint, completes them."""
    last = built.run.stage
    seconds = float(sum(r["seconds"] for r in history))
    records, final = [], ckpt.variables_to_arrays("model", built.variables)
    for problem, classifier, predict in zip(built.problems, built.classifiers, predicts):
        probs = trainer.probabilities(predict, "test") if trainer.data.num_test else None
        if probs is not None:
            final[f"test_probs_{problem.stage}"] = probs
        records.append({
            **trainer.stage_record(problem, classifier, probs),
            "accuracy": history[-1]["accuracy"] if problem.stage == last else None,
            "epochs": len(history),
            "seconds": seconds,  # the one pass that trained every stage
            "peak_memory_mb": largest_peak(r.get("peak_memory_mb") for r in history),  # all stages'
            # what this stage read from the buffer before it (asynchronous runs)
            **(buffers[problem.stage - 1].statistics() if buffers and problem.stage else {}),
        })
    if checkpoints is not None:
        checkpoints.save_final(final, {"records": records})
        checkpoints.clear_epochs()
    for problem, classifier, record in zip(built.problems, built.classifiers, records):
        trainer.complete(problem, classifier, record)


class Decoupled(Mode):
    """Synchronous (``replay_buffer`` 0) or asynchronous (``layerwise.training.replay``) DGL."""

    name = "decoupled"

    def total_epochs(self, network, epochs_per_stage):
        return epochs_per_stage

    def check(self, trainer: TrainingSession) -> None:
        super().check(trainer)
        local = trainer.config.local
        if local.replay_buffer:
            check_async(trainer.network.num_stages, local.step_ratios, trainer.strategy.num_replicas_in_sync,
                        trainer.data.fixed_batch_size)

    def train(self, trainer: TrainingSession) -> None:
        """One problem, ``decoupled``, holding every stage: loaded when finished earlier, else
        trained epoch by epoch through the trainer's shared epoch loop and checkpoints."""
        built = decoupled_run(trainer)
        network, local, run = trainer.network, trainer.config.local, built.run
        checkpoints = trainer.checkpoints(DECOUPLED)
        trainer.callbacks.stage_begin(run.stage, built.models[-1])
        loaded = trainer.load_or_retrain(DECOUPLED, checkpoints, lambda: checkpoints.load_final())
        if loaded is not None:
            load_decoupled(trainer, built, checkpoints, loaded)
            return
        optimizers = [trainer.make_optimizer(p) for p in built.problems]
        built.models[-1].optimizer = optimizers[-1]
        optimizer_variables = [v for o in optimizers for v in o.variables]
        buffers = []
        if local.replay_buffer:
            buffers = make_replay_buffers(built.objectives, [stage.output for stage in network.stages],
                                          local.replay_buffer, trainer.config.batch_size, network.input_shape,
                                          local.replay_policy, trainer.strategy)
        step, state = decoupled_step(trainer, built, optimizers, buffers)
        optimizer_variables += state
        history = trainer.restore_epoch(run.name, run.epochs, built.variables, optimizer_variables, checkpoints)
        predicts = [make_predict_step(c) for c in built.classifiers]
        trainer.train_epochs(run, trainer.multi_step(step, optimizers[-1]), predicts[-1], history, built.variables,
                             optimizer_variables, checkpoints)
        trainer.callbacks.stage_training_end(run.stage)
        finish_decoupled(trainer, built, history, predicts, buffers, checkpoints)

    def restore(self, network, heads, root, epochs_per_stage, hooks=()):
        checkpoints = ckpt.ProblemCheckpoints(root, DECOUPLED)
        if not checkpoints.has_final():
            return []
        built = [heads.build(network, j) for j in range(network.num_stages)]
        models = decoupled_models(network, built, [heads.extras(network, j) for j in range(network.num_stages)],
                                  [heads.objective(network, j) for j in range(network.num_stages)])
        arrays, meta = checkpoints.load_final()
        ckpt.assign_arrays("model", [v for m in models for v in m.variables], arrays, checkpoints.final_path)
        network.freeze_below(network.num_stages)
        return [
            FinishedProblem(stage_name(j), j, built[j], network.compose(upto=j + 1, head=built[j]), record)
            for j, record in enumerate(map(with_keras_names, meta["records"]))
        ]


MODES = {mode.name: mode for mode in (Layerwise(), EndToEnd(), Decoupled())}


def mode_for(name: str) -> Mode:
    """The mode called ``name``.

    Raises:
        UnknownNameError: the message lists the modes.
    """
    if name not in MODES:
        raise UnknownNameError(f"unknown mode {name!r}; choose one of: {', '.join(MODES)}")
    return MODES[name]


def checkpoint_root(workdir: str) -> str:
    """Where a run's problem checkpoints live."""
    return os.path.join(workdir, "checkpoints")
