"""The run report: ``report.md``, ``report.html`` and PNG plots, from a run directory's files.

Reads ``config.json`` and ``metrics.jsonl`` (and ``probes.json`` when probes ran), so it can be
regenerated at any time (``python -m apps.report WORKDIR``) and needs no model. Plots render
headless (matplotlib's Agg backend). The training curves show the validation accuracy per epoch
when the run holds out a validation split (``--validation_fraction``), and otherwise the test
accuracy, titled as such: a curve to report, not to pick epochs or settings on.
"""

from __future__ import annotations

import html
import io
import json
import os
from typing import Any, Sequence

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from layerwise.errors import ConfigError, StorageError  # noqa: E402
import layerwise.files as files  # noqa: E402
from layerwise.files import atomic_write_bytes, atomic_write_text  # noqa: E402
from layerwise.run.lock import workdir_lock  # noqa: E402
from layerwise.run.runlog import read_records  # noqa: E402
from layerwise.run.workdir import read_config  # noqa: E402

COLUMNS = (
    ("stage", "stage", "{}"),
    ("params", "params", "{:,}"),
    ("GFLOPs", "flops", "{:.3g}"),
    ("train acc", "accuracy", "{:.2%}"),
    ("test acc", "test_accuracy", "{:.2%}"),
    ("ensemble acc", "ensemble_accuracy", "{:.2%}"),
    ("top-5 acc", "test_top5", "{:.2%}"),
    ("centre-crop acc", "centre_crop_accuracy", "{:.2%}"),
    ("10-crop top-1 err", "test_top1_error", "{:.2%}"),
    ("10-crop top-5 err", "test_top5_error", "{:.2%}"),
    ("epoch s", "epoch_seconds", "{:.1f}"),
    ("peak MiB", "peak_memory_mb", "{:.0f}"),
)


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = files.join(workdir, "metrics.jsonl")
    if not files.exists(path):
        raise ConfigError(f"{workdir} has no metrics.jsonl yet; train first (python -m apps.train --workdir {workdir})")
    return read_records(path)


# Measured where the machine allows: a record holding None was not measured there ("n/a"), which
# differs from a record without the key (nothing to measure, "-").
MEASURED_WHERE_AVAILABLE = ("peak_memory_mb",)
NOT_MEASURED_NOTE = (
    "peak MiB n/a: TensorFlow's CPU allocator kept no statistics in that process (oneDNN is off on "
    "CPUs without AVX-512 VNNI/bfloat16/AMX); set TF_CPU_ALLOCATOR_USE_BFC=true before starting Python to measure it."
)


def _not_measured(record: dict[str, Any], key: str) -> bool:
    return key in MEASURED_WHERE_AVAILABLE and key in record and record[key] is None


def _cells(record: dict[str, Any]) -> list[str]:
    out = []
    for _, key, fmt in COLUMNS:
        value = record.get(key)
        if key == "flops" and value is not None:
            value = value / 1e9
        out.append(("n/a" if _not_measured(record, key) else "-") if value is None else fmt.format(value))
    return out


def stage_table(records: Sequence[dict[str, Any]]) -> str:
    """Markdown table of stage records (columns absent from every record are dropped); a
    measurement the machine could not make shows "n/a", with a note under the table."""
    keep = [i for i, (_, key, _) in enumerate(COLUMNS)
            if any(r.get(key) is not None or _not_measured(r, key) for r in records)]
    header = "| " + " | ".join(COLUMNS[i][0] for i in keep) + " |"
    rule = "|" + "|".join("---:" for _ in keep) + "|"
    rows = ["| " + " | ".join(_cells(r)[i] for i in keep) + " |" for r in records]
    notes = [NOT_MEASURED_NOTE] if any(_not_measured(r, "peak_memory_mb") for r in records) else []
    return "\n".join([header, rule, *rows, *(["", *notes] if notes else [])])


def plot_accuracy(stages, compare, path) -> None:
    """Test accuracy of each stage's head and of the ensemble (and train accuracy) per stage, as a PNG."""
    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["stage"] for r in stages]
    ax.plot(xs, [r["test_accuracy"] for r in stages], "o-", label="stage head (test)")
    ax.plot(xs, [r["ensemble_accuracy"] for r in stages], "s--", label="ensemble (test)")
    ax.plot(xs, [r["accuracy"] for r in stages], "^:", label="stage head (train)")
    for name, acc in compare:
        ax.axhline(acc, color="gray", linestyle="-.", label=f"{name} (test)")
    ax.set_xlabel("stage")
    ax.set_ylabel("accuracy")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Accuracy per stage")
    _save(fig, path)


