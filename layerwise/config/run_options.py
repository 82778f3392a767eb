"""How a run is executed, apart from what it computes: :class:`RunOptions`.

Two runs that differ only in these options compute the same numbers (up to float rounding for
``jit_compile``; with ``validation_freq``, unless a callback of yours acts on ``val_`` logs,
which the epochs without evaluation do not have), so they are not part of ``config.json`` and a
rerun on the same workdir may change them. Every field is declared once (``layerwise.config.schema``), and ``apps.train``'s
flags are generated from the declarations.

Example:
    >>> RunOptions(steps_per_execution=8).validate().steps_per_execution
    8
"""

from __future__ import annotations

import dataclasses

from layerwise.config.groups import CACHE_PREFIX, PREFIX_MODES
from layerwise.config.schema import from_flat, from_tree, option
from layerwise.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is executed, without changing what it computes (not in ``config.json``)."""

    jit_compile: bool = option(
        False, "XLA-compile the per-replica forward+gradient function (and the frozen prefix when it runs "
        "every batch). Float results may differ in the last bits.")
    steps_per_execution: int = option(
        0, "Training steps per device call, as keras.Model.compile(steps_per_execution=...): callbacks' batch "
        "hooks run once per call. 0: one step per call when a callback has batch hooks, else the whole epoch "
        "in one call (16 steps with a live progress bar).")
    validation_freq: int = option(
        1, "Evaluate the test and validation splits after every N-th epoch of each stage, as "
        "keras.Model.fit(validation_freq=N); a stage's last epoch is always evaluated. The epochs in between "
        "record no test or validation accuracy (Keras callbacks see no val_ logs there).")
    cache_prefix: str = option(
        "auto", "Train each stage on cached outputs of the frozen prefix: auto (memory when there is no "
        "random augmentation, they fit in --cache_budget_mb and the costs measured on this machine say it "
        "pays), memory, disk (memory-mapped under workdir/cache, deleted after the stage), off. Where it caches, "
        "the test and validation splits' outputs are cached too (auto: if they fit as well) and the evaluations "
        "after each epoch run the stage and its head on them. Same numbers either way.", choices=CACHE_PREFIX)
    cache_budget_mb: float = option(1024.0, "Memory budget of --cache_prefix=auto, in MiB.")
    prefix_mode: str = option(
        "no_tape", "no_tape (the frozen prefix runs outside the gradient tape) or tape (recomputed inside it "
        "every batch, as the paper's reference code does; for benchmarks).", choices=PREFIX_MODES, cli=False)

    def validate(self, config=None) -> "RunOptions":
        """Checks every field, and with ``config`` (the run's ``TrainConfig``) the fields that
        depend on it.

        Raises:
            ConfigError: a field out of range, or ``validation_freq`` > 1 where the
                configuration decides on validation accuracy every epoch.
        """
        from_tree(RunOptions, dataclasses.asdict(self))
        if self.validation_freq < 1:
            raise ConfigError(f"validation_freq must be >= 1 (evaluate every N-th epoch), got {self.validation_freq}")
        needs = config is not None and [name for name, used in (
            ("keep_best", config.keep_best), ("lr_schedule='plateau'", config.schedule.kind == "plateau")) if used]
        if self.validation_freq > 1 and needs:
            raise ConfigError(f"validation_freq={self.validation_freq} leaves epochs without validation accuracy, "
                              f"which {' and '.join(needs)} read after every epoch; use validation_freq=1")
        if self.steps_per_execution < 0:
            raise ConfigError(f"steps_per_execution must be >= 0 (0: chosen per run), got {self.steps_per_execution}")
        if not self.cache_budget_mb >= 0:
            raise ConfigError(f"cache_budget_mb must be >= 0, got {self.cache_budget_mb}")
        return self

    def replace(self, **changes) -> "RunOptions":
        return from_flat(RunOptions, changes, base=self)
