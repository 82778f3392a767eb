"""Accuracy and average exit depth of an exported cascade at several thresholds.

    python -m apps.cascade_report runs/cascade/export/layerwise_cnn_cascade --dataset mnist5k

Loads the SavedModel (newest version), runs the dataset's test split through
``serving_threshold`` at each ``--thresholds`` value and prints a Markdown table (the one in
docs/serving.md), with the time per pass next to the deepest stage's servable alone.
"""

from __future__ import annotations

from absl import flags

from apps import cli

flags.DEFINE_string("dataset", "mnist5k", "Dataset whose test split is used.")
flags.DEFINE_integer("split_seed", 0, "The dataset's split seed (as in training).")
flags.DEFINE_list("thresholds", ["0.5", "0.7", "0.8", "0.9", "0.95", "0.99", "0.999", "1.0"], "Exit thresholds.")
flags.DEFINE_string("deepest", None, "Servable of the deepest stage, for timing [default: guessed beside the cascade].")
flags.DEFINE_integer("repeats", 3, "Timed passes per row (the best is reported).")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    import os
    import time

    import numpy as np

    from layerwise.data import load_dataset
    from layerwise.errors import ConfigError
    from layerwise.serving.clients import LocalModel

    if len(argv) != 2:
        raise ConfigError("usage: python -m apps.cascade_report EXPORT/<model>_cascade [--dataset mnist5k]")
    cascade = LocalModel(argv[1])
    x, y = load_dataset(FLAGS.dataset, split_seed=FLAGS.split_seed).arrays("test")
    x = np.clip(np.rint(x), 0, 255).astype(np.uint8)

    def timed(fn):
        best, out = float("inf"), None
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - start)
        return out, best

    deepest = FLAGS.deepest
    if deepest is None:
        root = os.path.dirname(os.path.dirname(cascade.path.rstrip("/")))
        stages = sorted(d for d in os.listdir(root) if "_stage_" in d)
        deepest = os.path.join(root, stages[-1]) if stages else None
    rows = ["| threshold | accuracy | mean exit stage | exits per stage | ms per 1,000 images |", "|---:|---:|---:|---|---:|"]
    for t in FLAGS.thresholds:
        out, seconds = timed(lambda: cascade.predict(x, threshold=float(t)))
        exits = out["exit_stage"]
        counts = np.bincount(exits, minlength=int(exits.max()) + 1)
        rows.append(
            f"| {float(t):g} | {np.mean(out['classes'] == y):.2%} | {exits.mean():.2f} | "
            f"{' / '.join(str(c) for c in counts)} | {1000 * seconds * 1000 / len(y):.0f} |"
        )
    if deepest:
        model = LocalModel(deepest)
        out, seconds = timed(lambda: model.predict(x))
        rows.append(
            f"| deepest stage alone ({os.path.basename(deepest)}) | {np.mean(out['classes'] == y):.2%} | - | - | "
            f"{1000 * seconds * 1000 / len(y):.0f} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    cli.run(main)
