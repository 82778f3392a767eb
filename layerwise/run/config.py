"""The run configuration: one frozen, validated object that the whole library reads.

The CLI maps flags to a :class:`TrainConfig` (defaults -> preset -> flag overrides), calls
:meth:`TrainConfig.validate` once and hands it down; library code never reads flags. The
config is written to ``workdir/config.json`` and a rerun on the same workdir must match it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from layerwise.data.augment import AUGMENTATIONS
from layerwise.errors import ConfigError
from layerwise.training.heads import HeadSpec

MODES = ("layerwise", "end_to_end", "decoupled")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adam")
ON_NAN = ("stop", "skip")
PRUNE_CRITERIA = ("taylor", "l1")
LR_SCHEDULES = ("step", "multistep", "plateau")
MILESTONE_UNITS = ("epoch", "step")
EVAL_CROPS = (1, 10)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's results.

    Attributes:
        dataset: registered dataset name (``mnist5k``, ``digits``, ``synthetic``, ...).
        model: registered model name (``layerwise_cnn``, ``vgg11``, ``resnet20``, ...).
        model_options: keyword arguments of the model builder (for ``layerwise_cnn``:
            ``num_stages`` (J), ``width`` (M), ``downsample_at``, ``batchnorm``,
            ``downsample_input``).
        mode: ``layerwise`` (Algorithm 1 of Belilovsky et al.), ``end_to_end``, or
            ``decoupled`` (Decoupled Greedy Learning, Belilovsky et al. ICML 2020: every stage
            steps on every batch on the detached output of the previous one).
        aux_conv_layers: hidden conv layers of each auxiliary head, k - 1 in the paper.
        aux_width: width M~ of those layers.
        aux_batchnorm: BatchNorm in the auxiliary heads (as in the reference code).
        epochs_per_stage: epochs for each stage; end-to-end trains for
            ``num_stages * epochs_per_stage`` epochs, the same total.
        batch_size: global batch size.
        optimizer: ``sgd`` (momentum, the paper's) or ``adam``.
        lr, momentum: learning rate and SGD momentum.
        weight_decay: L2 coefficient added to the loss (PyTorch-style coupled weight decay,
            as in the paper's code), on every trainable variable.
        lr_decay_every, lr_decay_factor: step schedule, lr * factor ** (epoch // every), per
            stage (the paper: x0.2 every 15 epochs on CIFAR); ``0`` disables it. The factor is
            also the ``multistep`` and ``plateau`` schedules' factor.
        lr_schedule: ``step`` (above), ``multistep`` (multiply by ``lr_decay_factor`` at each of
            ``lr_milestones``; He et al. 2016: /10 at 32k and 48k iterations) or ``plateau``
            (multiply by ``lr_decay_factor`` when the validation accuracy has not improved for
            ``plateau_patience`` epochs; Krizhevsky et al. 2012: /10 when the validation error
            stops improving; needs ``validation_fraction > 0``). See ``layerwise.training.schedules``.
        lr_milestones, lr_milestone_unit: the ``multistep`` boundaries, in ``epoch``s of a stage
            (stretched J times end to end, like ``lr_decay_every``) or in ``step``s (iterations)
            of each training problem, not stretched (the paper's "32k and 48k iterations").
        plateau_patience: epochs without a validation improvement before the ``plateau`` decay.
        warmup_steps, warmup_lr: train the first ``warmup_steps`` iterations of each problem at
            ``warmup_lr`` before the schedule starts (He et al. 2016, ResNet-110: 0.01 for ~400
            iterations, then 0.1); ``0`` disables it.
        crop_size: train on random ``crop_size`` x ``crop_size`` crops of the images and evaluate
            on their centre crop (AlexNet: 224 of 256; the network's input is the crop); ``0``
            uses the whole images.
        eval_crops: ``1`` (the centre crop) or ``10`` (four corners + centre and their mirrors,
            softmax averaged, for each problem's final test evaluation, with top-1 and top-5
            error in its record; Krizhevsky et al. 2012, He et al. 2016). ``10`` needs ``crop_size``.
        augment: ``auto`` (the dataset's default), ``none``, ``crop``, ``crop_flip``, ``pca``,
            ``crop_pca``, ``crop_flip_pca``, ``flip`` or ``flip_pca`` (see ``layerwise.data.augment``).
        seed: seeds weights, data order and augmentation.
        split_seed: seeds the train/test split of the embedded datasets.
        on_nan: ``stop`` the stage at a non-finite loss, or ``skip`` the batch.
        data_dir: where file-backed datasets live (TFDS ``data_dir``, a CIFAR pickle
            directory, an image folder); ``""`` uses each loader's default.
        final_aux_width: width M~ of the last stage's auxiliary head when it differs from
            ``aux_width`` (the paper's ImageNet k=2,3 nets: 2048); ``0`` keeps ``aux_width``.
        aux_pre_pool: the auxiliary heads average their input down by this factor before their
            hidden convs (``HeadSpec.pre_pool``); 1 = off, as the paper describes.
        validation_fraction: fraction of the training split held out (stratified, seeded by
            ``split_seed``) as a ``val`` split; never the test set.
        keep_best: keep, per stage, the epoch with the best validation accuracy ("best along
            the trajectory", Prop. 3.1); needs ``validation_fraction > 0``.
        refit_head_conv_layers, refit_head_width, refit_head_epochs: after the last stage,
            train a new (e.g. smaller) head with this many hidden convs of this width on the
            frozen network for this many epochs; ``refit_head_epochs = 0`` disables it.
        prune_to_width: after each stage, prune its conv filters to this many (Molchanov et
            al. 2016) and fine-tune the auxiliary head; ``0`` disables pruning.
        prune_criterion: ``taylor`` (|mean of activation x gradient|) or ``l1`` (kernel norm).
        prune_finetune_epochs: epochs of auxiliary-head fine-tuning after pruning.
        precision: Keras dtype policy of the run (``float32``, ``mixed_bfloat16``,
            ``mixed_float16``; the last one trains with a dynamic loss scale). Logits stay float32.
        sync_batchnorm: BatchNorm statistics over the global batch (all replicas) rather than
            each replica's share; changes results when there is more than one replica.

    Not here, because they do not change what is computed: the distribution strategy, XLA and
    the prefix cache are arguments of ``run_training`` / ``GreedyTrainer`` (``RunOptions``).
    """

    dataset: str = "mnist5k"
    model: str = "layerwise_cnn"
    model_options: dict = dataclasses.field(default_factory=dict)
    mode: str = "layerwise"
    aux_conv_layers: int = 1
    aux_width: int = 128
    aux_batchnorm: bool = True
    epochs_per_stage: int = 4
    batch_size: int = 64
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_decay_every: int = 2
    lr_decay_factor: float = 0.2
    # Paper recipes (AlexNet, ResNet): LR schedules and 10-crop evaluation (see validate_recipe).
    lr_schedule: str = "step"
    lr_milestones: list = dataclasses.field(default_factory=list)
    lr_milestone_unit: str = "epoch"
    plateau_patience: int = 5
    warmup_steps: int = 0
    warmup_lr: float = 0.0
    crop_size: int = 0
    eval_crops: int = 1
    augment: str = "auto"
    seed: int = 0
    split_seed: int = 0
    on_nan: str = "stop"
    data_dir: str = ""
    final_aux_width: int = 0
    validation_fraction: float = 0.0
    keep_best: bool = False
    refit_head_conv_layers: int = 0
    refit_head_width: int = 128
    refit_head_epochs: int = 0
    prune_to_width: int = 0
    prune_criterion: str = "taylor"
    prune_finetune_epochs: int = 1
    precision: str = "float32"
    sync_batchnorm: bool = False
    aux_pre_pool: int = 1

    def head_spec(self) -> HeadSpec:
        return HeadSpec(
            conv_layers=self.aux_conv_layers, width=self.aux_width, batchnorm=self.aux_batchnorm,
            pre_pool=self.aux_pre_pool,
        )

    def final_head_spec(self) -> HeadSpec:
        """The last stage's auxiliary head: ``head_spec`` with ``final_aux_width`` if set."""
        spec = self.head_spec()
        return dataclasses.replace(spec, width=self.final_aux_width) if self.final_aux_width else spec

    def refit_head_spec(self) -> HeadSpec:
        return dataclasses.replace(self.head_spec(), conv_layers=self.refit_head_conv_layers, width=self.refit_head_width)

    def validate(self) -> "TrainConfig":
        """Checks every field that does not need the data or the model.

        Raises:
            ConfigError: with a message that names the field and the accepted values.
        """
        _choice("mode", self.mode, MODES)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("on_nan", self.on_nan, ON_NAN)
        _choice("precision", self.precision, PRECISIONS)
        _choice("augment", self.augment, ("auto",) + AUGMENTATIONS)
        for name in ("epochs_per_stage", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(
                f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}"
            )
        if self.lr_decay_every < 0 or not 0 < self.lr_decay_factor <= 1:
            raise ConfigError(
                f"need lr_decay_every >= 0 and 0 < lr_decay_factor <= 1, got "
                f"{self.lr_decay_every}, {self.lr_decay_factor}"
            )
        self.validate_recipe()
        if self.batch_size > 65536:
            raise ConfigError(f"batch_size {self.batch_size} is absurd; use at most 65536")
        self.head_spec().validate()
        _choice("prune_criterion", self.prune_criterion, PRUNE_CRITERIA)
        for name in ("final_aux_width", "refit_head_epochs", "prune_to_width", "prune_finetune_epochs"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.keep_best and not self.validation_fraction:
            raise ConfigError(
                "keep_best picks epochs on a validation split, never the test set: "
                "also pass --validation_fraction (e.g. 0.1)"
            )
        if self.refit_head_epochs:
            self.refit_head_spec().validate()
        if (self.prune_to_width or self.refit_head_epochs) and self.mode != "layerwise":
            raise ConfigError("prune_to_width and refit_head_epochs apply to --mode layerwise only")
        return self

    def validate_recipe(self) -> None:
        """Checks the LR-schedule and crop fields (part of :meth:`validate`).

        Raises:
            ConfigError: with a message that names the field and what to pass instead.
        """
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("lr_milestone_unit", self.lr_milestone_unit, MILESTONE_UNITS)
        milestones = list(self.lr_milestones)
        if self.lr_schedule == "multistep":
            if not milestones or any(not isinstance(m, int) or m <= 0 for m in milestones):
                raise ConfigError(
                    f"lr_schedule=multistep needs positive integer lr_milestones (e.g. 32000,48000), got {milestones}"
                )
            if milestones != sorted(set(milestones)):
                raise ConfigError(f"lr_milestones must be strictly increasing, got {milestones}")
        elif milestones:
            raise ConfigError(
                f"lr_milestones apply to lr_schedule=multistep only (lr_schedule is {self.lr_schedule!r})"
            )
        if self.lr_schedule == "plateau":
            if not self.validation_fraction:
                raise ConfigError(
                    "lr_schedule=plateau decides on a validation split, never the test set: "
                    "also pass --validation_fraction (e.g. 0.1)"
                )
            if self.mode == "decoupled":
                raise ConfigError("lr_schedule=plateau applies to --mode layerwise and end_to_end, not decoupled")
        if self.plateau_patience < 1:
            raise ConfigError(f"plateau_patience must be >= 1, got {self.plateau_patience}")
        if self.warmup_steps < 0 or (self.warmup_steps and not self.warmup_lr > 0):
            raise ConfigError(
                f"need warmup_steps >= 0 and warmup_lr > 0 when warming up, got "
                f"{self.warmup_steps}, {self.warmup_lr}"
            )
        if self.crop_size < 0:
            raise ConfigError(f"crop_size must be >= 0, got {self.crop_size}")
        if self.eval_crops not in EVAL_CROPS:
            raise ConfigError(f"eval_crops must be 1 or 10, got {self.eval_crops}")
        if self.eval_crops == 10:
            if not self.crop_size:
                raise ConfigError(
                    "eval_crops=10 takes crops of the training crop size from the full test images: "
                    "also pass --crop_size (smaller than the images, e.g. 28 for 32x32)"
                )
            if self.mode == "decoupled" or self.prune_to_width or self.refit_head_epochs:
                raise ConfigError(
                    "eval_crops=10 applies to plain layerwise and end_to_end runs (no decoupled, pruning or head refit)"
                )

    def learning_rate(self, epoch: int) -> float:
        """The step schedule: ``lr * lr_decay_factor ** (epoch // lr_decay_every)``."""
        if not self.lr_decay_every:
            return self.lr
        return self.lr * self.lr_decay_factor ** (epoch // self.lr_decay_every)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _choice(field: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {field} {value!r}; choose one of: {', '.join(choices)}")


CACHE_PREFIX = ("auto", "memory", "disk", "off")
PREFIX_MODES = ("no_tape", "tape")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a run is executed, without changing what it computes (not in ``config.json``).

    Attributes:
        jit_compile: XLA-compile the per-replica forward+gradient function (and the frozen
            prefix when it runs every batch). Float results may differ in the last bits.
        cache_prefix: ``auto`` (memory when there is no random augmentation and the features
            of the training set fit in ``cache_budget_mb``), ``memory``, ``disk``
            (memory-mapped ``.npy`` under ``workdir/cache``, deleted after the stage) or ``off``.
        cache_budget_mb: the ``auto`` budget for cached features.
        prefix_mode: ``no_tape`` (the frozen prefix runs outside the gradient tape) or ``tape``
            (recomputed inside it every batch, as the paper's reference code does; only for the
            benchmark's comparison).
    """

    jit_compile: bool = False
    cache_prefix: str = "auto"
    cache_budget_mb: float = 1024.0
    prefix_mode: str = "no_tape"

    def validate(self) -> "RunOptions":
        _choice("cache_prefix", self.cache_prefix, CACHE_PREFIX)
        _choice("prefix_mode", self.prefix_mode, PREFIX_MODES)
        if self.cache_budget_mb < 0:
            raise ConfigError(f"cache_budget_mb must be >= 0, got {self.cache_budget_mb}")
        return self
