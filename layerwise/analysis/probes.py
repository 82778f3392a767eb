"""Linear separability of every stage's features (Belilovsky et al., ICML 2019, Sec. 4.4).

For each stage j of a trained network, the frozen features ``x_{j+1}`` of the train and test
images are computed once; then:

- ``linear``: the features averaged to 2x2 (as the paper's k=1 auxiliary problem), standardised,
  and a multinomial logistic regression (scikit-learn, L-BFGS) fitted on the training split;
- ``cnn1`` / ``cnn2``: small CNN probes, one or two 3x3 conv layers (width ``cnn_width``, BN,
  ReLU), average to 2x2, linear (the paper's k=2, k=3 auxiliary problems) trained with Adam.

Accuracy is measured on the test split. The paper reports that separability rises with depth
for layerwise-trained networks. Only the training split trains a probe; nothing is tuned on the
test split.

Example:
    >>> results = probe_network(run.network, run.data, probes=("linear",))
    >>> [r["linear"] for r in results]   # test accuracy per stage
"""

from __future__ import annotations

import io
from typing import Sequence

import keras
import numpy as np

from layerwise.data.base import DataSource
from layerwise.files import atomic_write_bytes
from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.nn.network import StagedNetwork, primary

PROBES = ("linear", "cnn1", "cnn2")


def stage_features(network: StagedNetwork, j: int, data: DataSource, split: str, batch_size: int = 256) -> np.ndarray:
    """Stage j's primary output for every example of ``split`` (inference mode), as float32."""
    model = network.compose(upto=j + 1)
    out = [np.asarray(primary(model(x, training=False))) for x, _ in data.eval_batches(split, batch_size)]
    return np.concatenate(out).astype(np.float32)


def average_to(features: np.ndarray, size: int = 2) -> np.ndarray:
    """Adaptive average pooling of ``(N, H, W, C)`` to ``(N, size * size * C)``."""
    pooled = keras.layers.AdaptiveAveragePooling2D(min(size, features.shape[1], features.shape[2]))(features)
    return np.asarray(pooled).reshape(len(features), -1)


def linear_probe(train_x, train_y, test_x, test_y, seed: int = 0, max_iter: int = 300) -> float:
    """Test accuracy of a logistic regression on standardised 2x2-averaged features."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    a, b = average_to(train_x), average_to(test_x)
    mean, std = a.mean(0), a.std(0) + 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(max_iter=max_iter, random_state=seed).fit((a - mean) / std, train_y)
    return float(model.score((b - mean) / std, test_y))


def cnn_probe(train_x, train_y, test_x, test_y, num_classes: int, conv_layers: int, width: int = 32,
              epochs: int = 3, batch_size: int = 64, seed: int = 0) -> float:
    """Test accuracy of a ``conv_layers``-conv probe trained with Adam on frozen features."""
    keras.utils.set_random_seed(seed)
    model = build_aux_head(train_x.shape[1:], num_classes, AuxHead(k=conv_layers + 1, width=width),
                           name=f"cnn{conv_layers}_probe")
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(train_x, train_y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True)
    logits = model.predict(test_x, batch_size=256, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == test_y))


def probe_network(
    network: StagedNetwork,
    data: DataSource,
    stages: int | None = None,
    probes: Sequence[str] = PROBES,
    cnn_width: int = 32,
    cnn_epochs: int = 3,
    seed: int = 0,
    log=lambda message: None,
) -> list[dict]:
    """Probe accuracies of stages ``0..stages-1``: one dict per stage (``stage``, ``shape``, probes)."""
    results = []
    y_train, y_test = data.labels("train"), data.labels("test")
    for j in range(network.num_stages if stages is None else stages):
        train_x, test_x = stage_features(network, j, data, "train"), stage_features(network, j, data, "test")
        row = {"stage": j, "shape": list(train_x.shape[1:])}
        for probe in probes:
            if probe == "linear":
                row[probe] = linear_probe(train_x, y_train, test_x, y_test, seed)
            else:
                row[probe] = cnn_probe(train_x, y_train, test_x, y_test, data.num_classes, int(probe[3:]),
                                       cnn_width, cnn_epochs, seed=seed)
        log(f"stage {j} {tuple(row['shape'])}: " + ", ".join(f"{p} {row[p]:.2%}" for p in probes))
        results.append(row)
    return results


def format_probe_table(runs: dict[str, list[dict]], probes: Sequence[str]) -> str:
    """Markdown: one row per stage, one column per (run, probe)."""
    names = list(runs)
    header = "| stage | " + " | ".join(f"{n} {p}" for n in names for p in probes) + " |"
    rule = "|---:|" + "|".join("---:" for _ in names for _ in probes) + "|"
    depth = max(len(r) for r in runs.values())
    rows = []
    for j in range(depth):
        cells = []
        for n in names:
            for p in probes:
                cells.append(f"{100 * runs[n][j][p]:.1f}" if j < len(runs[n]) else "-")
        rows.append(f"| {j} | " + " | ".join(cells) + " |")
    return "\n".join([header, rule, *rows])


def plot_probes(runs: dict[str, list[dict]], probes: Sequence[str], path: str) -> None:
    """PNG of probe accuracy against depth, one line per (run, probe) (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in runs.items():
        for probe in probes:
            ax.plot([r["stage"] + 1 for r in rows], [100 * r[probe] for r in rows], marker="o",
                    label=f"{name}: {probe}")
    ax.set_xticks(sorted({r["stage"] + 1 for rows in runs.values() for r in rows}))
    ax.set_xlabel("depth (stage)")
    ax.set_ylabel("probe test accuracy (%)")
    ax.set_title("Separability of each stage's features")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
