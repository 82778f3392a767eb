"""A finished problem: its evaluation, final checkpoint, export and record, each done once.

When a problem has trained its last epoch (or is found finished in its checkpoints), its stage
is frozen, its classifier evaluated on the test split (the newest epoch's pass is reused when it
evaluated the same weights) and added to the 2^j-weighted ensemble (Belilovsky, Eickenberg &
Oyallon, ICML 2019, Sec. 4.1), its final checkpoint written, its classifier exported as the
servable ``<model>_<problem>`` (``layerwise.serving.servables``) and its record appended to the
run's records and ``metrics.jsonl``, then the callbacks hear ``on_stage_end``. A resumed run
neither exports nor records a problem twice.

Example:
    >>> finisher = StageFinisher(network, data, config, evaluator, epoch_loop, ensemble,
    ...                          complete=session.complete, log=print)
    >>> record = finisher.finish(problem, predict, classifier, history, checkpoints)
"""

from __future__ import annotations

import os
from typing import Any, Callable

import keras
import numpy as np

from layerwise.nn.flops import count_flops
from layerwise.analysis.memory import largest_peak
from layerwise.config import TrainConfig
from layerwise.data.base import DataSource
from layerwise.run import checkpoints as ckpt
from layerwise.run.runlog import RunLog, with_keras_names
from layerwise.serving.servables import export_classifier
from layerwise.serving.versions import versions
from layerwise.training.epoch import EpochLoop, check_finite
from layerwise.training.evaluation import Evaluator, accuracy, top5_fields
from layerwise.nn.network import StagedNetwork
from layerwise.training.problems import Ensemble, Problem, load_finished


class StageFinisher:
    """Finishes the problems of one run.

    Args:
        network: the run's staged network.
        data: the run's dataset.
        config: the run's configuration.
        evaluator: the run's evaluation passes.
        epoch_loop: the run's epoch loop (its newest test probabilities).
        ensemble: the finished stages' test probabilities.
        complete: ``complete(problem, classifier, record)``: freezes, exports and records a
            finished problem (the session's, so that a subclass's ``export`` is the one used).
        log: where one-line messages go.
    """

    def __init__(self, network: StagedNetwork, data: DataSource, config: TrainConfig,
                 evaluator: Evaluator, epoch_loop: EpochLoop, ensemble: Ensemble, *,
                 complete: Callable[[Problem, keras.Model, dict[str, Any]], dict[str, Any]],
                 log: Callable[[str], None]):
        self.network = network
        self.data = data
        self.config = config
        self.evaluator = evaluator
        self.epoch_loop = epoch_loop
        self.ensemble = ensemble
        self.complete = complete
        self.log = log

    def stage_record(self, problem: Problem, classifier: keras.Model, probs: np.ndarray | None) -> dict[str, Any]:
        """The fields of a finished problem's record that every mode shares; adds ``probs`` (its
        test probabilities) to the ensemble."""
        record = {
            "event": "stage",
            "problem": problem.name,
            "stage": problem.stage,
            "params": int(classifier.count_params()),
            "trainable_params": int(problem.trainable.count_params()),
            "test_accuracy": None,
            "ensemble_accuracy": None,
        }
        if probs is not None:
            self.ensemble.add(probs)
            labels = self.data.labels("test")
            ensemble = self.ensemble.probabilities()
            record.update(test_accuracy=accuracy(probs, labels), ensemble_accuracy=accuracy(ensemble, labels),
                          **top5_fields(probs, ensemble, labels))
        return record

    def finish(self, problem, predict, classifier, history, checkpoints, best_epoch=None) -> dict[str, Any]:
        """Evaluates a trained problem, saves its final checkpoint and completes it."""
        check_finite(self.config, problem.name, len(history) - 1, problem.trainable.variables, history[-1]["lr"])
        last = len(history) - 1
        latest = self.epoch_loop.latest_test_probs
        if latest[:2] == (problem.name, last) and best_epoch in (None, last) and self.config.eval_crops != 10:
            probs, crops = latest[2], {}  # the weights the last epoch evaluated: no second pass
        else:
            probs, crops = self.evaluator.test_evaluation(predict) if self.data.num_test else (None, {})
        kept = history[-1] if best_epoch is None else history[best_epoch]
        record = {
            **self.stage_record(problem, classifier, probs),
            "accuracy": kept["accuracy"],
            "val_accuracy": kept.get("val_accuracy"),
            **crops,
            "kept_epoch": best_epoch,
            "flops": count_flops(classifier),
            "epochs": len(history),
            "stopped_early": len(history) < problem.epochs,  # a callback's stop_training: final, said so
            "seconds": float(sum(r["seconds"] for r in history)),
            "train_seconds": float(sum(r.get("train_seconds", 0.0) for r in history)),
            "epoch_seconds": float(np.mean([r["seconds"] for r in history])),
            "peak_memory_mb": largest_peak(r.get("peak_memory_mb") for r in history),
        }
        if checkpoints is not None:
            arrays = ckpt.variables_to_arrays("model", problem.trainable.variables)
            if probs is not None:
                arrays["test_probs"] = probs
            checkpoints.save_final(arrays, {"record": record})
            checkpoints.clear_epochs()
        return self.complete(problem, classifier, record)

    def load_finished(self, problem: Problem, checkpoints: ckpt.ProblemCheckpoints) -> dict[str, Any]:
        """Rebuilds a problem finished earlier from its final checkpoint and completes it."""
        arrays, meta = load_finished(problem, checkpoints, self.network.image_input())
        if "test_probs" in arrays:
            self.ensemble.add(arrays["test_probs"])
        self.log(f"{problem.name}: finished earlier, loaded from {checkpoints.final_path}")
        return self.complete(problem, problem.classifier(self.network.image_input()), with_keras_names(meta["record"]))


def export_once(workdir: str | None, network: StagedNetwork, data: DataSource, suffix: str,
                classifier: keras.Model) -> None:
    """Exports ``classifier`` as the servable ``<model>_<suffix>`` unless it has a version
    already (a resumed run does not re-export); nothing without a workdir."""
    if workdir is None:
        return
    servable = os.path.join(workdir, "export", f"{network.name}_{suffix}")
    if not versions(servable):
        export_classifier(classifier, servable, data.mean, data.std, uint8=data.uint8_pixels)


def record_once(workdir: str | None, runlog: RunLog, records: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Appends ``record`` to ``records`` and to ``metrics.jsonl`` (once per problem)."""
    if workdir is not None:
        if not any(r.get("event") == record["event"] and r.get("problem") == record["problem"]
                   for r in runlog.records):
            runlog.write(record)
    else:
        runlog.records.append(record)
    records.append(record)
