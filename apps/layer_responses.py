"""Layer responses of trained runs (He et al., CVPR 2016, Fig. 7): plain vs residual.

For every 3x3 conv of each run, the std of its BatchNorm output (before the addition/ReLU) over
the test set, in network order and sorted by magnitude. Writes ``layer_responses.md`` (table)
and ``layer_responses.png`` (two panels, like the paper's figure) to ``--out``:

    python -m apps.train --model plain8 --model_option width=8 --mode end_to_end --workdir runs/plain8
    python -m apps.train --model resnet8 --model_option width=8 --mode end_to_end --workdir runs/resnet8
    python -m apps.layer_responses --workdirs runs/plain8,runs/resnet8 --out runs/responses
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from apps import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this app's flags (only when run as a program, so its functions import cleanly)."""
    flags.DEFINE_list("workdirs", None, "Run directories written by apps.train (finished runs).")
    flags.DEFINE_list("labels", None, "Legend labels, one per workdir [default: the model names].")
    flags.DEFINE_string("out", "runs/layer_responses", "Where the table and the figure go.")
    flags.DEFINE_string("split", "test", "Split whose images are fed: test, train or val.")
    flags.DEFINE_integer("batch_size", 256, "Evaluation batch size.")
    cli.define_trust_pickle(__name__)


def measure(workdirs: list[str], labels: list[str] | None = None, split: str = "test",
            batch_size: int = 256) -> dict[str, dict[str, float]]:
    """``{label: {bn_layer: std}}`` for each finished run."""
    return measure_runs(workdirs, labels, split, batch_size)[0]


def measure_runs(workdirs: list[str], labels: list[str] | None = None, split: str = "test",
                 batch_size: int = 256, trust_pickle: bool = False) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """``({label: {bn_layer: std}}, {label: {bn_layer: mean |gamma|}})`` for each finished run."""
    from apps.runner import restore
    from layerwise.errors import ConfigError
    from layerwise.analysis.responses import bn_gamma_magnitudes, layer_response_stds

    if labels is not None and len(labels) != len(workdirs):
        raise ConfigError(f"got {len(labels)} labels for {len(workdirs)} workdirs")
    results, gammas = {}, {}
    for i, workdir in enumerate(workdirs):
        run = restore(workdir, trust_pickle)
        label = labels[i] if labels else run.network.name
        if label in results:
            label = f"{label} ({os.path.basename(os.path.normpath(workdir))})"
        results[label] = layer_response_stds(run.network, run.data.eval_batches(split, batch_size))
        if not results[label]:
            raise ConfigError(f"{workdir}: {run.network.name} has no 3x3 conv + BN layers to measure")
        gammas[label] = bn_gamma_magnitudes(run.network, results[label])
    return results, gammas


def report(results: dict[str, dict[str, float]], out: str,
           gammas: dict[str, dict[str, float]] | None = None) -> tuple[str, str]:
    """Writes ``layer_responses.md`` and ``.png`` under ``out``; returns their paths.

    The summary gives, per run, the mean, median and max std, the mean over the blocks' second
    BN (``*_bn2``: the residual function's output in a basic block, before the addition) and,
    with ``gammas``, the mean |gamma| of the same layers.
    """
    from apps.figures import markdown_table, pyplot, save_figure, write_text

    labels = list(results)
    depth = max(len(r) for r in results.values())
    rows = []
    for i in range(depth):
        row = [i + 1]
        for label in labels:
            items = list(results[label].items())
            row.append(f"{items[i][0]}: {items[i][1]:.4f}" if i < len(items) else "")
        rows.append(row)
    summary = []
    for label, r in results.items():
        values, second = list(r.values()), [v for k, v in r.items() if k.endswith("_bn2")]
        row = [label, len(r), float(np.mean(values)), float(np.median(values)), float(np.max(values)),
               float(np.mean(second)) if second else "-"]
        if gammas is not None:
            row.append(float(np.mean(list(gammas[label].values()))))
        summary.append(row)
    header = ["run", "3x3 layers", "mean std", "median std", "max std", "mean std of *_bn2"]
    header += ["mean abs(gamma)"] if gammas is not None else []
    text = ("# Layer responses (std of each 3x3 layer's BN output, He et al. Fig. 7)\n\n"
            + markdown_table(header, summary)
            + "\n## Per layer (network order)\n\n"
            + markdown_table(["layer"] + labels, rows))
    table = write_text(os.path.join(out, "layer_responses.md"), text)

    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6))
    for label in labels:
        values = np.array(list(results[label].values()))
        index = np.arange(1, len(values) + 1)
        top.plot(index, values, marker="o", label=label)
        bottom.plot(index, np.sort(values)[::-1], marker="o", label=label)
    top.set(xlabel="layer index (original)", ylabel="std")
    bottom.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    top.legend()
    figure = save_figure(fig, os.path.join(out, "layer_responses.png"))
    return table, figure


def main(argv):
    from layerwise.errors import ConfigError

    cli.refuse_arguments(argv)
    if not FLAGS.workdirs:
        raise ConfigError("--workdirs is required: run directories of finished apps.train runs")
    results, gammas = measure_runs(FLAGS.workdirs, FLAGS.labels, FLAGS.split, FLAGS.batch_size, FLAGS.trust_pickle)
    table, figure = report(results, FLAGS.out, gammas)
    with open(table) as f:
        print(f.read().split("## Per layer")[0].strip())
    print(f"\nwrote {table} and {figure}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
