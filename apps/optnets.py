r"""Depth experiment of the optimisation-inspired unrolled nets (Li et al., ACML 2018, Sec. 4).

Trains the GD (LISTA), HB, AGD, AGD2 and ADMM nets at several depths on one synthetic
compressed-sensing problem and writes ``report.md`` (NMSE table), ``results.json``,
``nmse_vs_depth.png`` and ``config.json`` to ``--workdir``.

    python -m apps.optnets                       # default budget, a few minutes on 2 CPU cores
    python -m apps.optnets --quick --workdir /tmp/optnets_quick

Precedence: built-in defaults < ``--quick`` preset < explicit flags.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from apps import cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "runs/optnets", "Directory for report.md, results.json, the plot and config.json.")
flags.DEFINE_integer("m", 250, "Number of measurements (rows of A).")
flags.DEFINE_integer("n", 500, "Signal dimension (columns of A).")
flags.DEFINE_float("sparsity", 0.1, "Probability that an entry of x* is non-zero.")
flags.DEFINE_float("snr_db", 40.0, "Measurement SNR in dB.")
flags.DEFINE_float("lam", 0.1, "l1 weight lambda of the lasso (sets the analytic thresholds).")
flags.DEFINE_float("rho", 1.0, "ADMM penalty rho.")
flags.DEFINE_list("depths", ["2", "4", "8", "12", "16"], "Depths K (layers = iterations) to train.")
flags.DEFINE_list("families", ["gd", "hb", "agd", "agd2", "admm"], "Network families to train.")
flags.DEFINE_integer("train_samples", 4000, "Number of training pairs (x*, y).")
flags.DEFINE_integer("test_samples", 1000, "Number of test pairs.")
flags.DEFINE_integer("steps", 300, "Adam steps per network (same budget for every net).")
flags.DEFINE_integer("batch_size", 64, "Batch size.")
flags.DEFINE_float("learning_rate", 1e-4, "Adam learning rate.")
flags.DEFINE_bool("share_weights", True, "One set of matrices for all layers (False: one per layer).")
flags.DEFINE_bool("train_coefficients", True, "Train momentum/connection coefficients (False: keep the schedules).")
flags.DEFINE_integer("seed", 0, "Seed of the problem, the data and the initialisation.")
flags.DEFINE_bool("quick", False, "Tiny preset for smoke tests (m=20, n=40, depths 2,4, 20 steps); explicit flags win.")

QUICK = dict(m=20, n=40, depths=(2, 4), train_samples=256, test_samples=128, steps=20, batch_size=32)


def config_from_flags():
    from apps.experiments.compressed_sensing import CSConfig
    from layerwise.errors import ConfigError

    try:
        depths = tuple(int(d) for d in FLAGS.depths)
    except ValueError:
        raise ConfigError(f"--depths must be integers, got {','.join(FLAGS.depths)}") from None
    values = {f.name: getattr(FLAGS, f.name) for f in dataclasses.fields(CSConfig)
              if f.name not in ("depths", "families")}
    values.update(depths=depths, families=tuple(FLAGS.families))
    if FLAGS.quick:
        for key, value in QUICK.items():
            if not FLAGS[key].present:
                values[key] = value
    return CSConfig(**values).validate()


def validate(argv):
    """Checks the flags and the experiment's configuration (``--dry_run``)."""
    if len(argv) > 1:
        from layerwise.errors import ConfigError

        raise ConfigError(f"unexpected arguments {' '.join(argv[1:])}")
    return config_from_flags()


def main(argv):
    config = validate(argv)
    from apps.experiments.compressed_sensing import markdown_table, run_depth_experiment, write_report
    from layerwise.files import atomic_write_text
    from models.unrolled import build_unrolled

    atomic_write_text(os.path.join(FLAGS.workdir, "config.json"), json.dumps(dataclasses.asdict(config), indent=2))
    results = run_depth_experiment(config, build_unrolled)
    paths = write_report(results, FLAGS.workdir)
    print(markdown_table(results))
    print(f"wrote {', '.join(paths.values())}")


if __name__ == "__main__":
    cli.run(main, validate)
