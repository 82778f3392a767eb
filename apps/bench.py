"""Benchmark the training modes: images/s per stage, peak memory, precision and XLA.

    python -m apps.bench --size small      # <= ~10 min on 2 CPU cores
    python -m apps.bench --size large      # on GPUs

Writes ``bench.json`` (every case) and ``bench.md`` (tables) to ``--out``.
"""

from __future__ import annotations

import json
import os

from absl import flags

from apps import cli

flags.DEFINE_enum(
    "size", "small", ["tiny", "small", "large"],
    "tiny: a smoke test (its numbers mean nothing); small: <= 10 min on 2 CPU cores; large: GPU-sized stacks.",
)
flags.DEFINE_string("out", "runs/bench", "Directory for bench.json and bench.md.")
FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
    from apps.benchmark import markdown, run_benchmark, summarize

    cli.refuse_arguments(argv)
    results = run_benchmark(FLAGS.size)
    summary = summarize(results)
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "bench.json"), "w") as f:
        json.dump({"size": FLAGS.size, "cases": results, "summary": summary}, f, indent=2)
    table = markdown(summary)
    with open(os.path.join(FLAGS.out, "bench.md"), "w") as f:
        f.write(table)
    print(table)


if __name__ == "__main__":
    cli.run(main)
