"""Training problems: what one optimisation trains, and the heads and ensemble around them.

Belilovsky, Eickenberg & Oyallon (ICML 2019), Algorithm 1: problem j trains stage j with a fresh
auxiliary head on top of the frozen stages 0..j-1; the end-to-end baseline trains every stage
with the last head. These builders are pure functions of a :class:`StagedNetwork` and heads, so
training (``layerwise.training.trainer``) and restoring a finished run (``layerwise.restore``)
build exactly the same models, with the same variables in the same order.

Problem names are made by :func:`stage_name` (``stage_03``) and the constants :data:`END_TO_END`
and :data:`DECOUPLED`; they name checkpoint folders, log records and servables.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import keras
import numpy as np

from layerwise.data.base import derive_seed
from layerwise.errors import ConfigError
from layerwise.distribute import synchronize_batchnorm
from layerwise.run import checkpoints as ckpt
from layerwise.config import TrainConfig
from layerwise.nn.heads import AuxHead, config_heads
from layerwise.training.local_losses import (
    LOGITS,
    LocalLoss,
    Pred,
    WithAuxiliaryTerms,
    config_local_loss,
)
from layerwise.nn.network import StagedNetwork, primary, symbolic_inputs_like
from layerwise.nn.training_layers import StopGradient

END_TO_END = "end_to_end"
DECOUPLED = "decoupled"
HeadBuilder = Callable[..., keras.Model]


def stage_name(j: int) -> str:
    """The name of stage ``j``'s problem, checkpoints and servable suffix: ``stage_03``."""
    return f"stage_{j:02d}"


@dataclasses.dataclass
class Problem:
    """One optimisation problem: a trainable part on top of an optional frozen prefix.

    Attributes:
        name: ``stage_03``, ``end_to_end`` or ``decoupled``.
        stage: index of the last stage the problem's head reads.
        trainable: stage j + its head, or the whole network (images -> logits).
        frozen: images -> input of the trainable part (``None``: starts at the images).
        epochs: epochs to train.
        stretch: LR-schedule stretch (end to end trains J times longer, same profile).
        first_epoch: the run-wide index of the problem's first epoch (callbacks, TensorBoard).
        objective: a local loss (``layerwise.training.local_losses``) of ``trainable``'s outputs
            (``{"logits": ..., training-only outputs}``); ``None``: the cross-entropy of its logits.
        logits_model: the trainable part without its training-only outputs (inputs -> logits),
            where ``objective`` is set.
    """

    name: str
    stage: int
    trainable: keras.Model
    frozen: keras.Model | None
    epochs: int
    stretch: int = 1
    first_epoch: int = 0
    objective: LocalLoss | None = None
    logits_model: keras.Model | None = None

    def classifier(self, image_input: keras.KerasTensor) -> keras.Model:
        """Images -> logits: the frozen prefix, then the trainable part (its classification head only)."""
        x = image_input if self.frozen is None else self.frozen(image_input)
        return keras.Model(image_input, self.logits_part()(x), name=f"{self.name}_classifier")

    def logits_part(self) -> keras.Model:
        """The frozen prefix's outputs -> logits: the trainable part, or its classification head
        only (``logits_model``)."""
        return self.trainable if self.logits_model is None else self.logits_model


PROBE_IMAGES = 4


def load_finished(problem: Problem, checkpoints: ckpt.ProblemCheckpoints,
                  image_input: keras.KerasTensor) -> tuple[dict[str, np.ndarray], dict]:
    """Loads a finished problem's ``final.npz`` into ``problem.trainable``, and keeps it only when
    its classifier gives finite logits (inference mode, BatchNorm on its moving statistics) for a
    fixed batch of images in [-1, 1]: finite weights can still overflow (a kernel of 1e30 two
    layers deep), and such a stage would be exported and served as NaN probabilities.

    Returns:
        The file's arrays and metadata.

    Raises:
        CorruptCheckpointError: unreadable, non-finite or impossible values
            (:func:`layerwise.run.checkpoints.load_arrays`), or non-finite outputs; the variables
            are then left as they were, so the problem can be trained again.
    """
    arrays, meta = checkpoints.load_final()
    before = ckpt.variables_to_arrays("model", problem.trainable.variables)
    ckpt.assign_arrays("model", problem.trainable.variables, arrays, checkpoints.final_path)
    probe = np.random.default_rng(0).uniform(-1.0, 1.0, (PROBE_IMAGES, *image_input.shape[1:])).astype("float32")
    outputs = keras.tree.flatten(problem.classifier(image_input)(probe, training=False))
    if not all(np.all(np.isfinite(keras.ops.convert_to_numpy(o))) for o in outputs):
        ckpt.assign_arrays("model", problem.trainable.variables, before, "the variables before loading")
        raise ckpt.CorruptCheckpointError(
            f"checkpoint {checkpoints.final_path} holds finite values whose outputs are NaN or infinite "
            f"(the logits of {PROBE_IMAGES} probe images): no training writes such a stage"
        )
    return arrays, meta


