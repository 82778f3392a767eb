"""The configuration's groups and choices: heads, optimizer, schedule, pruning, refit, local loss.

Each group is a frozen dataclass whose fields are declared once (``layerwise.config.schema``):
their flat names are the command-line flags and ``layerwise.fit``'s options; ``TrainConfig``
(``layerwise.config.train``) holds one of each. The tuples of choices here are what the fields
accept. Imports nothing of TensorFlow or Keras, so every app's ``--help`` answers at once.
"""

from __future__ import annotations

import dataclasses

from layerwise.config.schema import option
from layerwise.errors import ConfigError

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
# which stage steps when, in the asynchronous decoupled mode (layerwise.training.replay)
REPLAY_SCHEDULES = ("random", "rounds")
# fields layerwise.fit fills from the data where a run leaves them empty (then recorded): a check
# of a workdir before the data is read cannot compare them yet (layerwise.run.workdir)
FILLED_FROM_DATA = ("infopro_image_mean", "infopro_image_std")


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
    infopro_image_mean: list[float] = option(
        factory=list, help="infopro: the per-channel mean the data was normalised with, on the 0-1 pixel scale: the "
        "reconstruction target is the de-normalised image, as the authors' _image_restore. Filled from the data "
        "by layerwise.fit and recorded, so a resumed run uses the same; empty: the min-max stretched image.",
        flag="infopro_image_mean", cli=False)
    infopro_image_std: list[float] = option(
        factory=list, help="infopro: the per-channel std of that normalisation (see infopro_image_mean).",
        flag="infopro_image_std", cli=False)
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
    replay_schedule: str = option(
        "random", "--replay_buffer: which stage steps when: random (DGL's asynchronous runs: one stage drawn per "
        "iteration, in proportion to its --stage_step_ratios, until stage 0 takes the next batch) or rounds (each "
        "stage its ratio's steps per batch, in order).", flag="replay_schedule", choices=REPLAY_SCHEDULES)
    step_ratios: list[float] = option(
        factory=list, help="--replay_buffer: steps of each stage per training batch (on average: --replay_schedule random), e.g. 1,2,0.5 (stage 0 takes "
        "exactly 1: it reads the data); empty: 1 for every stage.", flag="stage_step_ratios")
