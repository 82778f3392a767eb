"""Re-export a trained run for TF Serving: every stage, the ensemble and the early-exit cascade.

    python -m apps.export runs/cascade
    python -m apps.export runs/cascade --threshold 0.95 --export_dir /srv/models
    python -m apps.export runs/default --serving_root /models   # for -v $PWD/runs/default/export:/models

Rebuilds the network saved with the run (``WORKDIR/network.json``, written by ``layerwise.fit``:
any run, a zoo model's or a ``layerwise.split_model`` network trained on arrays; a run written
before networks were saved is rebuilt from ``WORKDIR/config.json`` by the zoo, with its dataset)
and the finished stages' checkpoints, writes
each servable as version N+1 (version N is left untouched) under ``--export_dir`` (default
``WORKDIR/export``) and rewrites ``models.config`` with the label ``--label`` on the versions
this export wrote (other servables keep theirs). A run that still has stages to train is refused
(``--allow_unfinished`` exports its finished stages, labelled ``unfinished``). See
docs/serving.md for the signatures.
"""

from __future__ import annotations

import sys

from absl import flags

from apps import cli

flags.DEFINE_string("export_dir", None, "Root of the servables [default: WORKDIR/export].")
flags.DEFINE_float("threshold", 0.9, "Default exit threshold of the cascade's serving_default, in (0, 1].")
flags.DEFINE_string(
    "label", "stable",
    "Version label of the versions this export writes ('stable' moves to them; another, e.g. 'canary', is "
    "added beside 'stable'); other versions and servables keep their labels.")
flags.DEFINE_boolean(
    "allow_unfinished", False,
    "Export a run that still has stages to train (its finished stages; the ensemble and cascade are labelled "
    "'unfinished', never --label). Without it an unfinished run is refused.")
flags.DEFINE_string(
    "serving_root", None,
    "Where the model server sees the export directory (e.g. /models in a container started with "
    "-v $PWD/runs/default/export:/models): models.config's base_paths become SERVING_ROOT/<servable> "
    "[default: absolute paths on this machine].")
cli.define_trust_pickle(__name__)
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from apps.runner import build_network, load_data
    from layerwise.errors import ConfigError
    from layerwise.export import export_run
    from layerwise.run.network_file import has_network
    from layerwise.serving.models_config import check_serving_root
    from layerwise.serving.versions import check_label

    if len(argv) != 2:
        raise ConfigError("usage: python -m apps.export WORKDIR [--threshold 0.9] [--export_dir DIR]")
    check_label(FLAGS.label, "--label")
    if FLAGS.serving_root is not None:
        check_serving_root(FLAGS.serving_root, "--serving_root")
    saved = has_network(argv[1])  # the network (and its input's normalisation) saved with the run
    written = export_run(
        argv[1], None if saved else build_network, FLAGS.export_dir, threshold=FLAGS.threshold, label=FLAGS.label,
        load_data=None if saved else (lambda config: load_data(config, FLAGS.trust_pickle)),
        allow_unfinished=FLAGS.allow_unfinished, serving_root=FLAGS.serving_root, log=lambda message: print(message, file=sys.stderr),
    )
    for servable, path in written.items():
        print(f"{servable}: {path}")


def console() -> None:
    """The installed ``layerwise-export`` command (``python -m apps.export`` from a checkout)."""
    cli.run(main)


if __name__ == "__main__":
    console()
