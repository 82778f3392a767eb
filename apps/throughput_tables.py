"""The tables of ``apps.bench``: the measurements of ``apps.throughput`` summarised per shape and
variant, and written as markdown (images/s with their range over the repeats, GFLOP/s, memory)."""

from __future__ import annotations

from typing import Any

from apps.throughput import HEADS

__all__ = ["added_memory", "markdown", "summarize"]


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape: per-stage images/s and peak memory of each variant, and the three targets."""
    summary: dict[str, Any] = {}
    ok = [r for r in results if "error" not in r]
    plain = [r for r in ok if r.get("precision", "float32") == "float32" and not r.get("jit")]
    for shape in sorted({r["shape"] for r in plain}):
        rows = [r for r in plain if r["shape"] == shape]
        stage_rows: dict[int, dict[str, Any]] = {}
        for r in rows:
            key = r["variant"] if r["head"] == "paper" else f"{r['variant']}_{r['head']}"
            for s in r["per_stage"]:
                row = stage_rows.setdefault(s["stage"], {"stage": s["stage"]})
                row[key] = s["images_per_s"]
                row[f"{key}_range"] = s.get("images_per_s_range")
                row[f"{key}_peak_mib"] = s["peak_mib"]
                row[f"{key}_added_mib"] = added_memory(s)
                if r["variant"] == "cached":
                    row["cache_build_s"] = s["cache_build_s"]
                if r["variant"] == "no_tape" and r["head"] == "paper":
                    row["no_tape_gflop_per_s"] = s["images_per_s"] * s["train_gflop_per_image"]
        whole = {}
        for r in rows:
            if r["variant"] in ("decoupled", "end_to_end"):
                name = r["variant"] if r["head"] == "paper" else f"{r['variant']}_{r['head']}"
                whole[name] = {k: r.get(k) for k in ("images_per_s", "images_per_s_range", "peak_mib", "peak_rss_mib",
                                                      "baseline_rss_mib")}
                whole[name]["added_mib"] = added_memory(r)
        n = rows[0]["num_train"]
        info: dict[str, Any] = {"stages": [stage_rows[j] for j in sorted(stage_rows)], "num_train": n,
                                "memory_device": rows[0]["memory_device"], **whole}
        stages = info["stages"]
        last = stages[-1] if stages else {}
        if "tape" in last and "cached" in last and "no_tape" in last:
            info["last_stage_speedup_cached_vs_tape"] = last["cached"] / last["tape"]
            info["last_stage_speedup_no_tape_vs_tape"] = last["no_tape"] / last["tape"]
        if stages and all("no_tape" in s for s in stages) and "decoupled" in whole:
            info["sequential_stage_epochs_s"] = sum(n / s["no_tape"] for s in stages)
            info["decoupled_epoch_s"] = n / whole["decoupled"]["images_per_s"]
        for head in HEADS:
            suffix = "" if head == "paper" else f"_{head}"
            e2e = whole.get(f"end_to_end{suffix}")
            peaks = [s.get(f"no_tape{suffix}_peak_mib") for s in stages]
            added = [s.get(f"no_tape{suffix}_added_mib") for s in stages]
            if e2e and e2e["peak_mib"] and stages and all(peaks):
                info[f"max_stage_over_e2e_peak{suffix}"] = max(peaks) / e2e["peak_mib"]
                info[f"max_stage_over_e2e_added{suffix}"] = max(added) / e2e["added_mib"]
        summary[shape] = info
    summary["precision_xla"] = [
        {k: r.get(k) for k in ("precision", "jit")} | {k: r["per_stage"][-1].get(k) for k in ("images_per_s", "images_per_s_range")}
        for r in ok if r["variant"] == "no_tape" and r["shape"] == "imagenet" and r["head"] == "paper"
    ]  # the all-stage float32 case (its last stage) and the last-stage precision/XLA cases
    return summary


def _cell(value, spec: str = "{:.0f}") -> str:
    return spec.format(value) if value is not None else "-"


def _rate_cell(value, spread) -> str:
    """``median [min-max]`` of the repeats (the median alone after one run)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if not spread or spread[0] == spread[1] else f"{value:.0f} [{spread[0]:.0f}-{spread[1]:.0f}]"


