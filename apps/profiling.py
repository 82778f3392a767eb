"""Where a stage's training step spends its time: TensorFlow profiler traces, summarised by op.

``python -m apps.bench --profile_dir runs/profile`` runs the MNIST-shaped benchmark case (the
default network, the trainer's no-tape path) once per ``--precisions``, with the TensorFlow
profiler (``tf.profiler.experimental.start``/``stop``, see
https://www.tensorflow.org/guide/profiler) tracing the timed steps of every stage into
``<profile_dir>/<precision>/stage_XX``. Open them in TensorBoard's Profile tab
(``pip install tensorboard-plugin-profile; tensorboard --logdir runs/profile``). When that plugin
(its ``xprof`` package) is installed, the same command also prints each stage's op types by
self time per step (:func:`op_breakdown`), the table ``docs/performance.md`` was written from.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
from typing import Any

IDLE = "IDLE"  # the profiler's idle time of the thread pools, not an op


def breakdown_available() -> bool:
    """Whether the profile plugin that converts traces to op statistics is installed."""
    return importlib.util.find_spec("xprof") is not None


def op_breakdown(trace_dir: str, steps: int, top: int = 10) -> list[tuple[str, float]]:
    """The ``top`` op types of a trace by self time, in milliseconds per step (summed over
    threads, so a step on two busy cores can add up to twice its wall time)."""
    from xprof.convert import raw_to_tool_data  # optional: tensorboard-plugin-profile

    paths = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        return []
    raw, _ = raw_to_tool_data.xspace_to_tool_data(paths, "framework_op_stats", {})
    table = json.loads(raw)
    table = table[0] if isinstance(table, list) else table
    columns = [c.get("id") or c.get("label") for c in table["cols"]]
    kind, self_time = columns.index("type"), columns.index("total_self_time")
    totals: dict[str, float] = {}
    for row in table["rows"]:
        cells = [c.get("v") if c else None for c in row["c"]]
        if cells[kind] != IDLE:
            totals[cells[kind]] = totals.get(cells[kind], 0.0) + cells[self_time] / 1000.0 / steps
    return sorted(totals.items(), key=lambda item: -item[1])[:top]


def markdown(results: list[dict[str, Any]]) -> str:
    """Per precision and stage: ms per step, and the top op types' share when available."""
    lines = []
    for result in results:
        for stage in result.get("per_stage", []):
            ms = 1000.0 * result["batch"] / stage["images_per_s"]
            lines += [f"### {result.get('precision')} stage {stage['stage']}: {ms:.1f} ms/step, "
                      f"{stage['images_per_s'] * stage['train_gflop_per_image']:.0f} GFLOP/s", ""]
            ops = stage.get("ops", [])
            if ops:
                lines += ["| op type | ms/step (all threads) |", "|---|---:|"]
                lines += [f"| {name} | {value:.1f} |" for name, value in ops]
                lines.append("")
    return "\n".join(lines) + "\n"
