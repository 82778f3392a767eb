"""Rebuilds a trained run from its run directory: config -> network + heads -> trained weights.

``workdir/config.json`` says what was trained; every finished problem left
``checkpoints/<problem>/final.npz`` with the variables of "stage j + its head" in
``problem.trainable.variables`` order (see ``layerwise.training.trainer``). This module rebuilds the same
problems with :class:`~layerwise.training.trainer.GreedyTrainer` (no training, no workdir writes) and
assigns those arrays, so an export or an evaluation needs nothing but the run directory.

``layerwise`` does not import ``models``: the caller passes the network builder
(``apps.runner.build_network``).

Example:
    >>> from apps.runner import build_network
    >>> run = restore_run("runs/demo", build_network)
    >>> run.classifiers[-1](images)          # logits of the deepest finished stage
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import keras

from layerwise.run import checkpoints as ckpt
from layerwise.run.config import TrainConfig
from layerwise.data import DataSource, load_dataset
from layerwise.data.crops import with_crops
from layerwise.errors import CheckpointError
from layerwise.training.network import StagedNetwork
from layerwise.training.trainer import GreedyTrainer
from layerwise.run import workdir as workdir_files

NetworkBuilder = Callable[[TrainConfig, DataSource], StagedNetwork]


@dataclasses.dataclass
class RestoredRun:
    """A trained run rebuilt in memory.

    Attributes:
        workdir: the run directory.
        config: the run's configuration (``workdir/config.json``).
        data: its dataset (for ``mean``/``std``, shapes and evaluation).
        network: the staged network with every finished stage's trained weights.
        problems: names of the finished problems, in order (``stage_00``, ... or ``end_to_end``).
        heads: the trained head of each finished problem, in the same order.
        classifiers: image -> logits functional model of each finished problem.
        records: the stage records stored with each ``final.npz``.
    """

    workdir: str
    config: TrainConfig
    data: DataSource
    network: StagedNetwork
    problems: list[str]
    heads: list[keras.Model]
    classifiers: list[keras.Model]
    records: list[dict[str, Any]]

    @property
    def layerwise(self) -> bool:
        """Every stage has its own trained head (layerwise and decoupled runs)."""
        return self.config.mode in ("layerwise", "decoupled")

    @property
    def trained_stages(self) -> int:
        """Stages with trained weights (every stage of an end-to-end run)."""
        return len(self.problems) if self.layerwise else self.network.num_stages


def default_load_data(config: TrainConfig) -> DataSource:
    """The dataset as ``apps.runner.load_data`` loads it (augmentation is irrelevant here),
    seen through the run's crops when it trained on crops."""
    return with_crops(load_dataset(config.dataset, split_seed=config.split_seed), config.crop_size)


def read_config(workdir: str) -> TrainConfig:
    """``workdir/config.json`` as a :class:`TrainConfig`.

    Raises:
        ConfigError: there is no config (not a run directory).
    """
    return TrainConfig.from_dict(workdir_files.read_config(workdir))


def restore_run(
    workdir: str,
    build_network: NetworkBuilder,
    load_data: Callable[[TrainConfig], DataSource] = default_load_data,
) -> RestoredRun:
    """Rebuilds every finished stage (or the finished end-to-end model) of ``workdir``.

    Args:
        workdir: a run directory written by ``apps.train`` / ``GreedyTrainer``.
        build_network: ``(config, data) -> StagedNetwork`` (``apps.runner.build_network``).
        load_data: ``config -> DataSource``.

    Returns:
        The restored run; layerwise runs stop at the first unfinished stage.

    Raises:
        CheckpointError: no finished stage, or a checkpoint of another architecture.
    """
    config = read_config(workdir)
    data = load_data(config)
    network = build_network(config, data)
    trainer = GreedyTrainer(network, data, config, None, verbose=0, log=lambda _: None)
    root = os.path.join(workdir, "checkpoints")
    if config.mode == "decoupled":
        return _restore_decoupled(workdir, config, data, network, trainer, root)
    names = (
        [f"stage_{j:02d}" for j in range(network.num_stages)] if config.mode == "layerwise" else ["end_to_end"]
    )
    run = RestoredRun(workdir, config, data, network, [], [], [], [])
    for j, name in enumerate(names):
        checkpoints = ckpt.ProblemCheckpoints(root, name)
        if not checkpoints.has_final():
            break
        problem = trainer.stage_problem(j) if config.mode == "layerwise" else trainer.end_to_end_problem()
        arrays, meta = checkpoints.load_final()
        ckpt.assign_arrays("model", problem.trainable.variables, arrays, checkpoints.final_path)
        classifier = problem.classifier(network.image_input())
        if config.mode == "layerwise":
            network.stages[j].trainable = False
            if _restore_pruning(network, trainer.heads, j, checkpoints.directory):
                classifier = network.compose(upto=j + 1, head=trainer.heads[j])
        run.problems.append(name)
        run.heads.append(trainer.heads[problem.stage])
        run.classifiers.append(classifier)
        run.records.append(meta.get("record", {}))
    if not run.problems:
        raise CheckpointError(
            f"{workdir} has no finished stage (no checkpoints/{names[0]}/final.npz); "
            "finish training first (rerun the same apps.train command to resume)"
        )
    return run


def _restore_pruning(network: StagedNetwork, heads: dict, j: int, directory: str) -> bool:
    """Re-slices stage j and its head as ``layerwise.training.compression`` left them, if it pruned them."""
    path = os.path.join(directory, "pruned.npz")
    if not os.path.exists(path):
        return False
    from layerwise.training.compression import prune_stage  # only pruned runs need it

    arrays, _ = ckpt.load_arrays(path)
    prune_stage(network, heads, j, arrays["keep"])
    ckpt.assign_arrays("stage", network.stages[j].variables, arrays, path)
    ckpt.assign_arrays("head", heads[j].variables, arrays, path)
    return True


def _restore_decoupled(workdir, config, data, network, trainer, root) -> RestoredRun:
    """A decoupled run keeps all stages and heads in one ``checkpoints/decoupled/final.npz``."""
    from layerwise.training.decoupled import build_stage_models

    models = build_stage_models(trainer)
    checkpoints = ckpt.ProblemCheckpoints(root, "decoupled")
    if not checkpoints.has_final():
        raise CheckpointError(
            f"{workdir} has no finished decoupled run (no checkpoints/decoupled/final.npz); "
            "rerun the same apps.train command to finish it"
        )
    arrays, meta = checkpoints.load_final()
    ckpt.assign_arrays("model", [v for m in models for v in m.variables], arrays, checkpoints.final_path)
    network.freeze_below(network.num_stages)
    run = RestoredRun(workdir, config, data, network, [], [], [], [])
    for j, record in enumerate(meta["records"]):
        run.problems.append(f"stage_{j:02d}")
        run.heads.append(trainer.heads[j])
        run.classifiers.append(network.compose(upto=j + 1, head=trainer.heads[j]))
        run.records.append(record)
    return run
