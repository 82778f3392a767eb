"""The docs' pictures, as small PNGs in ``docs/images/``: the default run's accuracy per stage
and training curves (from its ``metrics.jsonl``), and a diagram of the method.

    python -m apps.train --workdir runs/default && python -m apps.doc_figures --workdir runs/default

Rerun both when the default run's numbers change (the README quotes them). The diagram follows
Belilovsky, Eickenberg & Oyallon, *Greedy Layerwise Learning Can Scale to ImageNet* (ICML 2019),
Fig. 1 and Algorithm 1: stage j trains with its auxiliary head on the frozen output of stages
0..j-1; the heads' 2^j-weighted ensemble and the early-exit cascade are this toolkit's servables
(docs/serving.md).
"""

from __future__ import annotations

import os

from absl import flags

from apps import cli

flags.DEFINE_string("workdir", "runs/default", "The finished run whose plots go into the docs.")
flags.DEFINE_string("out", os.path.join("docs", "images"), "Where the PNGs are written.")
FLAGS = flags.FLAGS

FILES = ("accuracy_per_stage.png", "training_curves.png", "method.png")


def draw_method(path: str, stages: int = 3) -> None:
    """The method as boxes and arrows: stages, the frozen prefix, auxiliary heads, the ensemble
    and the cascade, drawn while stage ``stages - 1`` trains."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    fig, ax = plt.subplots(figsize=(9, 4.2))
    ax.set_xlim(0, 10.5)
    ax.set_ylim(0, 5.2)
    ax.axis("off")

    def box(x, y, w, h, text, colour, **style):
        ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", facecolor=colour, edgecolor="black",
                                    **style))
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)

    def arrow(a, b, **style):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=style.pop("color", "black"),
                                     **style))

    box(0.1, 3.2, 1.0, 0.8, "image x", "white")
    xs = [1.6 + 2.2 * j for j in range(stages)]
    for j, x in enumerate(xs):
        training = j == stages - 1
        box(x, 3.2, 1.6, 0.8, f"stage {j}\nconv(+P) BN ReLU", "#f6c85f" if training else "#d0d0d0")
        arrow((x - 0.5 if j else 1.15, 3.6), (x - 0.05, 3.6))
        box(x + 0.1, 1.7, 1.4, 0.7, f"aux head {j}\nconv, pool, linear", "#9dd9a0" if training else "#e8e8e8")
        arrow((x + 0.8, 3.15), (x + 0.8, 2.45))
        arrow((x + 0.8, 1.65), (x + 0.8 - 0.3 * (j - (stages - 1) / 2), 0.95), color="#4c72b0")
    ax.add_patch(FancyBboxPatch((xs[0] - 0.15, 3.05), xs[-2] + 1.75 - xs[0] + 0.3 - 0.15, 1.1,
                                boxstyle="round,pad=0.02", fill=False, linestyle="--", edgecolor="gray"))
    ax.text(xs[0] - 0.1, 4.25, "frozen prefix (trainable=False,\nBatchNorm in inference mode)", fontsize=8.5,
            color="dimgray")
    ax.text(xs[-1] - 0.1, 4.35, f"trains now (stage {stages - 1})", fontsize=8.5, color="#b07d00")
    ax.text(xs[-1] + 1.75, 2.0, "loss: cross-entropy\nof this head only", fontsize=8, color="#2e7d32")
    box(1.3, 0.25, 7.6, 0.65, "ensemble: softmax of every head, weighted 2^j\ncascade: exit at the first head whose top "
        "probability >= threshold, else go one stage deeper", "#c7d7f0")
    ax.set_title("Greedy layerwise training (Belilovsky et al., ICML 2019, Algorithm 1), stage by stage",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_figures(workdir: str, out: str) -> list[str]:
    """Writes ``FILES`` into ``out``; returns their paths.

    Raises:
        ConfigError: ``workdir`` is not a finished run (no stage in its ``metrics.jsonl``).
    """
    from layerwise.errors import ConfigError
    from layerwise.run.report import plot_accuracy, plot_curves, read_metrics

    records = read_metrics(workdir)
    stages = [r for r in records if r.get("event") == "stage"]
    if not stages:
        raise ConfigError(f"{workdir} has no finished stage; train it first (python -m apps.train --workdir {workdir})")
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, name) for name in FILES]
    plot_accuracy(stages, [], paths[0])
    plot_curves([r for r in records if r.get("event") == "epoch"], paths[1])
    draw_method(paths[2])
    return paths


def main(argv: list[str]) -> None:
    cli.refuse_arguments(argv)
    for path in write_figures(FLAGS.workdir, FLAGS.out):
        print(f"wrote {path} ({os.path.getsize(path) // 1024} KiB)")


if __name__ == "__main__":
    cli.run(main)
