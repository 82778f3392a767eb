"""Rebuild a trained run from its workdir: config, data, network with every finished stage loaded.

``workdir/config.json`` gives the configuration; a caller-supplied ``build(config) -> (network,
data)`` recreates the untrained network and the data (``layerwise`` never imports ``models`` or
``apps``; ``apps.probe`` passes ``apps.runner`` functions). The weights come from
``checkpoints/stage_XX/final.npz`` (``model/NNNN`` = the variables of
``GreedyTrainer.stage_problem(j).trainable``: stage j then its head) or
``checkpoints/end_to_end/final.npz``; stages pruned by ``layerwise.compression`` are re-sliced
with the stored filter indices (``pruned.npz``) before the next stage is loaded.

Example:
    >>> run = restore_run("runs/mnist5k_k3", build=lambda c: build_from_config(c))
    >>> run.network.compose(upto=2)  # trained stages 0..1
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import keras

from layerwise import checkpoints as ckpt
from layerwise.config import TrainConfig
from layerwise.datasets.base import DataSource
from layerwise.errors import CheckpointError
from layerwise.staging import StagedNetwork
from layerwise.workdir import read_config

Builder = Callable[[TrainConfig], "tuple[StagedNetwork, DataSource]"]


@dataclasses.dataclass
class RestoredRun:
    """A trained run: ``network`` (finished stages loaded, frozen), its ``heads`` by stage."""

    workdir: str
    config: TrainConfig
    network: StagedNetwork
    data: DataSource
    heads: dict[int, keras.Model]
    trained_stages: int  # stages whose weights were loaded (all of them end to end)


def restore_run(workdir: str, build: Builder) -> RestoredRun:
    """Loads every finished problem of the run in ``workdir``.

    Raises:
        ConfigError: ``workdir`` holds no run.
        CheckpointError: no finished stage, or checkpoints from another configuration.
    """
    from layerwise.trainer import GreedyTrainer  # heavy; keeps this module cheap to import

    config = TrainConfig.from_dict(read_config(workdir))
    network, data = build(config)
    trainer = GreedyTrainer(network, data, config, None, verbose=0, log=lambda message: None)
    root = os.path.join(workdir, "checkpoints")
    if config.mode == "end_to_end":
        path = os.path.join(root, "end_to_end", "final.npz")
        problem = trainer.end_to_end_problem()
        _load(path, problem.trainable.variables)
        network.freeze_below(network.num_stages)
        return RestoredRun(workdir, config, network, data, dict(trainer.heads), network.num_stages)
    trained = 0
    for j in range(network.num_stages):
        path = os.path.join(root, f"stage_{j:02d}", "final.npz")
        if not os.path.exists(path):
            break
        problem = trainer.stage_problem(j)
        _load(path, problem.trainable.variables)
        network.stages[j].trainable = False
        pruned = os.path.join(root, f"stage_{j:02d}", "pruned.npz")
        if os.path.exists(pruned):
            from layerwise.compression import prune_stage

            arrays, _ = ckpt.load_arrays(pruned)
            prune_stage(network, trainer.heads, j, arrays["keep"])
            ckpt.assign_arrays("stage", network.stages[j].variables, arrays, pruned)
            ckpt.assign_arrays("head", trainer.heads[j].variables, arrays, pruned)
        trained = j + 1
    if not trained:
        raise CheckpointError(f"{workdir} has no finished stage (no {root}/stage_00/final.npz); train it first")
    network.freeze_below(network.num_stages)
    return RestoredRun(workdir, config, network, data, dict(trainer.heads), trained)


def _load(path: str, variables) -> None:
    if not os.path.exists(path):
        raise CheckpointError(f"{path} is missing: the run has not finished; rerun its training command")
    arrays, _ = ckpt.load_arrays(path)
    ckpt.assign_arrays("model", variables, arrays, path)
