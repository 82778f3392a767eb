"""Plain vs residual nets of growing depth, trained end to end, with their training curves
(He et al., CVPR 2016, Figs. 1 and 6: deeper *plain* nets train worse; ResNets do not).

Trains every ``--models`` entry end to end into ``--root/<model>`` (a rerun resumes or reloads
finished runs), then plots training error (dashed) and test error (solid) per epoch from each
run's ``metrics.jsonl`` to ``degradation.png`` and tabulates the final numbers in
``degradation.md``. A short CPU run (a few minutes):

    python -m apps.degradation --models plain8,plain20,resnet8,resnet20 --width 8 \
        --epochs 8 --dataset mnist5k --root runs/degradation

The paper's setting: ``--models plain20,plain56,resnet20,resnet56 --width 16`` on CIFAR-10 for
64k iterations (lr 0.1, /10 at 32k and 48k; see docs/zoo.md).
"""

from __future__ import annotations

import json
import os

from absl import flags

from apps import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this app's flags (only when run as a program, so its functions import cleanly)."""
    flags.DEFINE_list("models", ["plain8", "plain20", "resnet8", "resnet20"], "Models to train and compare.")
    flags.DEFINE_string("root", "runs/degradation", "One workdir per model under this directory; outputs here.")
    flags.DEFINE_string("dataset", "mnist5k", "Dataset.")
    flags.DEFINE_integer("width", 8, "width option of every model (16 in the paper's CIFAR nets).")
    flags.DEFINE_integer("epochs", 8, "Total end-to-end epochs of every model (the same for all depths).")
    flags.DEFINE_integer("batch_size", 128, "Batch size (128 in the paper).")
    flags.DEFINE_float("lr", 0.05, "Learning rate (0.1 in the paper).")
    flags.DEFINE_float("weight_decay", 1e-4, "Weight decay (1e-4 in the paper).")
    flags.DEFINE_integer("seed", 0, "Seed.")
    flags.DEFINE_integer("verbose", 0, "1: a line per epoch.")


def config_for(model: str, dataset: str, width: int, epochs: int, batch_size: int, lr: float,
               weight_decay: float, seed: int):
    """An end-to-end config that trains ``model`` for exactly ``epochs`` epochs.

    End-to-end runs train ``num_stages * epochs_per_stage`` epochs, so one stage per model
    (``stage_granularity="group"`` groups blocks, the stem stays stage 0: 4 stages) keeps the
    epoch count a multiple of 4 whatever the depth.
    """
    from layerwise.config import TrainConfig
    from layerwise.errors import ConfigError

    if epochs % 4:
        raise ConfigError(f"--epochs must be a multiple of 4 (stem + 3 groups of blocks), got {epochs}")
    return TrainConfig().replace(
        dataset=dataset, model=model, model_options={"width": width, "stage_granularity": "group"},
        mode="end_to_end", epochs_per_stage=epochs // 4, batch_size=batch_size, lr=lr,
        weight_decay=weight_decay, seed=seed,
    )


def curves(workdir: str) -> list[dict]:
    """The epoch records of a run's ``metrics.jsonl``."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return sorted((r for r in records if r.get("event") == "epoch"), key=lambda r: r["epoch"])


def report(runs: dict[str, str], out: str) -> tuple[str, str]:
    """Plots and tabulates ``{label: workdir}``; returns (table path, figure path)."""
    from apps.figures import markdown_table, pyplot, save_figure, write_text

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = []
    for i, (label, workdir) in enumerate(runs.items()):
        epochs = curves(workdir)
        x = [r["epoch"] + 1 for r in epochs]
        color = f"C{i}"
        ax.plot(x, [100 * (1 - r["accuracy"]) for r in epochs], "--", color=color, label=f"{label} train")
        ax.plot(x, [100 * (1 - r["test_accuracy"]) for r in epochs], "-", color=color, lw=2, label=f"{label} test")
        last = epochs[-1]
        rows.append([label, len(epochs), 100 * (1 - last["accuracy"]), 100 * (1 - last["test_accuracy"]),
                     last["loss"], sum(r["seconds"] for r in epochs)])
    ax.set(xlabel="epoch", ylabel="error (%)", title="plain vs residual (dashed: train, solid: test)")
    ax.legend(fontsize=8)
    figure = save_figure(fig, os.path.join(out, "degradation.png"))
    text = "# Degradation: plain vs residual\n\n" + markdown_table(
        ["model", "epochs", "train error %", "test error %", "train loss", "seconds"], rows)
    return write_text(os.path.join(out, "degradation.md"), text), figure


def main(argv):
    from apps.runner import run_training

    cli.refuse_arguments(argv)
    runs = {}
    for model in FLAGS.models:
        config = config_for(model, FLAGS.dataset, FLAGS.width, FLAGS.epochs, FLAGS.batch_size, FLAGS.lr,
                            FLAGS.weight_decay, FLAGS.seed)
        workdir = os.path.join(FLAGS.root, model)
        print(f"training {model} into {workdir}", flush=True)
        run_training(config, workdir, verbose=FLAGS.verbose, log=print if FLAGS.verbose else (lambda _: None))
        runs[model] = workdir
    table, figure = report(runs, FLAGS.root)
    with open(table) as f:
        print(f.read())
    print(f"wrote {table} and {figure}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
