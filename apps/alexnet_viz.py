"""AlexNet's qualitative figures (Krizhevsky et al., NIPS 2012, Figs. 3 and 4) for a trained run.

- ``filters.png``: the first conv layer's kernels (``conv1``) as an image grid, each min-max
  scaled on its own (RGB kernels in colour, one-channel kernels in grey);
- ``neighbours.png``: for ``--queries`` test images (first column), the ``--neighbours``
  training images closest in fc7 space (Euclidean distance between the 4096-d outputs of
  ``final_head_relu1``), one row per query;
- ``alexnet_viz.md``: the neighbours' labels and distances.

    python -m apps.train --model alexnet_cifar --dataset mnist5k --mode end_to_end \
        --model_option 'conv_widths=[32,64,96,96,64]' --model_option 'head_units=[256,256]' \
        --epochs_per_stage 1 --lr 0.01 --workdir runs/alexnet
    python -m apps.alexnet_viz --workdir runs/alexnet --out runs/alexnet/viz
"""

from __future__ import annotations

import os

import numpy as np
from absl import flags

from apps import cli

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines this app's flags (only when run as a program, so its functions import cleanly)."""
    flags.DEFINE_string("workdir", None, "Run directory of a finished alexnet / alexnet_cifar run.")
    flags.DEFINE_string("out", None, "Output directory [default: <workdir>/viz].")
    flags.DEFINE_integer("queries", 5, "Test images to find neighbours for.")
    flags.DEFINE_integer("neighbours", 6, "Nearest training images shown per query (6 in the paper).")
    flags.DEFINE_integer("seed", 0, "Seed of the choice of query images.")
    cli.define_trust_pickle(__name__)

FC7_LAYER = "final_head_relu1"


def fc7_model(run):
    """images -> fc7 features of a restored AlexNet run."""
    import keras

    from layerwise.errors import ConfigError

    head = run.heads[-1]
    names = {layer.name for layer in head.layers}
    if FC7_LAYER not in names:
        raise ConfigError(f"{run.workdir}: {run.network.name} has no {FC7_LAYER} layer; train an alexnet model")
    features = keras.Model(head.inputs, head.get_layer(FC7_LAYER).output)
    images = run.network.image_input()
    return keras.Model(images, features(run.network.run(images)))


def features(model, data, split: str, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([np.asarray(model(x, training=False)) for x, _ in data.eval_batches(split, batch_size)])


def nearest(queries: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and Euclidean distances of the ``k`` rows of ``pool`` closest to each query."""
    d2 = (queries**2).sum(1)[:, None] - 2 * queries @ pool.T + (pool**2).sum(1)[None, :]
    index = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return index, np.sqrt(np.maximum(np.take_along_axis(d2, index, 1), 0))


def main(argv):
    from apps.figures import image_grid, markdown_table, pyplot, save_figure, show_image, to_unit_range, write_text
    from apps.runner import restore
    from layerwise.errors import ConfigError

    cli.refuse_arguments(argv)
    if not FLAGS.workdir:
        raise ConfigError("--workdir is required: a finished alexnet run")
    out = FLAGS.out or os.path.join(FLAGS.workdir, "viz")
    run = restore(FLAGS.workdir, FLAGS.trust_pickle)
    if "conv1" not in {layer.name for layer in run.network.stages[0].layers}:
        raise ConfigError(f"{FLAGS.workdir}: {run.network.name} is not an AlexNet (no conv1 layer)")
    plt = pyplot()

    kernel = np.asarray(run.network.stages[0].get_layer("conv1").kernel)  # (kh, kw, c, filters)
    filters = to_unit_range(np.transpose(kernel, (3, 0, 1, 2)))
    grid = image_grid(filters, columns=int(np.ceil(np.sqrt(len(filters)) * 1.5)))
    fig, ax = plt.subplots(figsize=(8, 8 * grid.shape[0] / grid.shape[1]))
    show_image(ax, grid)
    ax.set_title(f"{run.network.name}: conv1 filters ({kernel.shape[0]}x{kernel.shape[1]}x{kernel.shape[2]})")
    filters_png = save_figure(fig, os.path.join(out, "filters.png"))

    model = fc7_model(run)
    train_x, train_y = run.data.arrays("train")
    test_x, test_y = run.data.arrays("test")
    pool = features(model, run.data, "train")
    chosen = np.random.default_rng(FLAGS.seed).choice(len(test_y), FLAGS.queries, replace=False)
    queries = features(model, run.data, "test")[chosen]
    index, dist = nearest(queries, pool, FLAGS.neighbours)
    k = FLAGS.neighbours
    fig, axes = plt.subplots(len(chosen), k + 1, figsize=(1.2 * (k + 1), 1.2 * len(chosen)), squeeze=False)
    rows = []
    for r, q in enumerate(chosen):
        show_image(axes[r, 0], to_unit_range(test_x[q][None])[0])
        axes[r, 0].set_title(f"test {test_y[q]}", fontsize=7)
        for c in range(k):
            show_image(axes[r, c + 1], to_unit_range(train_x[index[r, c]][None])[0])
            axes[r, c + 1].set_title(f"{train_y[index[r, c]]} ({dist[r, c]:.1f})", fontsize=7)
        rows.append([int(q), int(test_y[q]), " ".join(str(int(train_y[i])) for i in index[r]),
                     float(np.mean(train_y[index[r]] == test_y[q]))])
    neighbours_png = save_figure(fig, os.path.join(out, "neighbours.png"))
    text = (f"# {run.network.name}: nearest training images in fc7 space ({FC7_LAYER}, Euclidean)\n\n"
            + markdown_table(["test index", "label", "neighbour labels", "same-label fraction"], rows))
    table = write_text(os.path.join(out, "alexnet_viz.md"), text)
    print(text)
    print(f"wrote {filters_png}, {neighbours_png} and {table}")


if __name__ == "__main__":
    define_flags()
    cli.run(main)