@dataclasses.dataclass(frozen=True)
class HeadPlan:
    """Which head each stage trains with.

    Attributes:
        aux: the auxiliary head of every stage (an :class:`AuxHead` or any
            ``(feature_shape, num_classes) -> keras.Model``).
        final_aux: the last stage's auxiliary head when it differs (``None``: ``aux``); a network
            with its own final head (VGG's MLP, a split Keras model's classifier) uses that instead.
        seed: run seed; each head is initialised from ``derive_seed(seed, 1, j)``.
        sync_batchnorm: BatchNorm statistics over all replicas.
        local_loss: what each stage minimises (``layerwise.training.local_losses``); its
            training-only layers are initialised from ``derive_seed(seed, 3, j)``.
        fit_features: an :class:`AuxHead` turns linear (``k=1``) on a stage whose features are
            too small for its 3x3 convs (:meth:`AuxHead.fitted_to`; the configured heads, what
            ``fit`` builds when ``head`` is not given); ``False``: such a stage is refused.
        per_stage: ``(aux, final_aux)`` of each stage where the config gives stages heads of their
            own (``TrainConfig.stage_overrides``); empty: ``aux`` and ``final_aux`` for every stage.
    """

    aux: HeadBuilder = AuxHead()
    final_aux: HeadBuilder | None = None
    seed: int = 0
    sync_batchnorm: bool = False
    local_loss: LocalLoss = Pred()
    fit_features: bool = True
    per_stage: tuple = ()

    @classmethod
    def from_config(cls, config: TrainConfig, aux: HeadBuilder | None = None,
                    local_loss: LocalLoss | None = None) -> "HeadPlan":
        """The heads and the local loss ``config`` asks for (``--aux_conv_layers``, ``--aux_width``,
        ``--local_loss``, ...).

        Args:
            config: the run's configuration.
            aux: the head builder of every stage, instead of the one ``config`` records (the
                object itself, where ``config`` holds its serialised form).
            local_loss: the same for the local loss.

        Raises:
            ConfigError: a recorded object that cannot be rebuilt.
        """
        head, final = (aux, None) if aux is not None else config_heads(config)
        loss = local_loss if local_loss is not None else config_local_loss(config)
        per_stage = () if aux is not None else tuple(
            config_heads(config.for_stage(j)) for j in range(len(config.stage_overrides)))
        return cls(head, final, config.seed, config.sync_batchnorm, loss, per_stage=per_stage)

    def configured(self, network: StagedNetwork, j: int) -> HeadBuilder:
        """Stage ``j``'s auxiliary head as configured (before :meth:`builder` fits it to the features)."""
        aux, final = self.per_stage[j] if j < len(self.per_stage) else (self.aux, self.final_aux)
        return (final or aux) if j == network.num_stages - 1 else aux

    def builder(self, network: StagedNetwork, j: int) -> HeadBuilder | None:
        """Stage ``j``'s head builder; ``None`` where the network brings its own final head."""
        if j == network.num_stages - 1 and network.final_head is not None:
            return None
        head = self.configured(network, j)
        if self.fit_features and isinstance(head, AuxHead):
            return head.fitted_to(network.output_shape(j))
        return head

    def check(self, network: StagedNetwork, stages: Sequence[int]) -> None:
        """Every auxiliary head of ``stages`` fits its features (before anything trains).

        Raises:
            ConfigError: e.g. k > 1 on a 1x1 map (``fit_features=False``), or a head of its own for
                the last stage (``final_aux_width``) where the network brings its own classifier.
        """
        own_final = self.final_aux is not None and self.final_aux != self.aux
        if own_final and network.final_head is not None and network.num_stages - 1 in stages:
            raise ConfigError(
                f"final_aux_width applies where the last stage trains an auxiliary head, but {network.name!r} ends in "
                "its own classifier, which the last stage trains with: drop final_aux_width"
            )
        for j in stages:
            head = self.builder(network, j)
            if isinstance(head, AuxHead):
                head.validate().check_fits(network.output_shape(j), f"stage {j}")

    def linear_stages(self, network: StagedNetwork, stages: Sequence[int]) -> list[int]:
        """The stages of ``stages`` whose :class:`AuxHead` turned linear to fit their features."""
        configured = [self.configured(network, j) for j in stages]
        return [j for j, head in zip(stages, configured)
                if isinstance(head, AuxHead) and self.builder(network, j) not in (None, head)]

    def build(self, network: StagedNetwork, j: int) -> keras.Model:
        """A fresh head for stage ``j``, seeded by the run seed and ``j`` (build it under the
        strategy's scope)."""
        keras.utils.set_random_seed(derive_seed(self.seed, 1, j))
        shape, classes = network.output_shape(j), network.num_classes
        builder = self.builder(network, j)
        if builder is None:
            head = network.final_head(shape, classes)
        elif isinstance(builder, AuxHead):
            head = builder(shape, classes, name=f"head_{j:02d}")
        else:
            head = builder(shape, classes)
        if self.sync_batchnorm:
            synchronize_batchnorm(head)
        return head

    def objective(self, network: StagedNetwork, j: int) -> LocalLoss | None:
        """Stage ``j``'s local loss; ``None`` for plain cross-entropy through its head (the paper's)."""
        loss = self.local_loss.for_stage(j, network.num_stages)
        return None if loss.plain else loss

    def extras(self, network: StagedNetwork, j: int) -> keras.Model | None:
        """Stage ``j``'s training-only layers (features -> named outputs), freshly seeded, or ``None``."""
        loss = self.objective(network, j)
        if loss is None:
            return None
        keras.utils.set_random_seed(derive_seed(self.seed, 3, j))
        extras = loss.head(network.output_shape(j), network.num_classes, network.input_shape, name=f"local_{j:02d}")
        if extras is not None and self.sync_batchnorm:
            synchronize_batchnorm(extras)
        return extras

    def auxiliary(self, network: StagedNetwork) -> list["AuxiliaryTerm"]:
        """The auxiliary terms of an end-to-end run: every stage but the last with its head, extras
        and local loss; none with the plain local loss (the end-to-end baseline)."""
        return [AuxiliaryTerm(j, self.build(network, j), self.extras(network, j), self.objective(network, j))
                for j in range(network.num_stages - 1) if self.objective(network, j) is not None]


