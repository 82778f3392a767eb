"""The ground floor: the run's configuration, declared once, and how objects of the user's own are recorded.

Everything else in ``layerwise`` reads its settings from here, and this package imports nothing
of the project but ``layerwise.errors`` (checked in ``tests/test_structure.py``):

- ``schema``: declaring a field once (type, default, help, flag) and reading/writing the tree;
- ``groups``: the groups of fields (heads, optimizer, schedule, pruning, refit, local loss) and
  the choices they accept;
- ``train``: :class:`TrainConfig` (everything that determines a run's results, its
  ``config.json``);
- ``run_options``: :class:`RunOptions` (how a run executes, not in ``config.json``);
- ``applicable``: options that apply only with another are refused where they change nothing;
- ``recorded``: objects of the user's own (heads, losses, optimizers) as Keras-serialised forms
  (imports Keras; not imported here).

Nothing here imports TensorFlow or Keras, so every app's ``--help`` answers at once.

Example:
    >>> from layerwise.config import TrainConfig
    >>> TrainConfig().replace(lr=0.1, aux_width=64).validate().optim.lr
    0.1
"""

from __future__ import annotations

from layerwise.config.groups import (
    MODES, PRECISIONS, OPTIMIZERS, ON_NAN, PRUNE_CRITERIA, LR_SCHEDULES, MILESTONE_UNITS,
    EVAL_CROPS, CACHE_PREFIX, PREFIX_MODES, AUGMENTATIONS, check_head_shape, LOCAL_LOSSES,
    CUSTOM_LOSS, INFOPRO_CLASS_TERMS, STAGE_FIELDS, AUX_POOLINGS, REPLAY_POLICIES, HeadsConfig,
    REPLAY_SCHEDULES, FILLED_FROM_DATA,
    OptimConfig, ScheduleConfig, PruningConfig, RefitConfig, LocalConfig,
)
from layerwise.config.run_options import RunOptions
from layerwise.config.train import TrainConfig

__all__ = [
    'MODES', 'PRECISIONS', 'OPTIMIZERS', 'ON_NAN', 'PRUNE_CRITERIA', 'LR_SCHEDULES',
    'MILESTONE_UNITS', 'EVAL_CROPS', 'CACHE_PREFIX', 'PREFIX_MODES', 'AUGMENTATIONS',
    'check_head_shape', 'LOCAL_LOSSES', 'CUSTOM_LOSS', 'INFOPRO_CLASS_TERMS', 'STAGE_FIELDS',
    'AUX_POOLINGS', 'REPLAY_POLICIES', 'REPLAY_SCHEDULES', 'FILLED_FROM_DATA', 'HeadsConfig', 'OptimConfig', 'ScheduleConfig',
    'PruningConfig', 'RefitConfig', 'LocalConfig', 'TrainConfig', 'RunOptions',
]
