"""What a rerun on the same workdir picks up from a problem's checkpoints.

Every epoch of a problem is checkpointed (``layerwise.run.checkpoints``): a rerun of the same
configuration loads a finished problem (:func:`load_or_retrain`: a corrupt final checkpoint is
quarantined and the problem retrained), or continues an unfinished one after its newest epoch
(:func:`restore_epoch`), with the best-so-far weights of ``keep_best`` (:func:`best_so_far`) and
the reduce-on-plateau controller's state (:func:`plateau_so_far`), so that the numbers are those
of an uninterrupted run.

Example:
    >>> history = restore_epoch(checkpoints, "stage_01", 4, model_variables, optimizer_variables,
    ...                         runlog, log=print)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, TypeVar

from layerwise.config import TrainConfig
from layerwise.run import checkpoints as ckpt
from layerwise.run.runlog import RunLog, with_keras_names
from layerwise.training.schedules import Plateau

T = TypeVar("T")


def load_or_retrain(checkpoints: ckpt.ProblemCheckpoints | None, name: str, load: Callable[[], T],
                    log: Callable[[str], None]) -> T | None:
    """``load()`` when problem ``name`` has a final checkpoint; ``None`` when it has none, or when
    ``load`` finds it corrupt (then the file is kept as ``final.npz.corrupt`` and the problem is
    retrained, said in a warning)."""
    if checkpoints is None or not checkpoints.has_final():
        return None
    try:
        return load()
    except ckpt.CorruptCheckpointError as e:
        checkpoints.quarantine_final()
        log(f"warning: {e}; retraining {name} (the bad file is kept as final.npz.corrupt)")
    return None


def restore_epoch(checkpoints: ckpt.ProblemCheckpoints | None, name: str, epochs: int, model_variables: Sequence,
                  optimizer_variables: Sequence, runlog: RunLog, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Loads problem ``name``'s newest good epoch checkpoint; returns its metric history.

    Also drops the ``metrics.jsonl`` records of epochs after that checkpoint (an interrupted
    epoch is retrained, and logged again).
    """
    if checkpoints is not None:
        ckpt.variable_keys(model_variables)  # paths must be unique: refused before anything trains
    restored = checkpoints.latest_epoch() if checkpoints is not None else None
    if restored is None:
        runlog.keep_only(lambda r: r.get("problem") != name)
        return []
    arrays, meta = restored
    source = f"checkpoint of {name} epoch {meta['epoch']}"
    ckpt.assign_arrays("model", model_variables, arrays, source)
    ckpt.assign_optimizer_arrays(optimizer_variables, arrays, source)
    history = [with_keras_names(r) for r in meta["history"]]
    runlog.keep_only(
        lambda r: r.get("problem") != name or (r["event"] == "epoch" and r["epoch"] < len(history))
    )
    log(f"{name}: resuming after epoch {len(history)} of {epochs}")
    return history


def best_so_far(config: TrainConfig, checkpoints: ckpt.ProblemCheckpoints | None,
                history: list[dict[str, Any]]) -> dict[str, Any]:
    """The best-validation weights saved with the newest epoch checkpoint (keep_best)."""
    if not config.keep_best or not history or checkpoints is None:
        return {}
    restored = checkpoints.latest_epoch()
    if restored is None:
        return {}
    arrays, meta = restored
    if meta.get("best_epoch") is None:
        return {}
    return {"epoch": meta["best_epoch"], **{k: v for k, v in arrays.items() if k.startswith("best/")}}


def plateau_so_far(config: TrainConfig, schedule, checkpoints: ckpt.ProblemCheckpoints | None,
                   history: list[dict[str, Any]]) -> Plateau | None:
    """The reduce-on-plateau controller (``lr_schedule=plateau``), as the newest epoch
    checkpoint left it, with ``schedule``'s scale set to match; ``None`` for other schedules."""
    if config.schedule.kind != "plateau" or schedule is None:
        return None
    state = None
    if history and checkpoints is not None:
        restored = checkpoints.latest_epoch()
        state = restored[1].get("plateau") if restored is not None else None
    plateau = Plateau.from_config(config.schedule, state)
    schedule.set_scale(plateau.scale)
    return plateau