def added_memory(measured: dict[str, Any]) -> float | None:
    """What the steps added to the tensors resident before them; None where not measured."""
    peak, resident = measured.get("peak_mib"), measured.get("resident_mib")
    return None if peak is None or resident is None else peak - resident


def _memory_cell(peak: float | None, added: float | None) -> str:
    """``peak (+added)``: the peak, and how much of it the steps added to what was resident;
    "n/a" where the allocator kept no statistics (``layerwise.analysis.memory``)."""
    return "n/a" if peak is None else f"{peak:.0f} (+{added:.0f})"


def markdown(summary: dict[str, Any]) -> str:
    """The benchmark's tables."""
    lines = []
    for shape, info in summary.items():
        if shape == "precision_xla":
            continue
        pooled = any("no_tape_pre_pool4" in s for s in info["stages"])
        # img/s cells: the median of the repeats [min-max]
        head = ["stage", "tape img/s", "no-tape img/s", "no-tape GFLOP/s", "cached img/s", "cache build s",
                "peak MiB tape", "peak MiB no-tape"] + (["peak MiB no-tape, pre-pooled head"] if pooled else [])
        # peak MiB cells: "peak (+added)", added = peak minus what was resident before the steps
        lines += [f"### {shape} (train images per epoch: {info['num_train']}; peak tensor memory on "
                  f"{info['memory_device']})", "", "| " + " | ".join(head) + " |",
                  "|" + "---:|" * len(head)]
        for s in info["stages"]:
            cells = [str(s["stage"])] + [_rate_cell(s.get(k), s.get(f"{k}_range")) for k in ("tape", "no_tape")]
            cells += [_cell(s.get("no_tape_gflop_per_s")), _rate_cell(s.get("cached"), s.get("cached_range"))]
            cells += [_cell(s.get("cache_build_s"), "{:.2f}")]
            keys = ["tape", "no_tape"] + (["no_tape_pre_pool4"] if pooled else [])
            cells += [_memory_cell(s.get(f"{k}_peak_mib"), s.get(f"{k}_added_mib")) for k in keys]
            lines.append("| " + " | ".join(cells) + " |")
        for name in ("decoupled", "end_to_end"):
            if name in info:
                r = info[name]
                cells = [f"{name} (all stages)", "", _rate_cell(r["images_per_s"], r.get("images_per_s_range")), "", "", "", "",
                         _memory_cell(r["peak_mib"], r["added_mib"])]
                if pooled:
                    other = info.get(f"{name}_pre_pool4", {})
                    cells.append(_memory_cell(other.get("peak_mib"), other.get("added_mib")))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        for key in ("last_stage_speedup_cached_vs_tape", "last_stage_speedup_no_tape_vs_tape",
                    "max_stage_over_e2e_peak", "max_stage_over_e2e_peak_pre_pool4",
                    "max_stage_over_e2e_added", "max_stage_over_e2e_added_pre_pool4",
                    "decoupled_epoch_s", "sequential_stage_epochs_s"):
            if key in info:
                lines.append(f"- {key}: {info[key]:.2f}")
        rss = {name: info[name]["peak_rss_mib"] for name in ("end_to_end", "decoupled") if name in info}
        if rss:
            lines.append("- process peak RSS MiB (TensorFlow runtime included): "
                         + ", ".join(f"{k} {v:.0f}" for k, v in rss.items()))
        lines.append("")
    if summary.get("precision_xla"):
        lines += ["### precision and XLA (imagenet-shaped, last stage, no-tape)", "",
                  "| precision | XLA | img/s |", "|---|---|---:|"]
        for r in summary["precision_xla"]:
            lines.append(f"| {r['precision']} | {'on' if r['jit'] else 'off'} | "
                         f"{_rate_cell(r['images_per_s'], r.get('images_per_s_range'))} |")
    return "\n".join(lines) + "\n"
