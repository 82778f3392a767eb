"""Named experiments: one preset per configuration of Belilovsky et al. (ICML 2019), and more.

``python -m apps.train --experiment NAME`` starts from the preset; any flag given on the command
line overrides a preset field (precedence: built-in defaults -> preset -> flags). Every preset's
docstring holds the exact command and the paper's number. ``--mode end_to_end`` on any preset is
its end-to-end counterpart (same stages and last head, J x epochs_per_stage epochs).
``python -m apps.train --list_experiments`` prints the table.

The presets live by family: ``greedy_cnns`` (the paper's), ``reference_nets`` (the zoo's ResNets
and AlexNet as their papers trained them) and ``apps.local_presets`` (the local-learning family);
``catalogue`` holds the machinery.
"""

from __future__ import annotations

from apps.experiments import greedy_cnns, reference_nets  # noqa: F401  (registers their presets)
from apps.experiments.catalogue import EXPERIMENTS, Experiment, experiment, format_table, get_experiment, stage_count
from apps.local_presets import LOCAL_PRESETS

__all__ = ["EXPERIMENTS", "Experiment", "experiment", "format_table", "get_experiment", "stage_count"]


for _name, (_paper, _changes) in LOCAL_PRESETS.items():  # the local-learning family (docs/local_learning.md)
    experiment(_name, _paper)(_changes)
