"""The model registry: ``name -> builder(input_shape, num_classes, **options) -> StagedNetwork``."""

from __future__ import annotations

from typing import Sequence

from layerwise.registry import Registry
from layerwise.staging import StagedNetwork

MODELS: Registry = Registry("model")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
    """Builds the registered model ``name`` as a :class:`StagedNetwork`.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: the options are impossible for this input (e.g. too many downsamplings).
    """
    import models  # noqa: F401  (registers every family)

    return MODELS.get(name)(tuple(input_shape), num_classes, **options)
