"""Probe the separability of every stage of trained runs (Belilovsky et al., Sec. 4.4).

    python -m apps.probe runs/mnist5k_k3 runs/mnist5k_k3_e2e --out runs/probes

For every workdir (a layerwise or end-to-end run of ``apps.train``), rebuilds the trained
network, computes each stage's frozen features and fits probes: ``linear`` (2x2 average +
logistic regression) and the small CNN probes ``cnn1``, ``cnn2``. Writes ``probes.md`` (table),
``probes.json`` and ``probes.png`` (accuracy vs depth, runs side by side) to ``--out``.
"""

from __future__ import annotations

import json
import os

from absl import flags

from apps import cli

flags.DEFINE_string("out", None, "Output folder [default: the first workdir].")
flags.DEFINE_list("probes", ["linear", "cnn1", "cnn2"], "Probes: linear, cnn1, cnn2.")
flags.DEFINE_integer("probe_epochs", 3, "Epochs of each CNN probe.")
flags.DEFINE_integer("probe_width", 32, "Width of the CNN probes' convs.")
cli.define_trust_pickle(__name__)
FLAGS = flags.FLAGS


def probe_workdirs(workdirs, out, probes, epochs=3, width=32, log=print, trust_pickle=False) -> dict:
    """Probes every run; returns ``{run label: [per-stage dict]}`` and writes the reports."""
    from layerwise.errors import ConfigError, StorageError
    from layerwise.files import atomic_write_text
    from layerwise.run.lock import workdir_lock
    from layerwise.run.workdir import make_directory
    from layerwise.analysis.probes import PROBES, format_probe_table, plot_probes, probe_network
    from apps.runner import restore

    unknown = sorted(set(probes) - set(PROBES))
    if unknown:
        raise ConfigError(f"unknown probe(s) {unknown}; choose from {', '.join(PROBES)}")
    runs = {}
    for workdir in workdirs:
        run = restore(workdir, trust_pickle)
        label = f"{os.path.basename(os.path.normpath(workdir))} ({run.config.mode})"
        log(f"{label}: {run.trained_stages} trained stages")
        runs[label] = probe_network(run.network, run.data, run.trained_stages, probes, width, epochs,
                                    seed=run.config.seed, log=log)
    make_directory(out)
    table = format_probe_table(runs, probes)
    with workdir_lock(out, "writing probes"):
        atomic_write_text(os.path.join(out, "probes.md"), table + "\n")
        atomic_write_text(os.path.join(out, "probes.json"), json.dumps(runs, indent=2) + "\n")
        try:
            plot_probes(runs, probes, os.path.join(out, "probes.png"))
        except OSError as e:
            raise StorageError(f"could not write {os.path.join(out, 'probes.png')} ({e.strerror or e})") from e
    log("\n" + table)
    log(f"\nwrote probes.md, probes.json, probes.png to {os.path.abspath(out)}")
    return runs


def main(argv: list[str]) -> None:
    from layerwise.errors import ConfigError

    workdirs = argv[1:]
    if not workdirs:
        raise ConfigError("usage: python -m apps.probe WORKDIR [WORKDIR ...] [--out DIR]")
    probe_workdirs(workdirs, FLAGS.out or workdirs[0], FLAGS.probes, FLAGS.probe_epochs, FLAGS.probe_width,
                   trust_pickle=FLAGS.trust_pickle)


if __name__ == "__main__":
    cli.run(main)