@dataclasses.dataclass
class AuxiliaryTerm:
    """A stage's local loss added to the end-to-end objective: the stage, its head, its
    training-only layers and its loss."""

    stage: int
    head: keras.Model
    extras: keras.Model | None
    objective: LocalLoss


def local_outputs(features, head: keras.Model, extras: keras.Model | None, objective: LocalLoss, j: int) -> dict:
    """``{"logits": head(features), **extras(features)}`` of stage ``j``; the head reads detached
    features when the objective trains it apart from the module."""
    head_input = StopGradient(name=f"{stage_name(j)}_detached")(features) if objective.detach_head else features
    outputs = {LOGITS: head(head_input)}
    if extras is not None:
        outputs.update(extras(features))
    return outputs


def stage_problem(network: StagedNetwork, j: int, head: keras.Model, epochs: int,
                  extras: keras.Model | None = None, objective: LocalLoss | None = None,
                  first_epoch: int | None = None) -> Problem:
    """Stage ``j`` with ``head`` on top of the frozen stages ``0..j-1`` (frozen here); with a local
    ``objective``, the trainable part outputs the head's logits and ``extras``' outputs.
    ``first_epoch``: the run-wide index of its first epoch (default ``j * epochs``: every stage
    trains as long)."""
    network.freeze_below(j)
    first_epoch = j * epochs if first_epoch is None else first_epoch
    stage = network.stages[j]
    inputs = symbolic_inputs_like(stage, f"{stage_name(j)}_input")
    if objective is None:
        trainable = keras.Model(inputs, head(primary(stage(inputs))), name=f"{stage_name(j)}_problem")
        return Problem(stage_name(j), j, trainable, network.prefix(j), epochs, first_epoch=first_epoch)
    outputs = local_outputs(primary(stage(inputs)), head, extras, objective, j)
    trainable = keras.Model(inputs, outputs, name=f"{stage_name(j)}_problem")
    logits = keras.Model(inputs, outputs[LOGITS], name=f"{stage_name(j)}_logits")
    return Problem(stage_name(j), j, trainable, network.prefix(j), epochs, first_epoch=first_epoch,
                   objective=objective, logits_model=logits)


