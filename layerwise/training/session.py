"""The public interface a training mode or a post-stage hook drives: :class:`TrainingSession`.

A mode (``layerwise.training.modes``) and a hook (``layerwise.training.hooks``) see a run only
through these members; :class:`~layerwise.training.trainer.GreedyTrainer` implements them (a
structural ``typing.Protocol``, https://docs.python.org/3/library/typing.html#typing.Protocol:
any object with these members is a session). A new mode is a :class:`~layerwise.training.modes.Mode`
whose ``train`` composes them: build problems, run each (``run_problem``), or build its own steps
and run its epochs (``restore_epoch``, ``train_epochs``), then ``complete`` each finished problem.

Example:
    >>> class EveryOther(Mode):
    ...     name = "every_other"
    ...     def train(self, session: TrainingSession) -> None:
    ...         for j in range(0, session.network.num_stages, 2):
    ...             session.run_problem(session.stage_problem(j))
    ...     def restore(self, network, heads, root, epochs_per_stage, hooks=()):
    ...         return []  # nothing rebuilt: the run retrains
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

import keras
import numpy as np
import tensorflow as tf

from layerwise.config import RunOptions, TrainConfig
from layerwise.data.base import DataSource
from layerwise.run import checkpoints as ckpt
from layerwise.training.callbacks import RunCallbacks
from layerwise.nn.network import StagedNetwork
from layerwise.training.problems import Ensemble, HeadPlan, Problem

T = TypeVar("T")


class TrainingSession(Protocol):
    """One run's state and the steps a mode or a hook is made of.

    Attributes:
        network: the staged network being trained.
        data: the dataset.
        config: the validated run configuration.
        options: execution options (XLA, prefix cache, steps per execution).
        strategy: the ``tf.distribute.Strategy`` the network was built under.
        head_plan: which head (and local loss) each stage trains with.
        heads: each stage's trained head so far, by stage.
        ensemble: the finished stages' test probabilities (the 2^j-weighted ensemble).
        callbacks: the run's Keras callbacks.
        stop_requested: a callback asked to end the run.
        log: where one-line messages go.
    """

    network: StagedNetwork
    data: DataSource
    config: TrainConfig
    options: RunOptions
    strategy: tf.distribute.Strategy
    head_plan: HeadPlan
    heads: dict[int, keras.Model]
    ensemble: Ensemble
    callbacks: RunCallbacks
    stop_requested: bool
    log: Callable[[str], None]

    # problems
    def build_head(self, j: int) -> keras.Model:
        """A fresh, seeded head for stage ``j`` (also kept in ``heads[j]``)."""

    def stage_problem(self, j: int) -> Problem:
        """Stage ``j`` with a fresh head on top of the frozen stages before it."""

    def end_to_end_problem(self) -> Problem:
        """Every stage and the last head, trained together."""

    def replace_head(self, j: int, head: keras.Model) -> None:
        """Makes ``head`` stage ``j``'s head (e.g. its pruned version)."""

    # running a problem
    def run_problem(self, problem: Problem) -> dict[str, Any]:
        """Trains ``problem`` (or loads it when finished earlier); returns its record."""

    def after_stage(self, j: int) -> None:
        """Runs the hooks' post-stage steps on the just-finished stage ``j``."""

    def checkpoints(self, name: str) -> ckpt.ProblemCheckpoints | None:
        """Problem ``name``'s checkpoints (``None`` without a workdir)."""

    def load_or_retrain(self, name: str, checkpoints: ckpt.ProblemCheckpoints | None,
                        load: Callable[[], T]) -> T | None:
        """``load()`` when problem ``name`` finished earlier; ``None`` to train it (again)."""

    def make_optimizer(self, problem: Problem, schedule=None) -> keras.optimizers.Optimizer:
        """A fresh optimizer for ``problem``'s trainable variables."""

    def global_batch_size(self) -> int | None:
        """The loss's divisor (``None``: each batch's own size)."""

    def multi_step(self, step, optimizer):
        """``step`` run several batches per device call."""

    def restore_epoch(self, name: str, epochs: int, model_variables: Sequence, optimizer_variables: Sequence,
                      checkpoints: ckpt.ProblemCheckpoints | None) -> list[dict[str, Any]]:
        """Loads problem ``name``'s newest epoch checkpoint; returns its history."""

    def train_epochs(self, problem: Problem, run, predict, history: list[dict[str, Any]],
                     model_variables: Sequence, optimizer_variables: Sequence,
                     checkpoints: ckpt.ProblemCheckpoints | None, **options) -> list[dict[str, Any]]:
        """Trains ``problem``'s remaining epochs, checkpointing each; returns the history."""

    # evaluating and finishing
    def probabilities(self, predict, split: str) -> np.ndarray:
        """``predict``'s probabilities on every example of ``split``."""

    def check_finite(self, name: str, epoch: int, variables: Sequence, lr: float) -> None:
        """Raises NonFiniteLossError when a variable of ``variables`` is NaN or infinite."""

    def stage_record(self, problem: Problem, classifier: keras.Model, probs: np.ndarray | None) -> dict[str, Any]:
        """The record fields every mode shares; adds ``probs`` to the ensemble."""

    def complete(self, problem: Problem, classifier: keras.Model, record: dict[str, Any]) -> dict[str, Any]:
        """Freezes, exports, records a finished problem and tells the callbacks."""

    def export(self, suffix: str, classifier: keras.Model) -> None:
        """Exports ``classifier`` as the servable ``<model>_<suffix>`` (once)."""

    def add_record(self, record: dict[str, Any]) -> None:
        """Appends a record to the run's records and ``metrics.jsonl`` (once per problem)."""
