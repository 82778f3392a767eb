"""Rebuilds a trained run from its run directory: config -> network + heads -> trained weights.

``workdir/config.json`` says what was trained, ``workdir/network.json`` the network's
architecture and the input it trained on (``layerwise.run.network_file``, written by
``layerwise.fit``); every finished problem left ``checkpoints/<problem>/final.npz``. The run's
mode (``layerwise.training.modes``) rebuilds the same problems with the same heads (no trainer,
no training, no workdir writes) and assigns those arrays, and the hooks replay their post-stage
steps (a pruned stage is re-sliced), so an export needs nothing but the run directory: no
``apps``, no zoo, no data (a network's classes defined outside Keras are imported from the
modules ``network.json`` names).

A run written before the network was saved (or whose network Keras could not serialise) is
rebuilt by the caller's ``build_network`` (``apps.runner.build_network`` for a zoo model), as before.

Example:
    >>> run = restore_run("runs/demo")       # in any process, after ``import layerwise``
    >>> run.classifiers[-1](images)          # logits of the deepest finished stage
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import keras

from layerwise.data import DataSource
from layerwise.errors import CheckpointError
from layerwise.run import workdir as workdir_files
from layerwise.config import TrainConfig
from layerwise.run.loading import load_data as default_load_data
from layerwise.run.network_file import read_network
from layerwise.training.hooks import hooks_for
from layerwise.training.modes import checkpoint_root, mode_for
from layerwise.training.stage_groups import group_stages
from layerwise.nn.network import StagedNetwork
from layerwise.training.problems import HeadPlan

NetworkBuilder = Callable[[TrainConfig, DataSource], StagedNetwork]

__all__ = ["RestoredRun", "default_load_data", "read_config", "restore_run"]


@dataclasses.dataclass
class RestoredRun:
    """A trained run rebuilt in memory.

    Attributes:
        workdir: the run directory.
        config: the run's configuration (``workdir/config.json``).
        data: its dataset (for ``mean``/``std``, shapes and evaluation); restored from the saved
            network without ``load_data``, only the input's shape and normalisation
            (:class:`~layerwise.run.network_file.RecordedData`, no examples).
        network: the staged network with every finished stage's trained weights.
        problems: names of the finished problems, in order (``stage_00``, ... or ``end_to_end``).
        heads: the trained head of each finished problem, in the same order.
        classifiers: image -> logits functional model of each finished problem.
        records: the stage records stored with each ``final.npz``.
        stage_heads: every stage has its own head (layerwise and decoupled runs).
        total_problems: how many problems the finished run has (``problems`` has them all
            when the run is finished).
    """

    workdir: str
    config: TrainConfig
    data: DataSource
    network: StagedNetwork
    problems: list[str]
    heads: list[keras.Model]
    classifiers: list[keras.Model]
    records: list[dict[str, Any]]
    stage_heads: bool = True
    total_problems: int = 0

    @property
    def finished(self) -> bool:
        """Every problem of the run is trained (an unfinished run still has stages to train)."""
        return len(self.problems) >= self.total_problems

    @property
    def layerwise(self) -> bool:
        """Every stage has its own trained head (layerwise and decoupled runs)."""
        return self.stage_heads

    @property
    def trained_stages(self) -> int:
        """Stages with trained weights (every stage of an end-to-end run)."""
        return len(self.problems) if self.stage_heads else self.network.num_stages


def read_config(workdir: str) -> TrainConfig:
    """``workdir/config.json`` as a :class:`TrainConfig`.

    Raises:
        ConfigError: there is no config (not a run directory), or it does not parse.
    """
    return TrainConfig.from_dict(workdir_files.read_config(workdir))


def restore_run(
    workdir: str,
    build_network: NetworkBuilder | None = None,
    load_data: Callable[[TrainConfig], DataSource] | None = None,
) -> RestoredRun:
    """Rebuilds every finished stage (or the finished end-to-end model) of ``workdir``.

    Args:
        workdir: a run directory written by ``apps.train`` / ``layerwise.fit``.
        build_network: ``None`` (default): the network saved with the run (``network.json``);
            or ``(config, data) -> StagedNetwork`` (``apps.runner.build_network``), for a run
            that has none.
        load_data: ``config -> DataSource``. Default: with the saved network, none is loaded
            (``data`` holds the recorded input: enough to export); with ``build_network``,
            ``layerwise.run.loading.load_data`` (the registered dataset, the path training used).

    Returns:
        The restored run; layerwise runs stop at the first unfinished stage.

    Raises:
        CheckpointError: no finished stage, a checkpoint of another architecture, or no saved
            network to rebuild (pass ``build_network``).
    """
    config = read_config(workdir)
    if build_network is None:
        saved = read_network(workdir)
        network = saved.network
        data = saved.data if load_data is None else load_data(config)
    else:
        data = (load_data or default_load_data)(config)
        network = build_network(config, data)
    if config.local.modules:
        network = group_stages(network, config.local.modules)
    mode = mode_for(config.mode)
    heads = HeadPlan.from_config(config)
    finished = mode.restore(network, heads, checkpoint_root(workdir), config.epochs_per_stage, hooks_for(config))
    if not finished:
        raise CheckpointError(
            f"{workdir} has no finished {'stage' if mode.stage_heads else 'run'} (no final.npz under "
            f"{os.path.join(workdir, 'checkpoints')}); finish training first (rerun the same apps.train "
            "command to resume)"
        )
    return RestoredRun(
        workdir, config, data, network,
        problems=[f.name for f in finished],
        heads=[f.head for f in finished],
        classifiers=[f.classifier for f in finished],
        records=[f.record for f in finished],
        stage_heads=mode.stage_heads,
        total_problems=len(mode.trained_stages(network)),
    )
