"""Keras Tuner over the layerwise schedule: the whole run, or greedily stage by stage.

Both hypermodels run our own loop (:class:`~layerwise.training.trainer.GreedyTrainer`) inside
``HyperModel.fit``, report ``val_accuracy`` through the tuner's callbacks
(``on_epoch_end(step, logs={"val_accuracy": ...})``, one step per trained stage) and return it.
Trials train on the training split minus a stratified validation part and are scored on that
part (:func:`validation_view`); the test split is never seen while tuning.

- :class:`ScheduleHyperModel`: one trial = a whole layerwise run with one set of
  hyperparameters (lr, weight decay, width, aux width, k, epochs per stage). The best one is
  written as a ``TrainConfig`` JSON preset that ``apps.train --config`` accepts.
- :func:`tune_per_stage`: greedy tuning (the method's own logic applied to its
  hyperparameters): stage j's hyperparameters are searched with stages 0..j-1 fixed at the
  best trained ones, each trial trains one stage only, and the best trained stage is kept.
  :func:`per_stage_config` makes its result a ``TrainConfig`` with one
  ``stage_overrides`` object per stage, a preset for ``apps.train --config`` too.

``layerwise`` does not import ``models``: callers pass ``build_network(config, data)``.

Example:
    >>> tuner = make_tuner("random", ScheduleHyperModel(base, data, build_network), "runs/t/tuning", max_trials=8)
    >>> tuner.search()
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Sequence

import keras_tuner as kt
import numpy as np

from layerwise.run import checkpoints as ckpt
from layerwise.files import atomic_write_text
from layerwise.config import STAGE_FIELDS, TrainConfig
from layerwise.data.base import ArraySource, DataSource
from layerwise.errors import ConfigError, UnknownNameError
from layerwise.nn.network import StagedNetwork
from layerwise.training.trainer import GreedyTrainer

OBJECTIVE = "val_accuracy"
TUNERS = ("random", "hyperband", "bayesian")
NetworkBuilder = Callable[[TrainConfig, DataSource], StagedNetwork]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What the tuner may choose. A field with one value is fixed; ``widths=()`` leaves the width
    of the base config alone (models without a ``width`` option).

    Attributes:
        lr: (min, max) of the learning rate, sampled log-uniformly.
        weight_decay: choices of the L2 coefficient.
        widths: choices of the first stage's width M (``model_options["width"]``).
        aux_widths: choices of the auxiliary heads' width M~.
        aux_conv_layers: choices of k - 1 (hidden conv layers of the auxiliary heads).
        epochs_per_stage: choices of epochs per stage (Hyperband sets epochs itself).
    """

    lr: tuple[float, float] = (0.005, 0.2)
    weight_decay: tuple[float, ...] = (0.0, 1e-4, 5e-4, 1e-3)
    widths: tuple[int, ...] = (16, 32, 64)
    aux_widths: tuple[int, ...] = (32, 64, 128)
    aux_conv_layers: tuple[int, ...] = (0, 1, 2)
    epochs_per_stage: tuple[int, ...] = (2, 4)

    def sample(self, hp: kt.HyperParameters, *, per_stage: bool = False, hyperband: bool = False) -> dict[str, Any]:
        """Registers the space in ``hp`` and returns the chosen config changes."""
        values: dict[str, Any] = {}
        if self.lr[0] == self.lr[1]:
            values["lr"] = float(self.lr[0])
        else:
            values["lr"] = hp.Float("lr", self.lr[0], self.lr[1], sampling="log")
        for field, name, choices in (
            ("weight_decay", "weight_decay", self.weight_decay),
            ("aux_width", "aux_width", self.aux_widths),
            ("aux_conv_layers", "aux_conv_layers", self.aux_conv_layers),
        ):
            values[field] = hp.Choice(name, list(choices)) if len(choices) > 1 else choices[0]
        if not hyperband:
            choices = self.epochs_per_stage
            values["epochs_per_stage"] = hp.Choice("epochs_per_stage", list(choices)) if len(choices) > 1 else choices[0]
        if self.widths and not per_stage:  # one builder argument sets every stage's width
            values["width"] = hp.Choice("width", list(self.widths)) if len(self.widths) > 1 else self.widths[0]
        return values


