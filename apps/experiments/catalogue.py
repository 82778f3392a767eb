"""The catalogue of named experiments: ``Experiment``, the ``@experiment`` decorator that
registers a preset, and the table ``python -m apps.train --list_experiments`` prints."""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from layerwise.config import TrainConfig
from layerwise.registry import Registry
from models.local_vgg import LOCAL_VGG_VARIANTS
from models.resnet import IMAGENET_VARIANTS

__all__ = ["EXPERIMENTS", "Experiment", "experiment", "format_table", "get_experiment", "stage_count"]

EXPERIMENTS: Registry = Registry("experiment")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A preset: the config changes over the defaults, and what the paper reports."""

    name: str
    changes: dict
    paper: str  # the paper's number(s), "-" for presets with no published number
    doc: str

    def config(self, base: TrainConfig | None = None) -> TrainConfig:
        return (base or TrainConfig()).replace(**self.changes)


def experiment(name: str, paper: str) -> Callable[[Callable[[], dict]], Callable[[], dict]]:
    """Registers a function returning config changes as the preset ``name``."""

    def add(fn: Callable[[], dict]) -> Callable[[], dict]:
        EXPERIMENTS.register(name, Experiment(name, fn(), paper, (fn.__doc__ or "").strip()))
        return fn

    return add


def get_experiment(name: str) -> Experiment:
    """Raises UnknownNameError (listing the presets) for an unknown name."""
    return EXPERIMENTS.get(name)


def stage_count(config: TrainConfig):
    """J for the table, where the model's options do not say it."""
    options = config.model_options
    if config.local.modules:
        return config.local.modules
    if config.model in LOCAL_VGG_VARIANTS:  # one stage per conv + the hidden fully connected layer
        return sum(1 for item in LOCAL_VGG_VARIANTS[config.model] if item != "M") + 1
    if "num_stages" in options:
        return options["num_stages"]
    if config.model.startswith(("resnet", "plain")) and options.get("stage_granularity") == "group":
        return 5 if int(re.sub(r"\D", "", config.model)) in IMAGENET_VARIANTS else 4  # stem + groups
    if config.model.startswith("alexnet"):
        return 5
    if config.model.startswith("vgg") and options.get("stage_granularity") == "conv":
        return 8
    return "-"


def format_table() -> str:
    """The presets as a markdown table: name, dataset, model, J/M/k, the paper's number."""
    rows = ["| experiment | dataset | model | J | M | k | mode | paper (top-1[/top-5]) |", "|---|---|---|---:|---:|---:|---|---|"]
    for name in EXPERIMENTS.names():
        e = EXPERIMENTS.get(name)
        c = e.config()
        o = c.model_options
        k = "-" if c.mode == "end_to_end" else c.heads.conv_layers + 1
        rows.append(
            f"| {name} | {c.dataset} | {c.model} | {stage_count(c)} | {o.get('width', '-')} | "
            f"{k} | {c.mode} | {e.paper} |"
        )
    return "\n".join(rows)