def end_to_end_problem(network: StagedNetwork, head: keras.Model, epochs_per_stage: int,
                       auxiliary: Sequence[AuxiliaryTerm] = ()) -> Problem:
    """Every stage and the last head, trained together for ``J x epochs_per_stage`` epochs; with
    ``auxiliary`` terms, their local losses are added to the network's cross-entropy."""
    network.freeze_below(0)
    epochs = epochs_per_stage * network.num_stages
    if not auxiliary:
        return Problem(END_TO_END, network.num_stages - 1, network.compose(head=head), None, epochs,
                       stretch=network.num_stages)
    images = network.image_input()
    x, outputs, terms = images, {}, []
    by_stage = {term.stage: term for term in auxiliary}
    for j, stage in enumerate(network.stages):
        x = stage(x)
        if j in by_stage:
            term = by_stage[j]
            prefix = f"{stage_name(j)}/"
            own = local_outputs(primary(x), term.head, term.extras, term.objective, j)
            outputs.update({prefix + key: value for key, value in own.items()})
            terms.append((prefix, term.objective))
    outputs[LOGITS] = head(primary(x))
    trainable = keras.Model(images, outputs, name=f"{network.name}_{END_TO_END}_problem")
    logits = keras.Model(images, outputs[LOGITS], name=f"{network.name}_{END_TO_END}_logits")
    return Problem(END_TO_END, network.num_stages - 1, trainable, None, epochs, stretch=network.num_stages,
                   objective=WithAuxiliaryTerms(tuple(terms)), logits_model=logits)


def decoupled_models(network: StagedNetwork, heads: Sequence[keras.Model],
                     extras: Sequence[keras.Model | None] | None = None,
                     objectives: Sequence[LocalLoss | None] | None = None) -> list[keras.Model]:
    """Stage j + its head as ``inputs -> [stage output, logits]``, for every stage (Decoupled
    Greedy Learning: each trains on the detached output of the one before). Where stage j has a
    local objective, its second output is ``{"logits": ..., training-only outputs}``."""
    network.freeze_below(0)
    objectives = list(objectives) if objectives is not None else [None] * network.num_stages
    extras = list(extras) if extras is not None else [None] * network.num_stages
    models = []
    for j, (stage, head) in enumerate(zip(network.stages, heads)):
        inputs = symbolic_inputs_like(stage, f"{stage_name(j)}_input")
        out = stage(inputs)
        if objectives[j] is None:
            second = head(primary(out))
        else:
            second = local_outputs(primary(out), head, extras[j], objectives[j], j)
        models.append(keras.Model(inputs, [out, second], name=f"{stage_name(j)}_decoupled"))
    return models


def ensemble_weights(members: int) -> np.ndarray:
    """The paper's ensemble weights 2^j / sum_k 2^k of ``members`` stages."""
    weights = np.array([2.0**j for j in range(members)])
    return weights / weights.sum()


def ensemble_probabilities(per_stage: Sequence[np.ndarray]) -> np.ndarray:
    """The paper's ensemble Z = sum_j 2^j z_j / sum_j 2^j over stage probabilities.

    Averaging probabilities (rather than logits) keeps every member on the same scale; the
    weights favour deeper, more accurate stages.
    """
    return sum(w * p for w, p in zip(ensemble_weights(len(per_stage)), per_stage))


class Ensemble:
    """The test-set probabilities of every finished stage, in stage order, and their ensemble."""

    def __init__(self):
        self.members: list[np.ndarray] = []

    def add(self, probabilities: np.ndarray) -> None:
        self.members.append(probabilities)

    def replace_last(self, probabilities: np.ndarray) -> None:
        """Replaces the newest member (e.g. by the pruned and fine-tuned stage's predictions)."""
        self.members[-1] = probabilities

    def probabilities(self) -> np.ndarray:
        return ensemble_probabilities(self.members)