def apply(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with the sampled values (``width`` goes into ``model_options``) for every stage
    (per-stage overrides of ``base`` are dropped: the tuner chooses those fields)."""
    values = dict(values)
    options = dict(base.model_options)
    if "width" in values:
        width = values.pop("width")
        if "width" not in options:
            raise ConfigError(f"model {base.model!r} has no width option; tune with widths=()")
        options["width"] = int(width)
    cast = {k: (float(v) if k in ("lr", "weight_decay") else int(v)) for k, v in values.items()}
    return base.replace(**cast, model_options=options, stage_overrides=[]).validate()


def validation_view(data: DataSource, fraction: float = 0.2, seed: int = 0) -> DataSource:
    """A copy of ``data`` whose ``test`` split is a stratified validation part of ``train``.

    The trainer scores on ``test``; pointing it at held-out training data keeps the real test
    split out of every tuning decision.

    Raises:
        ConfigError: the dataset is not held in memory.
    """
    if not isinstance(data, ArraySource):
        raise ConfigError(f"tuning needs an in-memory dataset (mnist5k, digits, synthetic), not {data.name!r}")
    split = data.with_validation(fraction, seed)
    x_train, y_train = split.arrays("train")
    return ArraySource(data.name, (x_train, y_train), split.arrays("val"), data.num_classes, data.augment)


class _TunerHyperModel(kt.HyperModel):
    """Shared plumbing: ``build`` makes the network (Keras Tuner wants a Keras model back)."""

    def __init__(self, base: TrainConfig, data: DataSource, build_network: NetworkBuilder, space: SearchSpace, hyperband: bool):
        super().__init__(name=type(self).__name__)
        self.base = base
        self.data = data
        self.build_network = build_network
        self.space = space
        self.hyperband = hyperband
        self.network: StagedNetwork | None = None
        self.config: TrainConfig | None = None

    def config_for(self, hp, per_stage: bool, epochs: int | None) -> TrainConfig:
        """The configuration a trial with hyperparameters ``hp`` trains (Hyperband: ``epochs``)."""
        config = apply(self.base, self.space.sample(hp, per_stage=per_stage, hyperband=self.hyperband))
        if self.hyperband and epochs:
            config = config.replace(epochs_per_stage=int(epochs))
        return config

    @staticmethod
    def _report(callbacks: Sequence, model, step: int, value: float) -> None:
        for callback in callbacks or ():
            callback.set_model(model)
            callback.on_epoch_end(step, logs={OBJECTIVE: value})


class ScheduleHyperModel(_TunerHyperModel):
    """One trial = a complete layerwise run (every stage) with one set of hyperparameters.

    Args:
        base: the configuration the search starts from (dataset, model, seed, ...).
        data: the tuning data (see :func:`validation_view`).
        build_network: ``(config, data) -> StagedNetwork``.
        space: the search space.
        hyperband: Hyperband chooses epochs per stage (its ``epochs`` argument).
    """

    def __init__(self, base, data, build_network, space: SearchSpace = SearchSpace(), hyperband: bool = False):
        super().__init__(base, data, build_network, space, hyperband)

    def build(self, hp):
        self.config = self.config_for(hp, per_stage=False, epochs=None)
        self.network = self.build_network(self.config, self.data)
        return self.network.compose()

    def fit(self, hp, model, *args, callbacks=None, epochs=None, **kwargs):
        config = self.config_for(hp, per_stage=False, epochs=epochs)
        trainer = GreedyTrainer(self.network, self.data, config, None, verbose=0, log=lambda _: None)
        best = 0.0
        for j in range(self.network.num_stages):
            record = trainer.run_problem(trainer.stage_problem(j))
            best = max(best, record["test_accuracy"])  # "test" is the validation part here
            self._report(callbacks, model, j, record["test_accuracy"])
        return {OBJECTIVE: best}


class StageHyperModel(_TunerHyperModel):
    """One trial = stage ``stage`` alone, on top of stages 0..stage-1 fixed at ``kept`` weights.

    Every trial's trained stage (and head) is saved to ``store_dir/trial_<id>.npz`` so the
    greedy search can keep the best one.
    """

    def __init__(self, base, data, build_network, stage: int, kept: list[dict[str, np.ndarray]], store_dir: str,
                 space: SearchSpace = SearchSpace(), hyperband: bool = False):
        super().__init__(base, data, build_network, space, hyperband)
        self.stage = stage
        self.kept = kept
        self.store_dir = store_dir

    def build(self, hp):
        self.config = self.config_for(hp, per_stage=True, epochs=None)
        self.network = self.build_network(self.config, self.data)
        for j, arrays in enumerate(self.kept):
            ckpt.assign_arrays("stage", self.network.stages[j].variables, arrays, f"kept stage {j}")
        return self.network.compose(upto=self.stage + 1)

    def fit(self, hp, model, *args, callbacks=None, epochs=None, trial_id: str = "", **kwargs):
        config = self.config_for(hp, per_stage=True, epochs=epochs)
        trainer = GreedyTrainer(self.network, self.data, config, None, verbose=0, log=lambda _: None)
        problem = trainer.stage_problem(self.stage)
        record = trainer.run_problem(problem)
        value = record["test_accuracy"]
        ckpt.save_arrays(
            os.path.join(self.store_dir, f"trial_{trial_id}.npz"),
            ckpt.variables_to_arrays("stage", self.network.stages[self.stage].variables),
            {"val_accuracy": value, "hyperparameters": hp.values},
        )
        self._report(callbacks, model, 0, value)
        return {OBJECTIVE: value}


class LayerwiseTuner(kt.Tuner):
    """``kt.Tuner`` that passes the trial id to :meth:`StageHyperModel.fit` (it names the saved
    stage) and, under a Hyperband oracle, the trial's epoch budget ``tuner/epochs`` as ``epochs``.

    Hyperband's "continue a promising trial" is a retrain with the larger budget here (a stage
    is not resumable across hyperparameters), so a bracket costs a little more than with Keras's
    ``fit``.
    """

    def run_trial(self, trial, *args, **kwargs):
        if isinstance(self.hypermodel, StageHyperModel):
            kwargs["trial_id"] = trial.trial_id
        if "tuner/epochs" in trial.hyperparameters.values:
            kwargs["epochs"] = trial.hyperparameters.values["tuner/epochs"]
        return super().run_trial(trial, *args, **kwargs)


def make_tuner(kind: str, hypermodel: kt.HyperModel, directory: str, project: str, max_trials: int,
               seed: int = 0, max_epochs: int = 4) -> kt.Tuner:
    """A resumable tuner (``overwrite=False``: rerunning continues the same search).

    Raises:
        UnknownNameError: ``kind`` is not random, hyperband or bayesian.
    """
    objective = kt.Objective(OBJECTIVE, "max")
    common = dict(directory=directory, project_name=project, overwrite=False)
    if kind == "random":
        oracle = kt.oracles.RandomSearchOracle(objective, max_trials=max_trials, seed=seed)
    elif kind == "bayesian":
        oracle = kt.oracles.BayesianOptimizationOracle(objective, max_trials=max_trials, seed=seed)
    elif kind == "hyperband":
        oracle = kt.oracles.HyperbandOracle(objective, max_epochs=max_epochs, factor=3, hyperband_iterations=1, seed=seed)
    else:
        raise UnknownNameError(f"unknown tuner {kind!r}; choose one of: {', '.join(TUNERS)}")
    return LayerwiseTuner(oracle=oracle, hypermodel=hypermodel, **common)


def trial_rows(tuner: kt.Tuner) -> list[dict[str, Any]]:
    """One dict per trial: id, status, score and hyperparameter values, best first."""
    rows = []
    for trial in tuner.oracle.trials.values():
        rows.append({"trial": trial.trial_id, "status": str(trial.status), "score": trial.score, **trial.hyperparameters.values})
    return sorted(rows, key=lambda r: -1.0 if r["score"] is None else -r["score"])


def format_trials(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of :func:`trial_rows`."""
    if not rows:
        return "(no trials)"
    keys = list(dict.fromkeys(k for row in rows for k in row))
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(row.get(k)) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def best_config(tuner: kt.Tuner, hypermodel: _TunerHyperModel, hyperband_epochs: int | None = None) -> TrainConfig:
    """The base config with the best trial's values (Hyperband: its epochs budget)."""
    hp = tuner.get_best_hyperparameters(1)[0]
    config = apply(hypermodel.base, hypermodel.space.sample(hp, hyperband=hypermodel.hyperband))
    if hypermodel.hyperband:
        config = config.replace(epochs_per_stage=int(hp.values.get("tuner/epochs", hyperband_epochs or config.epochs_per_stage)))
    return config


