"""The validation-driven choices within a problem: the epoch it keeps, and the plateau decay.

- ``keep_best``: Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to
  ImageNet", ICML 2019, Prop. 3.1: keep the best point of the trajectory, chosen on validation
  data; the best weights so far are saved with every epoch checkpoint and put back at the end.
- ``lr_schedule="plateau"``: scale the learning rate by ``decay_factor`` after ``patience``
  epochs without a better validation accuracy (Keras's ``ReduceLROnPlateau``,
  https://keras.io/api/callbacks/reduce_lr_on_plateau/), its state checkpointed with the epochs.

Example:
    >>> kept = KeptEpoch(config, schedule, checkpoints, history, "stage_00", log=print)
    >>> arrays, meta = kept.after_epoch(epoch, record, history, variables)  # saved with the epoch
    >>> best_epoch = kept.restore_best(variables)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from layerwise.config import TrainConfig
from layerwise.run import checkpoints as ckpt
from layerwise.training.resume import best_so_far, plateau_so_far


class KeptEpoch:
    """``keep_best`` and the plateau schedule of one problem, resumed from its checkpoints.

    Args:
        config: the run's configuration (``keep_best``, ``schedule``).
        schedule: the problem's learning-rate schedule (``None``: an optimizer of the user's own).
        checkpoints: the problem's checkpoints (``None`` without a workdir).
        history: the epochs trained before (a resumed problem).
        name: the problem's name, for the log.
        log: where the decisions are said.
    """

    def __init__(self, config: TrainConfig, schedule, checkpoints: ckpt.ProblemCheckpoints | None,
                 history: list[dict[str, Any]], name: str, log: Callable[[str], None]):
        self.config = config
        self.schedule = schedule
        self.name = name
        self.log = log
        self.best = best_so_far(config, checkpoints, history)
        self.plateau = plateau_so_far(config, schedule, checkpoints, history)

    def after_epoch(self, epoch: int, record: dict[str, Any], history: list[dict[str, Any]],
                    variables: Sequence) -> tuple[dict[str, Any], dict[str, Any]]:
        """Updates the best weights and the plateau after ``epoch``; returns the arrays and the
        metadata the epoch checkpoint saves for them."""
        best = self.best
        if self.config.keep_best and (
                not best or record["val_accuracy"] > history[best["epoch"]]["val_accuracy"]):
            self.best = best = {"epoch": epoch, **ckpt.variables_to_arrays("best", variables)}
        plateau = self.plateau
        if plateau is not None and plateau.update(record["val_accuracy"]):
            self.schedule.set_scale(plateau.scale)
            self.log(f"{self.name}: validation accuracy has not improved for {plateau.patience} "
                     f"epoch(s); lr x{self.config.schedule.decay_factor:g} (scale now {plateau.scale:g})")
        meta: dict[str, Any] = {"best_epoch": best.get("epoch")}
        if plateau is not None:
            meta["plateau"] = plateau.state()
        return {k: v for k, v in best.items() if k != "epoch"}, meta

    def restore_best(self, variables: Sequence, history: list[dict[str, Any]]) -> int | None:
        """Puts the best epoch's weights back (``keep_best``); returns that epoch, or ``None``."""
        best = self.best
        if not best:
            return None
        # Prop. 3.1: keep the best point of the trajectory (chosen on validation data)
        ckpt.assign_arrays("best", variables, best, f"best epoch of {self.name}")
        kept = history[best["epoch"]]["val_accuracy"]
        self.log(f"{self.name}: keeping epoch {best['epoch'] + 1} (val acc {kept:.2%})")
        return best["epoch"]
