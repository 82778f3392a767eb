"""The model registry: ``name -> builder(input_shape, num_classes, **options) -> StagedNetwork``."""

from __future__ import annotations

import inspect
from typing import Sequence

from layerwise.errors import ConfigError
from layerwise.registry import Registry
from layerwise.nn.network import StagedNetwork

MODELS: Registry = Registry("model")


def forward_signature(builder, target, fixed: tuple[str, ...]) -> None:
    """Gives a wrapper ``builder(input_shape, num_classes, **options)`` the signature of
    ``target`` minus the ``fixed`` arguments it sets itself, so :func:`resolve_options` can list
    and check the options (an unknown option is then a ConfigError, not a TypeError)."""
    signature = inspect.signature(target)
    params = [p for name, p in signature.parameters.items() if name not in fixed]
    builder.__signature__ = signature.replace(parameters=params)


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **options) -> StagedNetwork:
    """Builds the registered model ``name`` as a :class:`StagedNetwork`.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: the options are impossible for this input (e.g. too many downsamplings).
    """
    builder = MODELS.get(name)
    return builder(tuple(input_shape), num_classes, **resolve_options(name, options))


def resolve_options(name: str, options: dict) -> dict:
    """``options`` completed with the builder's defaults, checked against its signature.

    Raises:
        UnknownNameError: ``name`` is not registered.
        ConfigError: an option the builder does not take.
    """
    builder = MODELS.get(name)
    params = list(inspect.signature(builder).parameters.values())[2:]
    known = {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD}
    unknown = sorted(set(options) - set(known))
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    if unknown and not takes_any:
        raise ConfigError(
            f"model {name!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(known) or 'none'}"
        )
    optional = {p.name for p in params if "None" in str(p.annotation)}  # e.g. ``int | None``
    for key, value in options.items():
        if key in known and not (value is None and key in optional):
            _check_type(name, key, value, known[key])
    resolved = {**known, **options}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in resolved.items()}


_KINDS = ((bool, (bool,), "true or false"), (int, (int,), "an integer"), (float, (int, float), "a number"),
          (str, (str,), "a string"), ((list, tuple), (list, tuple), "a list"))


def _check_type(model: str, key: str, value, default) -> None:
    """A model option must have the type of its default (``width=abc`` for ``width=64`` is a
    ConfigError, not a TypeError deep in the builder); options defaulting to ``None`` take anything."""
    for kind, accepted, wanted in _KINDS:
        if isinstance(default, kind):
            if isinstance(value, accepted) and (kind is bool or not isinstance(value, bool)):
                return
            raise ConfigError(
                f"model {model!r} option {key} must be {wanted} (default {default!r}), got {value!r}"[:300]
            )
