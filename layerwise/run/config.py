"""The run configuration: one frozen, validated object that the whole library reads.

Every field is declared once, with its type, default and help (``layerwise.run.schema``): the
command-line flags of ``apps.train`` are generated from these declarations, and
``layerwise.fit(**options)`` takes the same flat names. Related fields are grouped (``heads``,
``optim``, ``schedule``, ``pruning``, ``refit``); in JSON (``workdir/config.json``) the groups
are nested objects, and a config file written before the groups existed (flat) still reads.

Precedence in the CLI: defaults -> preset (``--experiment``) -> ``--config FILE`` -> flags. The
config is validated once (:meth:`TrainConfig.validate`) and handed down; library code never
reads flags. A rerun on the same workdir must match the stored config.

Example:
    >>> config = TrainConfig().replace(lr=0.1, aux_width=64)
    >>> config.optim.lr, config.heads.width
    (0.1, 64)
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from layerwise.errors import ConfigError, did_you_mean
from layerwise.run import schema
from layerwise.run.applicable import check_applicable
from layerwise.run.schema import option

MODES = ("layerwise", "end_to_end", "decoupled")
PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adam")
ON_NAN = ("stop", "skip")
PRUNE_CRITERIA = ("taylor", "l1")
LR_SCHEDULES = ("step", "multistep", "plateau", "cosine")
MILESTONE_UNITS = ("epoch", "step")
EVAL_CROPS = (1, 10)
CACHE_PREFIX = ("auto", "memory", "disk", "off")
PREFIX_MODES = ("no_tape", "tape")
# The augmentation policies of ``layerwise.data.augment`` (named here so that reading a config,
# and with it every app's --help, needs no TensorFlow).
AUGMENTATIONS = (
    "none", "crop", "crop_flip", "resized_crop_flip", "pca", "crop_pca", "crop_flip_pca", "flip", "flip_pca",
    "cutout", "crop_cutout", "crop_flip_cutout", "reflect_crop", "reflect_crop_flip",
)


def check_head_shape(conv_layers: int, width: int, pre_pool: int) -> None:
    """The checks of an auxiliary head's shape that need no features (``AuxHead.validate``).

    Raises:
        ConfigError: naming the flag and what it takes.
    """
    if conv_layers < 0:
        raise ConfigError(f"aux_conv_layers must be >= 0 (k - 1 in the paper; k >= 1), got {conv_layers} (k={conv_layers + 1})")
    if width <= 0:  # an AuxHead's width is positive even where k = 1 leaves it unused
        raise ConfigError(f"aux_width must be positive, got {width}")
    if pre_pool < 1:
        raise ConfigError(f"aux_pre_pool must be >= 1 (1 = off), got {pre_pool}")


LOCAL_LOSSES = ("pred", "sim", "predsim", "infopro")  # layerwise.training.local_losses
# a LocalLoss of the user's own, recorded as a Keras-serialised object in ``local_loss_object``
CUSTOM_LOSS = "custom"
INFOPRO_CLASS_TERMS = ("cross_entropy", "contrast")
# the fields one stage may set for itself (``TrainConfig.stage_overrides``): what the per-stage
# tuner (``layerwise.tuning.tune_per_stage``) chooses
STAGE_FIELDS = ("lr", "weight_decay", "aux_width", "aux_conv_layers", "epochs_per_stage")
# how an aux head with max_features averages where the block does not divide the features (heads.py)
AUX_POOLINGS = ("adaptive", "padded")
# how an asynchronous stage picks its batch from the replay buffer (layerwise.training.replay)
REPLAY_POLICIES = ("priority_lifo", "uniform")


@dataclasses.dataclass(frozen=True)
class HeadsConfig:
    """The auxiliary problems (Belilovsky et al., Sec. 3): one head per stage."""

    conv_layers: int = option(
        1, "Hidden 3x3 conv layers in each auxiliary head: k - 1 in the paper, where k is the depth of the "
        "auxiliary problem (k=1: average-to-2x2 + linear).", flag="aux_conv_layers")
    width: int = option(128, "M~: width of the auxiliary conv layers.", flag="aux_width")
    batchnorm: bool = option(True, "BatchNorm in the auxiliary heads (as in the reference code).", flag="aux_batchnorm")
    pre_pool: int = option(
        1, "Average the auxiliary heads' input down by this factor before their convs (1: off, the paper; "
        "4: the DGL ImageNet reference code, 16x less head memory).", flag="aux_pre_pool")
    final_width: int = option(
        0, "Width of the last stage's aux head if it differs (the paper's ImageNet k=2,3 nets: 2048); "
        "0 = --aux_width.", flag="final_aux_width")
    max_features: int = option(
        0, "Average each aux head's features down only until at most this many reach its linear layer "
        "(Noekland & Eidnes' dim_in_decoder: 4096) instead of to 2x2; 0: off (the paper's 2x2).",
        flag="aux_max_features")
    zero_init: bool = option(
        False, "Start each aux head's linear layer at zero weights (Noekland & Eidnes' decoder_y; the bias "
        "starts at zero too).", flag="aux_zero_init")
    pooling: str = option(
        "adaptive", "With --aux_max_features, how the heads average where the block does not divide the "
        "features: adaptive (every row and column, overlapping windows) or padded (Noekland & Eidnes' "
        "AvgPool2d(kernel, padding): zero padding counted in the mean, the rows and columns beyond the last "
        "whole window left out).", flag="aux_pooling", choices=AUX_POOLINGS)
    pooled_size: int = option(
        2, "Spatial size each aux head averages its features to before its linear layer (the paper: 2, i.e. "
        "2x2).", flag="aux_pooled_size")
    hidden_units: list[int] = option(
        factory=list, help="Fully connected ReLU layers of these widths before each aux head's linear layer "
        "(e.g. 4096,4096 as VGG's classifier); empty: none, the paper's heads.", flag="aux_hidden_units")
    dropout: float = option(
        0.0, "Dropout rate before each of the aux heads' --aux_hidden_units layers and after the last one "
        "(0: none).", flag="aux_dropout")
    object: dict = option(
        factory=dict, help="A head builder of the user's own (layerwise.fit(head=...)) as a Keras-serialised "
        "object (keras.saving.serialize_keras_object); it then builds every stage's head instead of the aux_* "
        "fields. {}: none.", flag="aux_head_object", cli=False)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The optimizer of every training problem (a fresh one per stage, Algorithm 1)."""

    name: str = option("sgd", "sgd (with momentum, the paper's) or adam.", flag="optimizer", choices=OPTIMIZERS)
    lr: float = option(0.05, "Learning rate.", flag="lr")
    momentum: float = option(0.9, "SGD momentum.", flag="momentum")
    nesterov: bool = option(
        False, "Nesterov momentum for SGD (InfoPro's recipe, Wang et al. 2021: nesterov=True).", flag="nesterov")
    weight_decay: float = option(
        5e-4, "L2 coefficient added to the loss on every trainable variable (PyTorch-style coupled weight "
        "decay, as in the paper's code).", flag="weight_decay")
    object: dict = option(
        factory=dict, help="An optimizer of the user's own (layerwise.fit(optimizer=...), or the optimizer the "
        "split model was compiled with) as a Keras-serialised object (keras.saving.serialize_keras_object): "
        "every problem trains with a fresh copy of it, with its own learning rate or schedule, instead of "
        "--optimizer, --lr, --momentum and the lr schedule. {}: none.", flag="optimizer_object", cli=False)


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """The learning-rate schedule of each training problem (see ``layerwise.training.schedules``)."""

    kind: str = option(
        "step", "step (every --lr_decay_every epochs), multistep (at --lr_milestones; He et al.: 32000,48000 "
        "iterations), plateau (when the validation accuracy has not improved for --plateau_patience epochs; "
        "Krizhevsky et al.; needs --validation_fraction) or cosine (per epoch, to 0 at the last epoch, after "
        "--warmup_epochs of linear warm-up from --warmup_lr; InfoPro's cos_lr).", flag="lr_schedule",
        choices=LR_SCHEDULES)
    decay_every: int = option(
        2, "Multiply the LR by --lr_decay_factor every this many epochs of a stage (0: constant; the paper: "
        "x0.2 every 15 epochs on CIFAR).", flag="lr_decay_every")
    decay_factor: float = option(
        0.2, "Factor of the step, multistep and plateau schedules (0.1: divide by 10).", flag="lr_decay_factor")
    milestones: list[int] = option(
        factory=list, help="Boundaries of --lr_schedule=multistep, in --lr_milestone_unit (e.g. 32000,48000).",
        flag="lr_milestones")
    milestone_unit: str = option(
        "epoch", "epoch (of a stage; stretched J times end to end) or step (iterations of each problem, as "
        "given: the paper's '32k and 48k iterations').", flag="lr_milestone_unit", choices=MILESTONE_UNITS)
    plateau_patience: int = option(
        5, "Epochs without a validation improvement before --lr_schedule=plateau decays the LR.",
        flag="plateau_patience")
    warmup_steps: int = option(
        0, "Train the first this many iterations of each problem at --warmup_lr (He et al., ResNet-110: 400; "
        "0: off).", flag="warmup_steps")
    warmup_lr: float = option(
        0.0, "Learning rate of the warm-up iterations (ResNet-110: 0.01), or the first epoch's of "
        "--warmup_epochs (InfoPro: 0.01).", flag="warmup_lr")
    warmup_epochs: int = option(
        0, "--lr_schedule cosine only: blend linearly from --warmup_lr (first epoch) into the cosine over this "
        "many epochs of each problem (InfoPro: 10; stretched J times end to end; 0: off).", flag="warmup_epochs")


