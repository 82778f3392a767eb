"""Config fields written once: type, default and help text, from which flags and checks derive.

A config is a frozen dataclass (with nested dataclasses as groups); each field is declared with
:func:`option`, which stores its help text, its accepted values and, for a field inside a group,
its *flat name* (the command-line flag, e.g. ``--aux_width`` for ``heads.width``). Flat names are
unique across a config, so ``config.replace(lr=0.1)``, ``layerwise.fit(..., lr=0.1)`` and
``--lr 0.1`` all name the same field. ``apps`` generates its flags from :func:`leaves`.

Example:
    >>> @dataclasses.dataclass(frozen=True)
    ... class Optim:
    ...     lr: float = option(0.05, "Learning rate.", flag="lr")
    >>> [leaf.flag for leaf in leaves(Optim)]
    ['lr']
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Sequence

from layerwise.errors import ConfigError


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    factory: Any = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its documentation.

    Args:
        default: the default value (or use ``factory`` for mutable defaults).
        help: one or two sentences for ``--help`` and the docs.
        flag: the field's flat name when it lives in a group (its command-line flag).
        choices: the accepted values (checked by :func:`check_types`).
        factory: a default factory (lists, dicts).
        cli: False for fields that get no generated flag.
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """One configurable value: its flat name, its place (``("heads", "width")``) and its type."""

    flag: str
    path: tuple[str, ...]
    type: Any
    default: Any
    help: str
    choices: tuple | None
    cli: bool


def _is_group(kind: Any) -> bool:
    return isinstance(kind, type) and dataclasses.is_dataclass(kind)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def leaves(cls: type, prefix: tuple[str, ...] = ()) -> list[Leaf]:
    """Every leaf field of the config class ``cls``, groups expanded, in declaration order."""
    hints = typing.get_type_hints(cls)
    out = []
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        if _is_group(kind):
            out += leaves(kind, prefix + (field.name,))
            continue
        meta = field.metadata
        flag = meta.get("flag") or (field.name if not prefix else None)
        if flag is None:
            raise TypeError(f"{cls.__name__}.{field.name} lives in a group and needs option(flag=...)")
        out.append(Leaf(flag, prefix + (field.name,), kind, _default(field), meta.get("help", ""),
                        meta.get("choices"), meta.get("cli", True)))
    return out


def flat_names(cls: type) -> dict[str, Leaf]:
    """``{flat name: leaf}`` of ``cls``."""
    return {leaf.flag: leaf for leaf in leaves(cls)}


def _type_name(kind: Any) -> str:
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind) or (Any,)
        return f"a list of {getattr(item, '__name__', 'values')}s"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object"}.get(
        kind, str(kind)
    )


def coerce(leaf: Leaf, value: Any) -> Any:
    """``value`` as the leaf's type, or a ConfigError naming the field and what it takes.

    Integers are accepted for floats; nothing else is converted (a JSON ``"8"`` for an integer,
    ``8.5`` for a batch size, ``null`` or ``true`` for a number are errors).
    """
    kind, origin = leaf.type, typing.get_origin(leaf.type)

    def wrong() -> ConfigError:
        return ConfigError(f"{leaf.flag} must be {_type_name(kind)}, got {value!r}"[:300])

    if kind is bool:
        if not isinstance(value, bool):
            raise wrong()
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        value = float(value)
        if math.isnan(value):
            raise ConfigError(f"{leaf.flag} must be a number, got NaN")
    elif kind is str:
        if not isinstance(value, str):
            raise wrong()
    elif kind is dict:
        if not isinstance(value, dict):
            raise wrong()
    elif origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, (list, tuple)):
            raise wrong()
        if item is int and any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise wrong()
        value = list(value)
    if leaf.choices is not None and value not in leaf.choices:
        raise ConfigError(f"unknown {leaf.flag} {value!r}; choose one of: {', '.join(map(str, leaf.choices))}")
    return value


def from_flat(cls: type, values: dict[str, Any], base: Any = None) -> Any:
    """An instance of ``cls`` (or ``base`` changed) from flat names, type-checked.

    Top-level groups may also be given whole, as nested dicts or instances.

    Raises:
        ConfigError: an unknown name (the message lists the known ones) or a value of the
            wrong type.
    """
    by_flag = flat_names(cls)
    groups = {f.name for f in dataclasses.fields(cls) if _is_group(typing.get_type_hints(cls)[f.name])}
    unknown = sorted(set(values) - set(by_flag) - groups)
    if unknown:
        raise ConfigError(f"unknown config fields {unknown}; known: {', '.join(sorted(by_flag))}")
    tree = to_tree(base) if base is not None else {}
    for name in groups & set(values):
        group = values[name]
        group = to_tree(group) if dataclasses.is_dataclass(group) else group
        if not isinstance(group, dict):
            raise ConfigError(f"{name} must be an object of fields, got {group!r}"[:300])
        tree[name] = {**tree.get(name, {}), **group}
    for flag, value in values.items():
        if flag in by_flag:
            leaf = by_flag[flag]
            node = tree
            for key in leaf.path[:-1]:
                node = node.setdefault(key, {})
            node[leaf.path[-1]] = value
    return from_tree(cls, tree)


def from_tree(cls: type, tree: dict[str, Any], where: str = "") -> Any:
    """An instance of ``cls`` from nested dicts (the JSON form), type-checked; missing fields
    take their defaults.

    Raises:
        ConfigError: an unknown field or a value of the wrong type.
    """
    if not isinstance(tree, dict):
        raise ConfigError(f"{where or 'the config'} must be an object of fields, got {tree!r}"[:300])
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(tree) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config fields {[where + u for u in unknown]}; known: {', '.join(sorted(fields))}")
    by_path = {leaf.path[-1]: leaf for leaf in leaves(cls) if len(leaf.path) == 1}
    values = {}
    for name, value in tree.items():
        kind = hints[name]
        if _is_group(kind):
            values[name] = value if isinstance(value, kind) else from_tree(kind, value, f"{where}{name}.")
        else:
            values[name] = coerce(by_path[name], value)
    return cls(**values)


def missing_fields(cls: type, values: dict[str, Any]) -> list[str]:
    """The flat names of the leaf fields of ``cls`` that ``values`` does not hold, in the nested
    (JSON) form or by flat name (the pre-group form): what :func:`from_tree` would default."""
    missing = []
    for leaf in leaves(cls):
        node: Any = values
        for key in leaf.path:
            node = node.get(key, _ABSENT) if isinstance(node, dict) else _ABSENT
        if node is _ABSENT and leaf.flag not in values:
            missing.append(leaf.flag)
    return missing


_ABSENT = object()


def to_tree(config: Any) -> dict[str, Any]:
    """The nested-dict (JSON) form of a config instance."""
    return dataclasses.asdict(config)


def flatten(config: Any) -> dict[str, Any]:
    """``{flat name: value}`` of a config instance."""
    out = {}
    for leaf in leaves(type(config)):
        value = config
        for key in leaf.path:
            value = getattr(value, key)
        out[leaf.flag] = value
    return out