def _save(fig, path: str) -> None:
    """Writes ``fig`` as a PNG to ``path`` on any file system (``layerwise.files``)."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def curve_metric(epochs: Sequence[dict[str, Any]]) -> tuple[str, str, str]:
    """``(record key, axis label, title)`` of the accuracy curve: validation accuracy when the
    run has a validation split, else test accuracy, titled so that nobody tunes on it."""
    if any(r.get("val_accuracy") is not None for r in epochs):
        return "val_accuracy", "validation accuracy", "Validation accuracy"
    return "test_accuracy", "test accuracy", "Test accuracy (held-out test set: for reporting, not tuning)"


def plot_curves(epochs, path) -> None:
    """Training loss and the accuracy of :func:`curve_metric` per epoch of each stage, as a PNG."""
    key, label, title = curve_metric(epochs)
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for problem in sorted({r["problem"] for r in epochs}):
        rows = [r for r in epochs if r["problem"] == problem]
        xs = [r["epoch"] + 1 for r in rows]
        loss_ax.plot(xs, [r["loss"] for r in rows], "o-", label=problem)
        acc_ax.plot(xs, [r.get(key) for r in rows], "o-", label=problem)
    loss_ax.set(xlabel="epoch of the stage", ylabel="training loss", title="Training loss")
    acc_ax.set(xlabel="epoch of the stage", ylabel=label)
    acc_ax.set_title(title, fontsize="medium")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def _plot_probes(probes: dict[str, list[dict[str, Any]]], path) -> None:
    """``probes``: ``{run label: [{"stage": j, "linear": acc, "cnn1": acc, ...}, ...]}``
    (``probes.json`` as ``apps.probe`` writes it)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in probes.items():
        kinds = [k for k in rows[0] if k not in ("stage", "shape")] if rows else []
        for kind in kinds:
            ax.plot([r["stage"] for r in rows], [r[kind] for r in rows], "o-", label=f"{label} {kind}")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set(xlabel="stage", ylabel="probe test accuracy", title="Linear separability vs depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    _save(fig, path)


def write_report(workdir: str, compare: Sequence[str] = ()) -> str:
    """Writes ``report.md``, ``report.html`` and ``plots/*.png`` for the run in ``workdir``.

    Args:
        workdir: a training run directory.
        compare: other run directories (e.g. the end-to-end baseline) whose final test accuracy
            is drawn beside this run's per-stage accuracy.

    Returns:
        The path of ``report.md``.

    Raises:
        ConfigError: ``workdir`` is not a run (or its ``config.json`` is corrupt).
        WorkdirBusyError: another process holds the directory (e.g. a run still training).
        StorageError: the files cannot be written (read-only directory, full disk).
    """
    config = read_config(workdir)
    read_metrics(workdir)  # a run with no metrics yet is refused before anything is written
    with workdir_lock(workdir, "writing the report"):
        records = read_metrics(workdir)
        try:
            return _write_report(workdir, config, records, compare)
        except (OSError, files.OpError) as e:
            raise StorageError(
                f"could not write the report in {workdir} ({files.first_line(e)}); make the directory writable "
                "or free disk space, then rerun"
            ) from e


def _write_report(workdir: str, config: dict[str, Any], records: list[dict[str, Any]], compare: Sequence[str]) -> str:
    stages = [r for r in records if r.get("event") == "stage"]
    epochs = [r for r in records if r.get("event") == "epoch"]
    plots_dir = files.join(workdir, "plots")
    plots = []
    others = []
    for other in compare:
        done = [r for r in read_metrics(other) if r.get("event") == "stage"]
        if done:
            others.append((f"{read_config(other)['mode']} ({os.path.basename(os.path.normpath(other))})", done[-1]["test_accuracy"]))
    if stages:
        plot_accuracy(stages, others, files.join(plots_dir, "accuracy_per_stage.png"))
        plots.append(("Accuracy per stage", "plots/accuracy_per_stage.png"))
    if epochs:
        plot_curves(epochs, files.join(plots_dir, "training_curves.png"))
        plots.append(("Training curves", "plots/training_curves.png"))
    probes_path = files.join(workdir, "probes.json")
    if files.exists(probes_path):
        try:
            probes = json.loads(files.read_text(probes_path))
        except ValueError:  # a torn or foreign probes.json: the report goes on without the plot
            probes = None
        if isinstance(probes, dict):
            _plot_probes(probes, files.join(plots_dir, "probe_accuracy.png"))
            plots.append(("Probe accuracy vs depth", "plots/probe_accuracy.png"))

    config_lines = [f"- `{k}`: `{json.dumps(v)}`" for k, v in sorted(config.items())]
    md = [f"# Run report: {config.get('model')} on {config.get('dataset')} ({config.get('mode')})", ""]
    md += ["## Stages", "", stage_table(stages) if stages else "_no finished stage yet_", ""]
    md += [line for title, rel in plots for line in (f"## {title}", "", f"![{title}]({rel})", "")]
    md += ["## Configuration", "", *config_lines, ""]
    md_path = files.join(workdir, "report.md")
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(files.join(workdir, "report.html"), _html(config, stages, plots))
    return md_path


def _html(config, stages, plots) -> str:
    keep = [c for c in COLUMNS if any(r.get(c[1]) is not None for r in stages)]
    head = "".join(f"<th>{html.escape(c[0])}</th>" for c in keep)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for c, cell in zip(COLUMNS, _cells(r)) if c in keep) + "</tr>"
        for r in stages
    )
    images = "".join(f"<h2>{html.escape(t)}</h2><img src='{rel}' alt='{html.escape(t)}'>" for t, rel in plots)
    cfg = html.escape(json.dumps(config, indent=2, sort_keys=True))
    title = html.escape(f"{config.get('model')} on {config.get('dataset')} ({config.get('mode')})")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>body{{font-family:sans-serif;margin:2em}}"
        "td,th{padding:4px 10px;text-align:right;border-bottom:1px solid #ddd}</style></head>"
        f"<body><h1>Run report: {title}</h1><h2>Stages</h2><table><tr>{head}</tr>{rows}</table>"
        f"{images}<h2>Configuration</h2><pre>{cfg}</pre></body></html>\n"
    )
