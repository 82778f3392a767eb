"""The run configuration: one frozen, validated object that the whole library reads.

Every field is declared once, with its type, default and help (``layerwise.config.schema``): the
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

from layerwise.config.applicable import check_applicable
from layerwise.config.groups import (
    AUGMENTATIONS, CUSTOM_LOSS, EVAL_CROPS, MODES, ON_NAN, PRECISIONS, STAGE_FIELDS,
    HeadsConfig, LocalConfig, OptimConfig, PruningConfig, RefitConfig, ScheduleConfig, check_head_shape,
)
from layerwise.config.schema import flatten, from_flat, from_tree, option, to_tree
from layerwise.errors import ConfigError, did_you_mean

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
        from_tree(TrainConfig, self.to_dict())  # types and choices
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
        return json.loads(json.dumps(to_tree(self)))

    def flat(self) -> dict[str, Any]:
        """``{flat name: value}``: the names of the flags and of ``layerwise.fit``'s options."""
        return flatten(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """A config from its JSON form; flat names (the pre-group form of ``config.json``, or
        flags) are accepted too. Missing fields take their defaults.

        Raises:
            ConfigError: an unknown field or a value of the wrong type.
        """
        if not isinstance(values, dict):
            raise ConfigError(f"a config must be a JSON object of fields, got {type(values).__name__}")
        return from_flat(cls, values)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` applied, by flat name (``lr=0.1``) or whole group (``optim=...``).

        Raises:
            ConfigError: an unknown name or a value of the wrong type.
        """
        return from_flat(TrainConfig, changes, base=self)