def write_preset(config: TrainConfig, path: str) -> str:
    """Writes ``config`` as JSON for ``apps.train --config``."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def tune_per_stage(
    base: TrainConfig,
    data: DataSource,
    build_network: NetworkBuilder,
    directory: str,
    *,
    kind: str = "random",
    max_trials: int = 4,
    space: SearchSpace = SearchSpace(),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Greedy per-stage tuning: search stage j, keep its best trained stage, go on to j+1.

    Resumable: each stage's search lives in ``directory/stage_XX`` and the kept stage in
    ``directory/stage_XX_best.npz``.

    Returns:
        One dict per stage: ``stage``, ``trial``, ``val_accuracy``, ``hyperparameters`` (the
        tuner's) and ``overrides`` (the stage's :data:`~layerwise.config.STAGE_FIELDS` as
        trained, for :func:`per_stage_config`).
    """
    hyperband = kind == "hyperband"
    num_stages = build_network(base, data).num_stages
    kept: list[dict[str, np.ndarray]] = []
    results = []
    for j in range(num_stages):
        store = os.path.join(directory, f"stage_{j:02d}_trials")
        hypermodel = StageHyperModel(base, data, build_network, j, list(kept), store, space, hyperband)
        tuner = make_tuner(kind, hypermodel, directory, f"stage_{j:02d}", max_trials, seed=base.seed,
                           max_epochs=max(space.epochs_per_stage))
        tuner.search()
        best = tuner.oracle.get_best_trials(1)[0]
        arrays, meta = ckpt.load_arrays(os.path.join(store, f"trial_{best.trial_id}.npz"))
        ckpt.save_arrays(os.path.join(directory, f"stage_{j:02d}_best.npz"), arrays, {**meta, "trial": best.trial_id})
        kept.append(arrays)
        trained = hypermodel.config_for(best.hyperparameters, per_stage=True,
                                        epochs=best.hyperparameters.values.get("tuner/epochs")).flat()
        results.append({"stage": j, "trial": best.trial_id, "val_accuracy": meta["val_accuracy"],
                        "hyperparameters": meta["hyperparameters"],
                        "overrides": {name: trained[name] for name in STAGE_FIELDS}})
        log(f"stage {j}: best trial {best.trial_id}, val accuracy {meta['val_accuracy']:.2%}, {meta['hyperparameters']}")
        log(format_trials(trial_rows(tuner)))
    atomic_write_text(os.path.join(directory, "per_stage.json"), json.dumps(results, indent=2) + "\n")
    return results


def per_stage_config(base: TrainConfig, results: Sequence[dict[str, Any]]) -> TrainConfig:
    """``base`` training each stage with the hyperparameters :func:`tune_per_stage` chose for it
    (``stage_overrides``): write it with :func:`write_preset` and train it with
    ``apps.train --config``.

    Raises:
        ConfigError: ``results`` do not hold valid per-stage values.
    """
    return base.replace(stage_overrides=[dict(r["overrides"]) for r in results]).validate()
