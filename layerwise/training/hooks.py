"""Post-stage steps as hooks: filter pruning after each stage, a new final head after the last.

A :class:`StageHook` runs after a finished stage (``after_stage``) and after the whole run
(``after_training``) through a :class:`~layerwise.training.session.TrainingSession` (the public
members of :class:`~layerwise.training.trainer.GreedyTrainer`, never its internals), and
replays what it did when a finished run is rebuilt (``restore_stage``). Both hooks below are the paper's:

- :class:`Pruning` (Belilovsky et al., ICML 2019, Sec. 4.3): prune the just-trained stage's
  filters to ``width`` (Molchanov et al. 2016, ``layerwise.training.pruning``), fine-tune its
  auxiliary head, and train the next stage on the pruned features.
- :class:`HeadRefit`: after the last stage, train a new (e.g. smaller) head on the frozen network.

Example:
    >>> GreedyTrainer(network, data, config, hooks=[Pruning(width=64)]).run()
"""

from __future__ import annotations

import os
import time
from typing import Any

import keras
import numpy as np

from layerwise.nn.flops import count_flops
from layerwise.training.pruning import filter_scores_l1, filter_scores_taylor, keep_strongest, last_conv, prune_stage
from layerwise.data.base import DataSource, derive_seed
from layerwise.errors import ConfigError
from layerwise.run import checkpoints as ckpt
from layerwise.config import TrainConfig
from layerwise.nn.heads import AuxHead, refit_head
from layerwise.nn.network import StagedNetwork
from layerwise.training.optim import make_optimizer
from layerwise.training.problems import stage_name
from layerwise.training.schedules import make_schedule
from layerwise.training.session import TrainingSession
from layerwise.training.steps import make_predict_step, make_train_step

PRUNED_FILE = "pruned.npz"


class StageHook:
    """A step after each stage and after the run; the default does nothing."""

    def check(self, network: StagedNetwork) -> None:
        """Raises ConfigError, before anything trains, when the hook cannot apply to ``network``."""

    def after_stage(self, trainer: TrainingSession, j: int) -> None:
        """Called when stage ``j`` is finished (trained or loaded), before stage ``j + 1``."""

    def after_training(self, trainer: TrainingSession) -> None:
        """Called after the last stage."""

    def restore_stage(self, network: StagedNetwork, heads: dict[int, keras.Model], j: int, directory: str) -> bool:
        """Replays ``after_stage`` on a rebuilt run from what it saved in ``directory`` (stage
        ``j``'s checkpoint folder); returns True when it changed stage ``j`` or its head."""
        return False


