"""Whole runs timed side by side: ours (in variants) and, optionally, another implementation.

``python -m apps.bench --compare`` runs ``python -m apps.train`` on the default run's shape once per
variant (e.g. ``float32`` and ``auto`` precision) and the reference command (the paper-style
PyTorch loop, kept outside the project), alternating them round after round so that the load of
a shared machine falls on all of them, and reports per run the median and the range of:

- ``wall``: the process, start to exit (imports, data, building, training, evaluation, saving);
- ``fit``: our training call (``apps.train``'s "training of ... took" line: every epoch with its
  evaluation, checkpoints and SavedModels); the reference's ``total_s``;
- ``steps``: the training steps alone (the epochs' ``train_seconds``, no evaluation), ours only;

with the last stage's test accuracy. A reference command must print, as its last line, a JSON
object with ``total_s`` and ``last_test_acc`` (as ``torch_reference.py`` does).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

from layerwise import onednn

DEFAULT_SHAPE = ["--epochs_per_stage", "3", "--batch_size", "64", "--lr", "0.05"]
FIT_LINE = re.compile(r"training of .* on .*: ([0-9.]+) s")


def run_ours(args: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """One ``apps.train`` run in a fresh workdir: wall, fit and steps seconds, last test accuracy.
    ``env``: variables added to this process's environment (e.g. ``TF_ENABLE_ONEDNN_OPTS``)."""
    with tempfile.TemporaryDirectory(prefix="layerwise_compare_") as workdir:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "apps.train", *args, "--workdir", workdir, "--verbose", "0"],
            capture_output=True, text=True, timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
        )
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        with open(os.path.join(workdir, "metrics.jsonl")) as f:
            records = [json.loads(line) for line in f if line.strip()]
    stages = [r for r in records if r.get("event") == "stage"]
    fit = FIT_LINE.search(proc.stdout)
    return {
        "wall_s": wall,
        "fit_s": float(fit.group(1)) if fit else None,
        "steps_s": sum(r.get("train_seconds", 0.0) for r in records if r.get("event") == "epoch"),
        "last_test_acc": stages[-1]["test_accuracy"] if stages else None,
    }


def run_reference(command: str, timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The reference command: wall seconds, and its last JSON line's ``total_s`` and accuracy."""
    start = time.perf_counter()
    proc = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    try:
        summary = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"its last line is not a JSON object: {lines[-1][:80]}"}
    return {"wall_s": wall, "fit_s": summary.get("total_s"), "steps_s": None,
            "last_test_acc": summary.get("last_test_acc")}


def variants(precisions: list[str], onednn_values: list[str] | None = None, max_isa: str | None = None,
             train_flags: list[str] | None = None) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """``apps.bench --compare``'s runs: our flags and every run's environment, by name.

    One run per precision and value of ``TF_ENABLE_ONEDNN_OPTS`` in ``onednn_values`` (none:
    layerwise's default), and with ``train_flags`` one more of each with those ``apps.train``
    flags added; ``max_isa`` sets ``ONEDNN_MAX_CPU_ISA`` for every run, the reference's too.

    Example:
        >>> variants(["float32"], ["0", "1"], "AVX2")[1]["float32, TF_ENABLE_ONEDNN_OPTS=1"]
        {'ONEDNN_MAX_CPU_ISA': 'AVX2', 'TF_ENABLE_ONEDNN_OPTS': '1'}
    """
    isa = {"ONEDNN_MAX_CPU_ISA": max_isa} if max_isa else {}
    runs, environments = {}, {"reference": isa}
    for precision in precisions:
        for value in onednn_values or [None]:
            name = precision if value is None else f"{precision}, {onednn.ENV}={value}"
            for extra in [[]] + ([train_flags] if train_flags else []):
                variant = f"{name} {' '.join(extra)}".strip()
                runs[variant] = DEFAULT_SHAPE + ["--precision", precision] + list(extra)
                environments[variant] = {**isa, **({} if value is None else {onednn.ENV: value})}
    return runs, environments


def compare(variants: dict[str, list[str]], reference: str | None = None, repeats: int = 3,
            timeout: float = 1800, log: Callable[[str], None] = print,
            environments: dict[str, dict[str, str]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every variant (and the reference) run ``repeats`` times, alternating; the runs by name.
    ``environments``: per run name (a variant's, or ``"reference"``), variables set for its process."""
    environments = environments or {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    if reference:
        runs["reference"] = []
    for round_ in range(repeats):
        for name in runs:
            env = environments.get(name)
            result = (run_reference(reference, timeout, env) if name == "reference"
                      else run_ours(variants[name], timeout, env))
            runs[name].append(result)
            shown = result.get("error") or ", ".join(
                f"{k} {v:.1f}" for k, v in result.items() if isinstance(v, float) and k.endswith("_s"))
            log(f"round {round_ + 1}/{repeats} {name}: {shown}")
    return runs


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Median, min and max of every time, the accuracy, and each variant's fit time over the
    reference's (the medians')."""
    out: dict[str, dict[str, Any]] = {}
    for name, results in runs.items():
        ok = [r for r in results if "error" not in r]
        row: dict[str, Any] = {"runs": len(ok), "errors": [r["error"] for r in results if "error" in r]}
        for key in ("wall_s", "fit_s", "steps_s", "last_test_acc"):
            values = [r[key] for r in ok if r.get(key) is not None]
            if values:
                row[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        out[name] = row
    reference = out.get("reference", {}).get("fit_s", {}).get("median")
    for name, row in out.items():
        if reference and name != "reference" and "fit_s" in row:
            row["fit_over_reference"] = row["fit_s"]["median"] / reference
    return out


def markdown(summary: dict[str, dict[str, Any]]) -> str:
    """A table: one row per variant, median [min-max] of each time."""
    def cell(row, key, spec="{:.1f}"):
        if key not in row:
            return "-"
        v = row[key]
        return f"{spec.format(v['median'])} [{spec.format(v['min'])}-{spec.format(v['max'])}]"

    lines = ["| run | wall s | fit s | steps s | last-stage test acc | fit / reference |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in summary.items():
        ratio = f"{row['fit_over_reference']:.2f}" if "fit_over_reference" in row else "-"
        lines.append(f"| {name} ({row['runs']} runs) | {cell(row, 'wall_s')} | {cell(row, 'fit_s')} | "
                     f"{cell(row, 'steps_s')} | {cell(row, 'last_test_acc', '{:.3f}')} | {ratio} |")
    return "\n".join(lines) + "\n"