@dataclasses.dataclass(frozen=True)
class PruningConfig:
    """Filter pruning after each stage (Belilovsky et al., Sec. 4.3; Molchanov et al. 2016)."""

    to_width: int = option(
        0, "After each stage, prune its filters to this many and fine-tune its head (0: off).",
        flag="prune_to_width")
    criterion: str = option(
        "taylor", "taylor (|mean of activation x gradient|, Molchanov et al. 2016) or l1 (kernel norm).",
        flag="prune_criterion", choices=PRUNE_CRITERIA)
    finetune_epochs: int = option(1, "Epochs of aux-head fine-tuning after pruning.", flag="prune_finetune_epochs")


@dataclasses.dataclass(frozen=True)
class RefitConfig:
    """A new head trained on the frozen network after the last stage."""

    conv_layers: int = option(0, "Hidden 3x3 convs of the refit head.", flag="refit_head_conv_layers")
    width: int = option(128, "Width of the refit head's convs.", flag="refit_head_width")
    epochs: int = option(
        0, "After the last stage, train a new head on the frozen net for this many epochs (0: off).",
        flag="refit_head_epochs")


@dataclasses.dataclass(frozen=True)
class LocalConfig:
    """The local-learning family: each module's local loss, K modules of any model, and the
    asynchronous decoupled mode (``layerwise.training.local_losses``, ``docs/local_learning.md``)."""

    loss: str = option(
        "pred", "Each module's local loss: pred (cross-entropy through its auxiliary head: greedy layerwise "
        "learning), sim or predsim (similarity matching; Noekland & Eidnes 2019), infopro (reconstruction + "
        "classification; Wang et al. 2021); custom: a LocalLoss of your own given to layerwise.fit (recorded in "
        "the run's config.json). Used in every mode; end_to_end adds the non-pred losses of the earlier stages "
        "to the network's cross-entropy.", flag="local_loss", choices=LOCAL_LOSSES + (CUSTOM_LOSS,))
    predsim_beta: float = option(
        0.99, "predsim: weight of the similarity term; 1 - beta weighs the prediction term (the paper: 0.99).",
        flag="predsim_beta")
    infopro_recon_weight: float = option(
        5.0, "infopro: lambda_1, the reconstruction weight of the first module (the reference code's ixx_1).",
        flag="infopro_recon_weight")
    infopro_recon_weight_last: float = option(
        0.0, "infopro: lambda_1 of the last local module (ixx_2); linear in between.",
        flag="infopro_recon_weight_last")
    infopro_class_weight: float = option(
        0.5, "infopro: lambda_2, the classification weight of the first module (ixy_1).",
        flag="infopro_class_weight")
    infopro_class_weight_last: float = option(
        1.0, "infopro: lambda_2 of the last local module (ixy_2); linear in between.",
        flag="infopro_class_weight_last")
    infopro_class_term: str = option(
        "cross_entropy", "infopro: the classification term, cross_entropy (through the module's head) or "
        "contrast (supervised contrastive loss on a projection head, temperature 0.07).",
        flag="infopro_class_term", choices=INFOPRO_CLASS_TERMS)
    infopro_temperature: float = option(
        0.07, "infopro: temperature of the contrastive term (Khosla et al. 2020: 0.07).", flag="infopro_temperature")
    infopro_feature_dim: int = option(
        128, "infopro: output width of the contrastive term's projection head.", flag="infopro_feature_dim")
    infopro_decoder_width: int = option(
        12, "infopro: hidden width of the reconstruction decoder (the reference code: 12).",
        flag="infopro_decoder_width")
    object: dict = option(
        factory=dict, help="--local_loss custom: the LocalLoss of the user's own as a Keras-serialised object "
        "(keras.saving.serialize_keras_object; layerwise.fit writes it). {}: none.", flag="local_loss_object",
        cli=False)
    modules: int = option(
        0, "Train the model as K local modules of roughly equal forward FLOPs, each a group of consecutive "
        "stages (0: the model's own stages). InfoPro's K.", flag="local_modules")
    replay_buffer: int = option(
        0, "--mode decoupled: N > 0 makes it asynchronous (Belilovsky et al. 2020): each stage reads its "
        "input from a replay buffer of the last N batches of the previous stage's outputs (--replay_policy) and "
        "steps at its own rate; 0: synchronous, every stage on every batch.", flag="replay_buffer")
    replay_policy: str = option(
        "priority_lifo", "--replay_buffer: which batch a stage reads: priority_lifo (DGL's Buffer.get_sample: the "
        "freshest of the least-used batches) or uniform (seeded, over the filled slots).", flag="replay_policy",
        choices=REPLAY_POLICIES)
    step_ratios: list[float] = option(
        factory=list, help="--replay_buffer: steps of each stage per training batch, e.g. 1,2,0.5 (stage 0 takes "
        "exactly 1: it reads the data); empty: 1 for every stage.", flag="stage_step_ratios")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's results (the run's fingerprint in ``config.json``).

    Not here, because they do not change what is computed: the distribution strategy, XLA and
    the prefix cache (:class:`RunOptions`).
    """

    dataset: str = option(
        "mnist5k", "Dataset: mnist5k, digits, synthetic (embedded); mnist, fashion_mnist, cifar10, cifar100, "
        "imagenette, imagenet2012 (TFDS or local files in --data_dir); image_folder.")
    model: str = option("layerwise_cnn", "Model from the zoo (see docs/zoo.md).")
    model_options: dict = option(
        factory=dict, help="Keyword arguments of the model builder (see --model_option).", cli=False)
    mode: str = option(
        "layerwise", "layerwise (the paper's Algorithm 1), end_to_end, or decoupled (every stage steps on every "
        "batch on the detached output of the previous one; Belilovsky et al. 2020).", choices=MODES)
    epochs_per_stage: int = option(4, "Epochs per stage (end_to_end: J times this, the same total).")
    batch_size: int = option(64, "Global batch size.")
    heads: HeadsConfig = dataclasses.field(default_factory=HeadsConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    schedule: ScheduleConfig = dataclasses.field(default_factory=ScheduleConfig)
    crop_size: int = option(
        0, "Train on random crops of this size and test on the centre crop (AlexNet: 224 of 256; 0: whole "
        "images).")
    eval_crops: int = option(
        1, "1, or 10: test each finished problem on 4 corner + centre crops and their mirrors, softmax "
        "averaged, with top-1/top-5 error (Krizhevsky et al. 2012; needs --crop_size).", choices=EVAL_CROPS)
    augment: str = option(
        "auto", "auto (the dataset's default), none, crop, crop_flip, resized_crop_flip, flip, or one of those "
        "+ AlexNet PCA colour: pca, crop_pca, crop_flip_pca, flip_pca; or + cutout (DeVries & Taylor 2017): "
        "cutout, crop_cutout, crop_flip_cutout; reflect_crop, reflect_crop_flip: the crop's padding mirrors the "
        "image instead of zeros (InfoPro's CIFAR recipe).", choices=("auto",) + AUGMENTATIONS)
    seed: int = option(0, "Seed for weights, data order and augmentation.")
    split_seed: int = option(0, "Seed of the train/test split of embedded data (and of the validation split).")
    on_nan: str = option("stop", "At a non-finite loss: stop, or skip the batch.", choices=ON_NAN)
    data_dir: str = option(
        "", "Where file-backed datasets live (TFDS data_dir, cifar-10-batches-bin, image folder); '' uses each "
        "loader's default.")
    validation_fraction: float = option(
        0.0, "Hold out this fraction of the training split (stratified, seeded by --split_seed) as a "
        "validation split; never the test set.")
    validation_split: float = option(
        0.0, "layerwise.fit(validation_split=...): the last fraction of the training arrays (before shuffling) held "
        "out as validation data, as keras.Model.fit does.", cli=False)
    shuffle: bool = option(
        True, "layerwise.fit(shuffle=...): a new, seeded order of the training arrays every epoch; False keeps "
        "their order.", cli=False)
    keep_best: bool = option(
        False, "Keep each stage's epoch with the best validation accuracy (Prop. 3.1: best along the "
        "trajectory); needs --validation_fraction.")
    refit: RefitConfig = dataclasses.field(default_factory=RefitConfig)
    pruning: PruningConfig = dataclasses.field(default_factory=PruningConfig)
    precision: str = option(
        "auto", "Keras dtype policy: float32, mixed_bfloat16, mixed_float16 (dynamic loss scale), or auto (the "
        "fastest that keeps the results on this hardware: mixed_bfloat16 on CPUs with AVX512-BF16/AMX and GPUs of "
        "compute capability >= 8, mixed_float16 on 7.x GPUs, else float32; the run records the policy it chose). "
        "Logits stay float32.", choices=PRECISIONS)
    sync_batchnorm: bool = option(
        False, "BatchNorm statistics over all replicas (changes results with more than one replica).")
    local: LocalConfig = dataclasses.field(default_factory=LocalConfig)
    stage_overrides: list[dict] = option(
        factory=list, help="Per-stage hyperparameters, one object per stage (layerwise mode), each of some of "
        "lr, weight_decay, aux_width, aux_conv_layers, epochs_per_stage; a stage's object replaces those fields "
        "for that stage only ({}: the run's values). What apps.tune --tune_per_stage writes. []: none.",
        cli=False)

    # ------------------------------------------------------------------ checks
    def validate(self, validation_data: bool = False) -> "TrainConfig":
        """Checks every field that does not need the data or the model.

        Args:
            validation_data: the data brings a validation split of its own (``layerwise.fit``'s
                ``validation_data=``), so ``keep_best`` and the ``plateau`` schedule do not need
                ``validation_fraction``.

        Raises:
            ConfigError: with a message that names the field (its flag) and the accepted values.
        """
        schema.from_tree(TrainConfig, self.to_dict())  # types and choices
        for name in ("epochs_per_stage", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("seed", "split_seed"):  # NumPy's and Keras's seeding take 0 .. 2**32 - 1
            if not 0 <= getattr(self, name) < 2**32:
                raise ConfigError(f"{name} must be in 0 .. {2**32 - 1}, got {getattr(self, name)}")
        optim = self.optim
        if not 0 < optim.lr < float("inf"):
            raise ConfigError(f"lr must be positive and finite, got {optim.lr}")
        if not 0 <= optim.weight_decay < float("inf") or not 0 <= optim.momentum < 1:
            raise ConfigError(
                f"need 0 <= weight_decay < inf and 0 <= momentum < 1, got {optim.weight_decay}, {optim.momentum}"
            )
        if optim.nesterov and (optim.name != "sgd" or not optim.momentum):
            raise ConfigError(f"nesterov needs the sgd optimizer with momentum > 0, got optimizer {optim.name!r} "
                              f"and momentum {optim.momentum}: pass optimizer sgd and a momentum, or nesterov False")
        if self.schedule.decay_every < 0 or not 0 < self.schedule.decay_factor <= 1:
            raise ConfigError(
                f"need lr_decay_every >= 0 and 0 < lr_decay_factor <= 1, got "
                f"{self.schedule.decay_every}, {self.schedule.decay_factor}"
            )
        self.validate_recipe(validation_data or self.validation_fraction > 0)
        if self.batch_size > 65536:
            raise ConfigError(f"batch_size {self.batch_size} is absurd; use at most 65536")
        check_head_shape(self.heads.conv_layers, self.heads.width, self.heads.pre_pool)
        self.validate_head_layers()
        for name, value in (("final_aux_width", self.heads.final_width), ("refit_head_epochs", self.refit.epochs),
                            ("prune_to_width", self.pruning.to_width),
                            ("prune_finetune_epochs", self.pruning.finetune_epochs), ("crop_size", self.crop_size)):
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.keep_best and not (validation_data or self.validation_fraction):
            raise ConfigError(
                "keep_best picks epochs on a validation split, never the test set: "
                "also pass --validation_fraction (e.g. 0.1)"
            )
        if self.refit.epochs:
            check_head_shape(self.refit.conv_layers, self.refit.width, self.heads.pre_pool)
        if (self.pruning.to_width or self.refit.epochs) and self.mode != "layerwise":
            raise ConfigError("prune_to_width and refit_head_epochs apply to --mode layerwise only")
        self.validate_local()
        self.validate_stage_overrides(validation_data)
        check_applicable(self.flat(), TrainConfig().flat())  # after each field's own checks
        return self

    def validate_stage_overrides(self, validation_data: bool = False) -> None:
        """Checks ``stage_overrides`` (part of :meth:`validate`): objects of :data:`STAGE_FIELDS`
        whose values are valid for this config; the number of stages is checked against the
        network by :meth:`check_stage_count`. ``validation_data``: as in :meth:`validate`.

        Raises:
            ConfigError: one line naming the stage and the field.
        """
        overrides = self.stage_overrides
        if not overrides:
            return
        if self.mode != "layerwise":
            raise ConfigError(f"stage_overrides apply to mode layerwise only (mode is {self.mode!r}): drop them "
                              "or train layerwise")
        for j, changes in enumerate(overrides):
            where = f"stage_overrides[{j}] (stage {j})"
            if not isinstance(changes, dict):
                raise ConfigError(
                    f"{where} must be an object of some of {', '.join(STAGE_FIELDS)}, got {changes!r}"[:300])
            unknown = sorted(set(changes) - set(STAGE_FIELDS))
            if unknown:
                raise ConfigError(f"{where}: unknown field {unknown[0]!r}{did_you_mean(unknown[0], STAGE_FIELDS)}; a "
                                  f"stage may set {', '.join(STAGE_FIELDS)}")
            if self.optim.object and "lr" in changes:
                raise ConfigError(f"{where}: lr does not apply to an optimizer object (optimizer_object), which "
                                  "brings its own learning rate: drop lr from the stage's object")
            if self.heads.object and {"aux_width", "aux_conv_layers"} & set(changes):
                raise ConfigError(f"{where}: aux_width and aux_conv_layers do not apply to a head of your own "
                                  "(aux_head_object): drop them from the stage's object")
            try:
                self.for_stage(j).validate(validation_data)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None

    def for_stage(self, j: int) -> "TrainConfig":
        """Stage ``j``'s configuration: this one with ``stage_overrides[j]`` applied (and no
        overrides left); this one itself where the run has none.

        Raises:
            ConfigError: a field of the stage's object has the wrong type, or there is none for
                stage ``j``.
        """
        if not self.stage_overrides:
            return self
        if not 0 <= j < len(self.stage_overrides):
            raise ConfigError(f"stage_overrides has {len(self.stage_overrides)} object(s), none for stage {j}: give "
                              "one per stage ({} keeps a stage at the run's values)")
        return self.replace(**self.stage_overrides[j], stage_overrides=[])

    def stage_epochs(self, num_stages: int) -> list[int]:
        """Epochs of each of the network's ``num_stages`` stages (``epochs_per_stage``, or a stage's own).

        Raises:
            ConfigError: ``stage_overrides`` do not give one object per stage.
        """
        self.check_stage_count(num_stages)
        return [self.for_stage(j).epochs_per_stage for j in range(num_stages)]

    def describe_stage_overrides(self) -> str:
        """``"; stage 0: lr 0.1, aux_width 8; ..."`` (the run's first line), or ``""`` without any."""
        return "".join(f"; stage {j}: " + ", ".join(f"{k} {v:g}" for k, v in changes.items())
                       for j, changes in enumerate(self.stage_overrides) if changes)

    def check_stage_count(self, num_stages: int) -> None:
        """Refuses ``stage_overrides`` that do not give one object per stage of the network.

        Raises:
            ConfigError: the counts, and what to give.
        """
        count = len(self.stage_overrides)
        if count and count != num_stages:
            raise ConfigError(
                f"stage_overrides has {count} object(s) but the network has {num_stages} stages: give one per "
                "stage ({} keeps a stage at the run's values)")

    def validate_head_layers(self) -> None:
        """Checks the aux heads' pooling and fully connected fields (part of :meth:`validate`).

        Raises:
            ConfigError: naming the field (its flag) and what it takes.
        """
        heads = self.heads
        if heads.pooled_size <= 0:
            raise ConfigError(f"aux_pooled_size must be positive, got {heads.pooled_size}")
        if any(units <= 0 for units in heads.hidden_units):
            raise ConfigError(f"aux_hidden_units must be positive widths, got {list(heads.hidden_units)}")
        if not 0.0 <= heads.dropout < 1.0:
            raise ConfigError(f"aux_dropout must be in [0, 1), got {heads.dropout}")
        if heads.max_features < 0:
            raise ConfigError(f"aux_max_features must be >= 0 (0 = off), got {heads.max_features}")
        if heads.pooling != "adaptive" and not heads.max_features:
            raise ConfigError(f"aux_pooling {heads.pooling!r} sizes its windows from aux_max_features: "
                              "set aux_max_features (e.g. 4096) or leave aux_pooling adaptive")

    def validate_local(self) -> None:
        """Checks the local-learning fields (part of :meth:`validate`).

        Raises:
            ConfigError: with a message that names the field and what to pass instead.
        """
        local = self.local
        if not 0.0 <= local.predsim_beta <= 1.0:
            raise ConfigError(f"predsim_beta must be in [0, 1], got {local.predsim_beta}")
        weights = (local.infopro_recon_weight, local.infopro_recon_weight_last, local.infopro_class_weight,
                   local.infopro_class_weight_last)
        if any(not 0.0 <= w < float("inf") for w in weights):
            raise ConfigError(f"the infopro weights must be >= 0 and finite, got {list(weights)}")
        if not 0.0 < local.infopro_temperature < float("inf"):
            raise ConfigError(f"infopro_temperature must be positive and finite, got {local.infopro_temperature}")
        if local.infopro_feature_dim <= 0 or local.infopro_decoder_width <= 0:
            raise ConfigError(
                f"infopro_feature_dim and infopro_decoder_width must be positive, got "
                f"{local.infopro_feature_dim}, {local.infopro_decoder_width}")
        if (local.loss == CUSTOM_LOSS) != bool(local.object):
            raise ConfigError(
                "local_loss custom goes with local_loss_object, the serialised LocalLoss that layerwise.fit records "
                f"(local_loss is {local.loss!r}, local_loss_object is {'set' if local.object else 'empty'}); pass "
                "your LocalLoss object to layerwise.fit(local_loss=...), or a built-in local_loss name")
        if local.modules < 0 or local.replay_buffer < 0:
            raise ConfigError(
                f"local_modules and replay_buffer must be >= 0, got {local.modules}, {local.replay_buffer}")
        if local.replay_buffer and self.mode != "decoupled":
            raise ConfigError("replay_buffer applies to --mode decoupled (the asynchronous variant); drop it or "
                              "pass --mode decoupled")
        if local.replay_policy != "priority_lifo" and not local.replay_buffer:
            raise ConfigError(f"replay_policy {local.replay_policy!r} applies to the asynchronous decoupled mode: "
                              "also pass --replay_buffer N, or drop it")
        ratios = list(local.step_ratios)
        if ratios and not local.replay_buffer:
            raise ConfigError("stage_step_ratios apply to the asynchronous decoupled mode: also pass --replay_buffer N")
        if ratios and (ratios[0] != 1 or any(not isinstance(r, (int, float)) or isinstance(r, bool)
                                             or not 0 < r < float("inf") for r in ratios)):
            raise ConfigError(
                f"stage_step_ratios must be positive numbers, the first 1 (stage 0 takes one step per batch), "
                f"got {ratios}")
        if local.loss != "pred" and (self.pruning.to_width or self.refit.epochs):
            raise ConfigError("prune_to_width and refit_head_epochs train with --local_loss pred only")

    def validate_recipe(self, validation_data: bool = True) -> None:
        """Checks the LR-schedule and crop fields (part of :meth:`validate`); ``validation_data``:
        a validation split exists.

        Raises:
            ConfigError: with a message that names the field and what to pass instead.
        """
        schedule = self.schedule
        milestones = list(schedule.milestones)
        if schedule.kind == "multistep":
            if not milestones or any(m <= 0 for m in milestones):
                raise ConfigError(
                    f"lr_schedule=multistep needs positive integer lr_milestones (e.g. 32000,48000), got {milestones}"
                )
            if milestones != sorted(set(milestones)):
                raise ConfigError(f"lr_milestones must be strictly increasing, got {milestones}")
        elif milestones:
            raise ConfigError(
                f"lr_milestones apply to lr_schedule=multistep only (lr_schedule is {schedule.kind!r})"
            )
        if schedule.kind == "plateau":
            if not validation_data:
                raise ConfigError(
                    "lr_schedule=plateau decides on a validation split, never the test set: "
                    "also pass --validation_fraction (e.g. 0.1)"
                )
            if self.mode == "decoupled":
                raise ConfigError("lr_schedule=plateau applies to --mode layerwise and end_to_end, not decoupled")
        if schedule.plateau_patience < 1:
            raise ConfigError(f"plateau_patience must be >= 1, got {schedule.plateau_patience}")
        if schedule.warmup_steps < 0 or (schedule.warmup_steps and not schedule.warmup_lr > 0):
            raise ConfigError(
                f"need warmup_steps >= 0 and warmup_lr > 0 when warming up, got "
                f"{schedule.warmup_steps}, {schedule.warmup_lr}"
            )
        if schedule.warmup_epochs < 0 or (schedule.warmup_epochs and (
                schedule.kind != "cosine" or not schedule.warmup_lr > 0)):
            raise ConfigError(
                f"warmup_epochs warms up the cosine schedule: need lr_schedule cosine and warmup_lr > 0 with "
                f"warmup_epochs > 0, got {schedule.kind!r}, {schedule.warmup_lr}, {schedule.warmup_epochs}")
        if self.eval_crops == 10:
            if not self.crop_size:
                raise ConfigError(
                    "eval_crops=10 takes crops of the training crop size from the full test images: "
                    "also pass --crop_size (smaller than the images, e.g. 28 for 32x32)"
                )
            if self.mode == "decoupled" or self.pruning.to_width or self.refit.epochs:
                raise ConfigError(
                    "eval_crops=10 applies to plain layerwise and end_to_end runs (no decoupled, pruning or head refit)"
                )

    # ------------------------------------------------------------------ forms
    def to_dict(self) -> dict[str, Any]:
        """The JSON form: groups as nested objects."""
        return json.loads(json.dumps(schema.to_tree(self)))

    def flat(self) -> dict[str, Any]:
        """``{flat name: value}``: the names of the flags and of ``layerwise.fit``'s options."""
        return schema.flatten(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from its JSON form; flat names (the pre-group form of ``config.json``, or
        flags) are accepted too. Missing fields take their defaults.

        Raises:
            ConfigError: an unknown field or a value of the wrong type.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object of fields, got {type(values).__name__}")
        return schema.from_flat(cls, values)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied, by flat name (``lr=0.1``) or whole group (``optim=...``).

        Raises:
            ConfigError: an unknown name or a value of the wrong type.
        """
        return schema.from_flat(TrainConfig, changes, base=self)



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
    cache_prefix: str = option(
        "auto", "Train each stage on cached outputs of the frozen prefix: auto (memory when there is no "
        "random augmentation and they fit in --cache_budget_mb), memory, disk (memory-mapped under "
        "workdir/cache, deleted after the stage), off. Same numbers either way.", choices=CACHE_PREFIX)
    cache_budget_mb: float = option(1024.0, "Memory budget of --cache_prefix=auto, in MiB.")
    prefix_mode: str = option(
        "no_tape", "no_tape (the frozen prefix runs outside the gradient tape) or tape (recomputed inside it "
        "every batch, as the paper's reference code does; for benchmarks).", choices=PREFIX_MODES, cli=False)

    def validate(self) -> "RunOptions":
        schema.from_tree(RunOptions, dataclasses.asdict(self))
        if self.steps_per_execution < 0:
            raise ConfigError(f"steps_per_execution must be >= 0 (0: chosen per run), got {self.steps_per_execution}")
        if not self.cache_budget_mb >= 0:
            raise ConfigError(f"cache_budget_mb must be >= 0, got {self.cache_budget_mb}")
        return self

    def replace(self, **changes) -> "RunOptions":
        return schema.from_flat(RunOptions, changes, base=self)
