"""Rebuild a finished run from its workdir: the configured network with its trained weights.

A run's workdir holds ``config.json`` and, per training problem, ``checkpoints/<problem>/
final.npz`` whose ``model/NNNN`` arrays are the problem's ``trainable.variables`` in order
(``layerwise.trainer``: for ``end_to_end`` the composed network + final head, for ``stage_XX``
stage j + its auxiliary head). The loader rebuilds exactly those problems with the trainer's own
constructors and assigns the arrays, so it never guesses variable order.

Example:
    >>> run = restore_run("runs/resnet8", build)   # build: TrainConfig -> (network, data)
    >>> run.classifier.predict(images)             # logits of the trained network
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras

from layerwise import checkpoints as ckpt
from layerwise.config import TrainConfig
from layerwise.datasets.base import DataSource
from layerwise.errors import CheckpointError, ConfigError
from layerwise.staging import StagedNetwork
from layerwise.trainer import GreedyTrainer, Problem
from layerwise import workdir as workdir_files

Builder = Callable[[TrainConfig], "tuple[StagedNetwork, DataSource]"]


@dataclasses.dataclass
class RestoredRun:
    """A trained run: its config, data, network (weights loaded) and final classifier."""

    workdir: str
    config: TrainConfig
    network: StagedNetwork
    data: DataSource
    problems: list[Problem]
    heads: dict[int, keras.Model]  # stage index -> trained head (the last one: the final head)
    classifier: keras.Model  # images -> logits of the last problem (last stage's head)


def read_config(workdir: str) -> TrainConfig:
    """The :class:`TrainConfig` saved in ``workdir/config.json``.

    Raises:
        ConfigError: no config there (not a run directory).
    """
    return TrainConfig.from_dict(workdir_files.read_config(workdir))


def restore_run(workdir: str, build: Builder) -> RestoredRun:
    """Rebuilds the run in ``workdir`` and loads every finished problem's weights.

    Args:
        workdir: a run directory written by ``apps.train``.
        build: ``config -> (network, data)``, e.g. ``apps.runner``'s resolve/load_data/
            build_network; called once.

    Returns:
        The :class:`RestoredRun`; stages and heads hold the trained weights, stages frozen.

    Raises:
        ConfigError: not a run directory.
        CheckpointError: a problem of the run has no final checkpoint (unfinished run) or the
            checkpoint does not match the rebuilt network.
    """
    config = read_config(workdir)
    network, data = build(config)
    trainer = GreedyTrainer(network, data, config, None, verbose=0, log=lambda _: None)
    if config.mode == "end_to_end":
        problems = [trainer.end_to_end_problem()]
    else:
        problems = [trainer.stage_problem(j) for j in range(network.num_stages)]
    for problem in problems:
        path = os.path.join(workdir, "checkpoints", problem.name, "final.npz")
        if not os.path.exists(path):
            raise CheckpointError(
                f"{path} is missing: the run has not finished {problem.name}; rerun its apps.train command"
            )
        arrays, _ = ckpt.load_arrays(path)
        ckpt.assign_arrays("model", problem.trainable.variables, arrays, path)
    network.freeze_below(network.num_stages)
    classifier = problems[-1].classifier(network.image_input())
    return RestoredRun(workdir, config, network, data, problems, dict(trainer.heads), classifier)
