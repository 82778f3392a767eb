"""The staged network: an ordered list of stages that composes, freezes and runs "up to j".

Every model in the zoo is an ordered list of stages (Keras functional sub-models) plus an
optional final head (Belilovsky et al., ICML 2019, Algorithm 1). The same list serves
layerwise, end-to-end and decoupled training. A stage maps a structure to a structure: most
carry one tensor, the momentum networks carry ``[x_k, x_{k-1}]``; heads always read the
*primary* (first) tensor.
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras

Tensors = "keras.KerasTensor | list[keras.KerasTensor]"
HeadBuilder = Callable[[tuple, int], keras.Model]


def primary(x):
    """The tensor a head reads: the first of a structure, or the tensor itself."""
    return x[0] if isinstance(x, (list, tuple)) else x


def symbolic_inputs_like(model: keras.Model, name_prefix: str = "in"):
    """Fresh ``keras.Input`` tensors with the shapes/dtypes of ``model``'s inputs."""
    made = [
        keras.Input(shape=t.shape[1:], dtype=t.dtype, name=f"{name_prefix}_{i}")
        for i, t in enumerate(model.inputs)
    ]
    return made[0] if len(made) == 1 else made


def freeze(layer: keras.layers.Layer) -> None:
    """Freezes ``layer``: no trainable weights, BatchNormalization in inference mode.

    Keras 3 runs a frozen ``BatchNormalization`` in inference mode even under
    ``training=True``, so its moving statistics stay bit-identical too.
    """
    layer.trainable = False


class StagedNetwork:
    """A network as an ordered list of stages, plus an optional final head.

    Args:
        name: registry name of the model (``layerwise_cnn``, ``vgg11``, ...).
        input_shape: image shape ``(H, W, C)`` without the batch dimension.
        num_classes: number of classes of the final head.
        stages: functional ``keras.Model``s; stage j's inputs match stage j-1's outputs.
        final_head: optional builder ``(feature_shape, num_classes) -> keras.Model`` for the
            head of the complete network (e.g. VGG's 4096-4096 MLP). When ``None`` the
            trainer uses an auxiliary head for the last stage too.
        options: the keyword arguments the builder was called with (for the record).

    Example:
        >>> net = build_model("layerwise_cnn", (28, 28, 1), 10, num_stages=3)
        >>> net.compose(upto=2)  # image -> stage_00 -> stage_01 features
    """

    def __init__(
        self,
        name: str,
        input_shape: Sequence[int],
        num_classes: int,
        stages: Sequence[keras.Model],
        final_head: Callable[[tuple, int], keras.Model] | None = None,
        options: dict | None = None,
    ):
        if not stages:
            raise ValueError("a staged network needs at least one stage")
        self.name = name
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.stages = list(stages)
        self.final_head = final_head
        self.options = dict(options or {})
        # the optimizer the model was compiled with before ``layerwise.split_model`` (``None``:
        # not compiled); ``layerwise.fit`` trains with a fresh copy of it per problem
        self.optimizer: keras.optimizers.Optimizer | None = None

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def output_shape(self, j: int) -> tuple:
        """Shape (no batch dim) of stage j's primary output."""
        return tuple(primary(self.stages[j].outputs).shape[1:])

    def image_input(self) -> keras.KerasTensor:
        return keras.Input(shape=self.input_shape, name="images")

    def run(self, x, start: int = 0, stop: int | None = None, training=None):
        """Applies stages ``start..stop-1`` to the structure ``x`` (symbolic or eager)."""
        for stage in self.stages[start:stop]:
            x = stage(x, training=training) if training is not None else stage(x)
        return x

    def prefix(self, upto: int) -> keras.Model | None:
        """Image -> output structure of stages ``0..upto-1``; ``None`` when ``upto == 0``."""
        if upto == 0:
            return None
        images = self.image_input()
        return keras.Model(images, self.run(images, 0, upto), name=f"prefix_{upto:02d}")

    def compose(self, upto: int | None = None, head: keras.Model | None = None) -> keras.Model:
        """Image -> stages ``0..upto-1`` [-> head on the primary tensor] as one functional model."""
        upto = self.num_stages if upto is None else upto
        images = self.image_input()
        x = self.run(images, 0, upto)
        out = head(primary(x)) if head is not None else x
        return keras.Model(images, out, name=f"{self.name}_upto_{upto:02d}")

    def freeze_below(self, j: int) -> None:
        """Freezes stages ``0..j-1`` and makes stages ``j..`` trainable."""
        for i, stage in enumerate(self.stages):
            stage.trainable = i >= j

    def count_params(self, upto: int | None = None) -> int:
        return sum(s.count_params() for s in self.stages[: self.num_stages if upto is None else upto])
