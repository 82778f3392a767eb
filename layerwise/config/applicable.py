"""Options that apply only with another: set where they do nothing, they are refused.

A configuration field that changes nothing in a run (``predsim_beta`` with ``local_loss="pred"``,
``plateau_patience`` with the step schedule, ``aux_dropout`` with no hidden layer for it to precede)
is an option the user believes trained, and the run's ``config.json`` would say it did. Every
such field given a value other than its default is refused in one line that names it and what it
needs, the way ``lr_milestones`` without ``lr_schedule=multistep`` always was.

Example:
    >>> check_applicable({"local_loss": "pred", "predsim_beta": 0.5, ...}, TrainConfig().flat())
    ConfigError: predsim_beta is set (0.5) but applies with local_loss='predsim' only: ...
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from layerwise.errors import ConfigError

__all__ = ["DEPENDENT", "check_applicable"]

Flat = Mapping[str, Any]


def _loss_is(name: str) -> tuple[Callable[[Flat], bool], str]:
    return (lambda c: c["local_loss"] == name), f"local_loss={name!r}"


INFOPRO = _loss_is("infopro")
# field -> (does it apply to this configuration?, what it needs, in option words)
DEPENDENT: dict[str, tuple[Callable[[Flat], bool], str]] = {
    "aux_dropout": (lambda c: bool(c["aux_hidden_units"]), "aux_hidden_units (it drops out before those layers)"),
    "plateau_patience": (lambda c: c["lr_schedule"] == "plateau", "lr_schedule='plateau'"),
    "warmup_lr": (lambda c: c["warmup_steps"] > 0 or (c["lr_schedule"] == "cosine" and c["warmup_epochs"] > 0),
                  "warmup_steps > 0, or lr_schedule='cosine' with warmup_epochs > 0"),
    "warmup_epochs": (lambda c: c["lr_schedule"] == "cosine", "lr_schedule='cosine'"),
    "refit_head_conv_layers": (lambda c: c["refit_head_epochs"] > 0, "refit_head_epochs > 0"),
    "refit_head_width": (lambda c: c["refit_head_epochs"] > 0, "refit_head_epochs > 0"),
    "prune_criterion": (lambda c: c["prune_to_width"] > 0, "prune_to_width > 0"),
    "prune_finetune_epochs": (lambda c: c["prune_to_width"] > 0, "prune_to_width > 0"),
    "predsim_beta": _loss_is("predsim"),
    "infopro_recon_weight": INFOPRO,
    "infopro_recon_weight_last": INFOPRO,
    "infopro_class_weight": INFOPRO,
    "infopro_class_weight_last": INFOPRO,
    "infopro_class_term": INFOPRO,
    "infopro_temperature": INFOPRO,
    "infopro_feature_dim": INFOPRO,
    "infopro_decoder_width": INFOPRO,
    "infopro_image_mean": INFOPRO,
    "infopro_image_std": INFOPRO,
    "replay_schedule": (lambda c: c["replay_buffer"] > 0, "replay_buffer > 0 (the asynchronous decoupled mode)"),
}


def check_applicable(config: Flat, defaults: Flat) -> None:
    """Refuses a field of :data:`DEPENDENT` set away from its default where it does not apply.

    Args:
        config: the configuration's flat fields (``TrainConfig.flat()``).
        defaults: the default configuration's.

    Raises:
        ConfigError: naming the field, its value and the option it needs.
    """
    for name, (applies, needs) in DEPENDENT.items():
        if config[name] != defaults[name] and not applies(config):
            raise ConfigError(
                f"{name} is set ({config[name]!r}) but applies with {needs} only: it would change nothing in this "
                f"run; drop it (default {defaults[name]!r}) or set what it needs"
            )
