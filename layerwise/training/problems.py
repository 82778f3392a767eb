"""Training problems: what one optimisation trains, and the heads and ensemble around them.

Belilovsky, Eickenberg & Oyallon (ICML 2019), Algorithm 1: problem j trains stage j with a fresh
auxiliary head on top of the frozen stages 0..j-1; the end-to-end baseline trains every stage
with the last head. These builders are pure functions of a :class:`StagedNetwork` and heads, so
training (``layerwise.training.trainer``) and restoring a finished run (``layerwise.run.restore``)
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
from layerwise.distribute import synchronize_batchnorm
from layerwise.run.config import TrainConfig
from layerwise.training.heads import AuxHead, config_heads
from layerwise.training.network import StagedNetwork, primary, symbolic_inputs_like

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
    """

    name: str
    stage: int
    trainable: keras.Model
    frozen: keras.Model | None
    epochs: int
    stretch: int = 1
    first_epoch: int = 0

    def classifier(self, image_input: keras.KerasTensor) -> keras.Model:
        """Images -> logits: the frozen prefix, then the trainable part."""
        x = image_input if self.frozen is None else self.frozen(image_input)
        return keras.Model(image_input, self.trainable(x), name=f"{self.name}_classifier")


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
    """

    aux: HeadBuilder = AuxHead(k=2, width=128)
    final_aux: HeadBuilder | None = None
    seed: int = 0
    sync_batchnorm: bool = False

    @classmethod
    def from_config(cls, config: TrainConfig) -> "HeadPlan":
        """The heads ``config`` asks for (``--aux_conv_layers``, ``--aux_width``, ...)."""
        head, final = config_heads(config)
        return cls(head, final, config.seed, config.sync_batchnorm)

    def builder(self, network: StagedNetwork, j: int) -> HeadBuilder | None:
        """Stage ``j``'s head builder; ``None`` where the network brings its own final head."""
        last = j == network.num_stages - 1
        if last and network.final_head is not None:
            return None
        return (self.final_aux or self.aux) if last else self.aux

    def check(self, network: StagedNetwork, stages: Sequence[int]) -> None:
        """Every auxiliary head of ``stages`` fits its features (before anything trains).

        Raises:
            ConfigError: e.g. k > 1 on a 1x1 map.
        """
        for j in stages:
            head = self.builder(network, j)
            if isinstance(head, AuxHead):
                head.validate().check_fits(network.output_shape(j), f"stage {j}")

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


def stage_problem(network: StagedNetwork, j: int, head: keras.Model, epochs: int) -> Problem:
    """Stage ``j`` with ``head`` on top of the frozen stages ``0..j-1`` (frozen here)."""
    network.freeze_below(j)
    stage = network.stages[j]
    inputs = symbolic_inputs_like(stage, f"{stage_name(j)}_input")
    trainable = keras.Model(inputs, head(primary(stage(inputs))), name=f"{stage_name(j)}_problem")
    return Problem(stage_name(j), j, trainable, network.prefix(j), epochs, first_epoch=j * epochs)


def end_to_end_problem(network: StagedNetwork, head: keras.Model, epochs_per_stage: int) -> Problem:
    """Every stage and the last head, trained together for ``J x epochs_per_stage`` epochs."""
    network.freeze_below(0)
    epochs = epochs_per_stage * network.num_stages
    return Problem(END_TO_END, network.num_stages - 1, network.compose(head=head), None, epochs,
                   stretch=network.num_stages)


def decoupled_models(network: StagedNetwork, heads: Sequence[keras.Model]) -> list[keras.Model]:
    """Stage j + its head as ``inputs -> [stage output, logits]``, for every stage (Decoupled
    Greedy Learning: each trains on the detached output of the one before)."""
    network.freeze_below(0)
    models = []
    for j, (stage, head) in enumerate(zip(network.stages, heads)):
        inputs = symbolic_inputs_like(stage, f"{stage_name(j)}_input")
        out = stage(inputs)
        models.append(keras.Model(inputs, [out, head(primary(out))], name=f"{stage_name(j)}_decoupled"))
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