def train_head(head: keras.Model, frozen: keras.Model, data: DataSource, config: TrainConfig, *, epochs: int,
               seed: int, lr: float | None = None) -> None:
    """Trains ``head`` on the features of the frozen ``frozen`` model with ``config``'s optimizer:
    its schedule over ``epochs``, or a constant ``lr`` when given."""
    batch_size = config.batch_size
    learning_rate = lr if lr is not None else make_schedule(
        config.schedule, config.optim.lr, data.num_train // batch_size, epochs)
    optimizer = make_optimizer(config.optim, learning_rate, config.precision)
    optimizer.build(head.trainable_variables)
    weight_decay = config.optim.weight_decay
    step = make_train_step(head, optimizer, frozen=frozen, weight_decay=weight_decay, global_batch_size=batch_size)
    for epoch in range(epochs):
        for x, y in data.train_batches(batch_size, seed, epoch):
            step(x, y)


def probabilities_on_test(model: keras.Model, data: DataSource, batch_size: int = 256) -> np.ndarray:
    predict = make_predict_step(model)
    return np.concatenate([predict(x).numpy() for x, _ in data.eval_batches("test", batch_size)])


def _accuracy(probs: np.ndarray, data: DataSource) -> float:
    return float(np.mean(np.argmax(probs, -1) == data.labels("test")))


def _classifier(network: StagedNetwork, upto: int, head: keras.Model) -> keras.Model:
    images = network.image_input()
    prefix = network.prefix(upto)
    return keras.Model(images, head(prefix(images, training=False)), name=f"classifier_{upto:02d}")


class Pruning(StageHook):
    """Prunes every finished stage to ``width`` filters and fine-tunes its head.

    Scores the filters (``criterion``: ``taylor`` or ``l1``), slices stage j, its head and stage
    j+1's input, fine-tunes the head for ``finetune_epochs`` epochs at a tenth of the learning
    rate, makes the pruned head's predictions stage j's ensemble member, and records params, FLOPs
    and test accuracy before pruning, right after it and after fine-tuning. Deterministic, so a
    resumed run re-prunes identically before loading the next stage.
    """

    def __init__(self, width: int, criterion: str = "taylor", finetune_epochs: int = 1):
        self.width = width
        self.criterion = criterion
        self.finetune_epochs = finetune_epochs

    def check(self, network: StagedNetwork) -> None:
        for j, stage in enumerate(network.stages):
            filters = last_conv(stage).filters
            if self.width > filters:
                raise ConfigError(
                    f"prune_to_width {self.width} is more than the {filters} filters of {stage_name(j)}: pruning "
                    f"keeps that many filters of every stage; choose 1..{filters} (or 0: no pruning)"
                )

    def after_stage(self, trainer: TrainingSession, j: int) -> None:
        config, network, data = trainer.config.for_stage(j), trainer.network, trainer.data  # its lr
        start = time.perf_counter()
        stage, head = network.stages[j], trainer.heads[j]
        before = _classifier(network, j + 1, head)
        params_before, flops_before = int(before.count_params()), count_flops(before)
        acc_before = _accuracy(probabilities_on_test(before, data), data)
        if self.criterion == "l1":
            scores = filter_scores_l1(stage)
        else:
            batches = data.train_batches(config.batch_size, derive_seed(config.seed, 4, j), 0)
            scores = filter_scores_taylor(stage, head, batches, frozen=network.prefix(j))
        keep = keep_strongest(scores, min(self.width, len(scores)))
        heads = dict(trainer.heads)
        prune_stage(network, heads, j, keep)
        head = heads[j]
        trainer.replace_head(j, head)
        after = _classifier(network, j + 1, head)
        acc_pruned = _accuracy(probabilities_on_test(after, data), data)
        keras.utils.set_random_seed(derive_seed(config.seed, 5, j))
        train_head(head, network.prefix(j + 1), data, config, epochs=self.finetune_epochs,
                   seed=derive_seed(config.seed, 6, j), lr=config.optim.lr * 0.1)
        trainer.check_finite(f"{stage_name(j)}_pruned", self.finetune_epochs - 1, head.variables, config.optim.lr * 0.1)
        probs = probabilities_on_test(after, data)
        trainer.ensemble.replace_last(probs)  # the pruned network's head is stage j's ensemble member
        record = {
            "event": "prune",
            "problem": f"{stage_name(j)}_pruned",
            "stage": j,
            "criterion": self.criterion,
            "filters_before": int(len(scores)),
            "filters_after": int(len(keep)),
            "kept_filters": [int(k) for k in keep],
            "params_before": params_before,
            "params": int(after.count_params()),
            "flops_before": flops_before,
            "flops": count_flops(after),
            "acc_before_pruning": acc_before,
            "acc_pruned_no_finetune": acc_pruned,
            "test_accuracy": _accuracy(probs, data),
            "ensemble_accuracy": _accuracy(trainer.ensemble.probabilities(), data),
            "seconds": time.perf_counter() - start,
        }
        checkpoints = trainer.checkpoints(stage_name(j))
        if checkpoints is not None:
            arrays = {
                "keep": np.asarray(keep),
                **ckpt.variables_to_arrays("stage", network.stages[j].variables),
                **ckpt.variables_to_arrays("head", head.variables),
            }
            ckpt.save_arrays(os.path.join(checkpoints.directory, PRUNED_FILE), arrays, {"record": record})
        trainer.export(f"{stage_name(j)}_pruned", after)
        trainer.log(
            f"{stage_name(j)} pruned {len(scores)} -> {len(keep)} filters ({self.criterion}): test acc "
            f"{acc_before:.2%} -> {acc_pruned:.2%} (no fine-tuning) -> {record['test_accuracy']:.2%}; "
            f"params {params_before} -> {record['params']}, FLOPs {flops_before} -> {record['flops']}"
        )
        trainer.add_record(record)

    def restore_stage(self, network, heads, j, directory) -> bool:
        path = os.path.join(directory, PRUNED_FILE)
        if not os.path.exists(path):
            return False
        arrays, _ = ckpt.load_arrays(path, finite=True)
        prune_stage(network, heads, j, arrays["keep"])
        ckpt.assign_arrays("stage", network.stages[j].variables, arrays, path)
        ckpt.assign_arrays("head", heads[j].variables, arrays, path)
        return True


class HeadRefit(StageHook):
    """After the last stage: trains a new head (``head``) on the frozen network for ``epochs``."""

    SERVABLE = "refit_head"

    def __init__(self, head: AuxHead, epochs: int):
        self.head = head
        self.epochs = epochs

    def after_training(self, trainer: TrainingSession) -> None:
        config, network, data = trainer.config, trainer.network, trainer.data
        start = time.perf_counter()
        last = network.num_stages - 1
        keras.utils.set_random_seed(derive_seed(config.seed, 7, last))
        features = network.output_shape(last)  # on 1x1 features the head turns linear, as the stages' heads do
        head = self.head.fitted_to(features)(features, network.num_classes, name="refit_head")
        checkpoints = trainer.checkpoints(self.SERVABLE)
        path = None if checkpoints is None else checkpoints.final_path
        loaded = False
        if path is not None and os.path.exists(path):
            try:
                arrays, _ = ckpt.load_arrays(path, finite=True)
                ckpt.assign_arrays("head", head.variables, arrays, path)
                loaded = True
            except ckpt.CorruptCheckpointError as e:
                checkpoints.quarantine_final()
                trainer.log(f"warning: {e}; training the head again (the bad file is kept as {path}.corrupt)")
        if not loaded:
            train_head(head, network.prefix(network.num_stages), data, config, epochs=self.epochs,
                       seed=derive_seed(config.seed, 8, last))
            trainer.check_finite(self.SERVABLE, self.epochs - 1, head.variables, config.optim.lr)
            if path is not None:
                ckpt.save_arrays(path, ckpt.variables_to_arrays("head", head.variables), {})
        classifier = _classifier(network, network.num_stages, head)
        trainer.export(self.SERVABLE, classifier)
        record: dict[str, Any] = {
            "event": "refit",
            "problem": "final_head_refit",
            "stage": last,
            "head_params": int(head.count_params()),
            "replaced_head_params": int(trainer.heads[last].count_params()),
            "params": int(classifier.count_params()),
            "flops": count_flops(classifier),
            "test_accuracy": _accuracy(probabilities_on_test(classifier, data), data),
            "epochs": self.epochs,
            "seconds": time.perf_counter() - start,
        }
        trainer.log(
            f"final head refit ({record['head_params']} params instead of {record['replaced_head_params']}): "
            f"test acc {record['test_accuracy']:.2%}"
        )
        trainer.add_record(record)


def hooks_for(config: TrainConfig) -> list[StageHook]:
    """The hooks ``config`` asks for (``prune_to_width``, ``refit_head_epochs``)."""
    hooks: list[StageHook] = []
    if config.pruning.to_width:
        hooks.append(Pruning(config.pruning.to_width, config.pruning.criterion, config.pruning.finetune_epochs))
    if config.refit.epochs:
        hooks.append(HeadRefit(refit_head(config), config.refit.epochs))
    return hooks
