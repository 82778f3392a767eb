"""Tune the layerwise schedule with Keras Tuner; write the best configuration as a preset.

    python -m apps.tune --workdir runs/tune --tuner random --max_trials 8
    python -m apps.train --config runs/tune/best_config.json --workdir runs/best
    python -m apps.tune --workdir runs/tune_stages --tune_per_stage --max_trials 4
    python -m apps.train --config runs/tune_stages/best_per_stage_config.json --workdir runs/best

The search starts from the defaults, then ``--config FILE``, then the training flags given here
(``--dataset``, ``--num_stages``, ... as in apps.train); the tuned fields (lr, weight decay,
width, aux width, k, epochs per stage) are then chosen by the tuner from the ``--*_choices``
flags. Trials are scored on a validation part of the training split (``--val_fraction``), never
on the test split. Rerunning the same command resumes the search in WORKDIR/tuning. At the end
a table of the trials is printed and written to WORKDIR/trials.md; the best configuration goes
to WORKDIR/best_config.json (``--tune_per_stage``: WORKDIR/best_per_stage_config.json, with
each stage's own hyperparameters in ``stage_overrides``, and WORKDIR/tuning/per_stage.json and
the kept stages, see docs/tuning.md).
"""

from __future__ import annotations

from absl import flags

from apps import cli
from apps import train

flags.adopt_module_key_flags(train)  # the training flags and --config are apps.tune's too

flags.DEFINE_string("tuner", "random", "random, hyperband or bayesian (needs scipy + scikit-learn).")
flags.DEFINE_integer("max_trials", 8, "Trials (per stage with --tune_per_stage); Hyperband sizes its own brackets.")
flags.DEFINE_boolean("tune_per_stage", False, "Greedy: tune stage j, keep its best trained stage, then j+1.")
flags.DEFINE_float("val_fraction", 0.2, "Part of the training split held out to score trials.")
flags.DEFINE_list("lr_range", ["0.005", "0.2"], "min,max of the learning rate (log-uniform).")
flags.DEFINE_list("weight_decay_choices", ["0", "1e-4", "5e-4", "1e-3"], "Weight decay choices.")
flags.DEFINE_list("width_choices", ["16", "32", "64"], "First-stage width choices (empty: keep the config's).")
flags.DEFINE_list("aux_width_choices", ["32", "64", "128"], "Auxiliary head width choices.")
flags.DEFINE_list("aux_conv_layers_choices", ["0", "1", "2"], "k - 1 choices (hidden conv layers of the heads).")
flags.DEFINE_list("epochs_choices", ["2", "4"], "Epochs per stage choices (Hyperband: its maximum is max_epochs).")
FLAGS = flags.FLAGS


def _numbers(name: str, kind):
    from layerwise.errors import ConfigError

    try:
        return tuple(kind(v) for v in FLAGS[name].value if v != "")
    except ValueError:
        raise ConfigError(f"--{name} takes a comma-separated list of numbers; got {','.join(FLAGS[name].value)}") from None


def main(argv: list[str]) -> None:
    import os

    from apps.runner import build_network, load_data, resolve
    from layerwise import tuning
    from layerwise.files import atomic_write_text
    from layerwise.errors import ConfigError

    cli.refuse_arguments(argv)
    lr = _numbers("lr_range", float)
    if len(lr) != 2 or not 0 < lr[0] <= lr[1]:
        raise ConfigError(f"--lr_range takes min,max with 0 < min <= max; got {lr}")
    space = tuning.SearchSpace(
        lr=lr,
        weight_decay=_numbers("weight_decay_choices", float),
        widths=_numbers("width_choices", int),
        aux_widths=_numbers("aux_width_choices", int),
        aux_conv_layers=_numbers("aux_conv_layers_choices", int),
        epochs_per_stage=_numbers("epochs_choices", int),
    )
    for name in ("weight_decay", "aux_widths", "aux_conv_layers", "epochs_per_stage"):
        if not getattr(space, name):
            raise ConfigError(f"the {name} choices are empty")
    if FLAGS.tuner not in tuning.TUNERS:
        raise ConfigError(f"unknown --tuner {FLAGS.tuner!r}; choose one of: {', '.join(tuning.TUNERS)}")
    if FLAGS.max_trials <= 0:
        raise ConfigError("--max_trials must be positive")
    base = resolve(train.config_from_flags())
    data = tuning.validation_view(load_data(base, FLAGS.trust_pickle, FLAGS.download), FLAGS.val_fraction, base.split_seed)
    directory = os.path.join(FLAGS.workdir, "tuning")
    if FLAGS.tune_per_stage:
        results = tuning.tune_per_stage(
            base, data, build_network, directory, kind=FLAGS.tuner, max_trials=FLAGS.max_trials, space=space
        )
        print(f"per-stage results in {os.path.join(directory, 'per_stage.json')}")
        for r in results:
            print(f"stage {r['stage']}: val accuracy {r['val_accuracy']:.2%} with {r['hyperparameters']}")
        preset = tuning.write_preset(tuning.per_stage_config(base, results),
                                     os.path.join(FLAGS.workdir, "best_per_stage_config.json"))
        print(f"per-stage configuration: {preset}\ntrain it with: python -m apps.train --config {preset} "
              "--workdir runs/best")
        return
    hypermodel = tuning.ScheduleHyperModel(base, data, build_network, space, hyperband=FLAGS.tuner == "hyperband")
    tuner = tuning.make_tuner(
        FLAGS.tuner, hypermodel, directory, "schedule", FLAGS.max_trials, seed=base.seed,
        max_epochs=max(space.epochs_per_stage),
    )
    tuner.search()
    table = tuning.format_trials(tuning.trial_rows(tuner))
    print(table)
    atomic_write_text(os.path.join(FLAGS.workdir, "trials.md"), table + "\n")
    preset = tuning.write_preset(tuning.best_config(tuner, hypermodel), os.path.join(FLAGS.workdir, "best_config.json"))
    print(f"best configuration: {preset}\ntrain it with: python -m apps.train --config {preset} --workdir runs/best")


def console() -> None:
    """The installed ``layerwise-tune`` command (``python -m apps.tune`` from a checkout)."""
    cli.run(main)


if __name__ == "__main__":
    console()
