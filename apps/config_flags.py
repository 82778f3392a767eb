"""Flags generated from a config dataclass: each field's name, type, default and help, once.

``define(TrainConfig)`` defines one absl flag per leaf field (``--lr``, ``--aux_width``, ...) with
the field's help text and ``[default: ...]``; every flag defaults to ``None`` so that
:func:`given` can tell the flags a user typed from the ones left alone (precedence: defaults ->
preset -> ``--config`` file -> flags). ``layerwise.config.schema`` holds the declarations.
"""

from __future__ import annotations

import typing
from typing import Any

from absl import flags

from layerwise.errors import ConfigError
from layerwise.config import schema

FLAGS = flags.FLAGS


def define(cls: type, skip: tuple[str, ...] = ()) -> list[str]:
    """Defines a flag for every command-line leaf of ``cls`` (not in ``skip``); returns their names."""
    names = []
    for leaf in schema.leaves(cls):
        if not leaf.cli or leaf.flag in skip:
            continue
        names.append(leaf.flag)
        if leaf.flag in FLAGS:  # the defining app imported a second time (flags are global per process)
            continue
        shown = ",".join(map(str, leaf.default)) if isinstance(leaf.default, list) else leaf.default
        help_text = f"{leaf.help} [default: {shown if shown != '' else 'none'}]"
        if leaf.type is bool:
            flags.DEFINE_boolean(leaf.flag, None, help_text)
        elif leaf.type is int:
            flags.DEFINE_integer(leaf.flag, None, help_text)
        elif leaf.type is float:
            flags.DEFINE_float(leaf.flag, None, help_text)
        elif typing.get_origin(leaf.type) is list:
            flags.DEFINE_list(leaf.flag, None, help_text)
        else:  # choices are checked with the config, whose message lists them
            flags.DEFINE_string(leaf.flag, None, help_text)
    return names


def given(cls: type) -> dict[str, Any]:
    """``{flat name: value}`` of the flags of ``cls`` given on the command line, typed.

    Raises:
        ConfigError: a list flag with a value of the wrong type (e.g. ``--lr_milestones 1,x``).
    """
    values = {}
    for leaf in schema.leaves(cls):
        if leaf.flag not in FLAGS or FLAGS[leaf.flag].value is None:
            continue
        value = FLAGS[leaf.flag].value
        if typing.get_origin(leaf.type) is list:
            (item,) = typing.get_args(leaf.type)
            try:
                value = [item(v) for v in value if v != ""]
            except ValueError:
                raise ConfigError(
                    f"--{leaf.flag} takes a comma-separated list of {item.__name__}s, got {','.join(value)}"
                ) from None
        values[leaf.flag] = value
    return values
