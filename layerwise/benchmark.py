"""Speed and memory of the training modes: images/s per stage, peak memory, precision, XLA.

Each case runs in its own Python process (``python -m layerwise.benchmark CASE_JSON`` prints one
JSON line), so peak memory is per case: on CPU the peak RSS of the process
(``resource.getrusage``; TensorFlow's own baseline included, and reported separately), on GPU
``tf.config.experimental.get_memory_info``. Throughput is measured over the steps after the
first (which traces and compiles), on synthetic data (no signal, the same cost).

Variants of a stage: ``tape`` (the frozen prefix recomputed inside the gradient tape every
batch, as the paper's reference code does), ``no_tape`` (prefix in inference mode outside the
tape, the trainer's uncached path), ``cached`` (prefix outputs computed once per stage, the
build time reported separately), and the whole-network ``decoupled`` and ``end_to_end`` steps.

Example:
    >>> results = run_benchmark("small")   # list of case dicts; see apps.bench
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable

SHAPES = {
    # name: (image_shape, model options, aux conv layers, aux width)
    "small": {
        "mnist5k": dict(image=(28, 28, 1), model=dict(num_stages=3, width=64, downsample_at=[1, 2]),
                        aux_conv_layers=1, aux_width=64, batch=64, steps=12),
        "imagenet": dict(image=(224, 224, 3),
                         model=dict(num_stages=6, width=16, downsample_at=[1, 2, 3], downsample_input=True),
                         aux_conv_layers=1, aux_width=32, batch=16, steps=8),
    },
    "large": {
        "mnist5k": dict(image=(28, 28, 1), model=dict(num_stages=3, width=64, downsample_at=[1, 2]),
                        aux_conv_layers=1, aux_width=128, batch=128, steps=30),
        "imagenet": dict(image=(224, 224, 3),
                         model=dict(num_stages=8, width=128, downsample_at=[1, 3, 5], downsample_input=True),
                         aux_conv_layers=1, aux_width=256, batch=64, steps=20),
    },
}


def cases(size: str) -> list[dict[str, Any]]:
    """Every case of a benchmark size: one process each."""
    out = []
    for shape, spec in SHAPES[size].items():
        stages = spec["model"]["num_stages"]
        for j in range(stages):  # one process per stage: per-stage peak memory
            out.append(dict(size=size, shape=shape, variant="no_tape", stages=[j]))
        for variant in ("tape", "cached"):
            out.append(dict(size=size, shape=shape, variant=variant, stages=list(range(stages))))
        out.append(dict(size=size, shape=shape, variant="decoupled"))
        out.append(dict(size=size, shape=shape, variant="end_to_end"))
    last = SHAPES[size]["imagenet"]["model"]["num_stages"] - 1
    for precision, jit in (("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)):
        out.append(dict(size=size, shape="imagenet", variant="no_tape", stages=[last], precision=precision, jit=jit))
    if _has_gpu_hint():
        out.append(dict(size=size, shape="imagenet", variant="no_tape", stages=[last], precision="mixed_float16"))
    return out


def _has_gpu_hint() -> bool:
    return os.path.exists("/proc/driver/nvidia")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_steps(step: Callable, batches, batch: int) -> dict[str, float]:
    """Runs every batch; throughput over all steps after the first (tracing)."""
    iterator = iter(batches)
    x, y = next(iterator)
    start = time.perf_counter()
    float(step(x, y)[0])
    first = time.perf_counter() - start
    n, start = 0, time.perf_counter()
    for x, y in iterator:
        loss = step(x, y)[0]
        n += 1
    float(loss)
    seconds = time.perf_counter() - start
    return {"first_step_s": first, "images_per_s": n * batch / seconds, "timed_steps": n}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Runs one case in this process; returns its measurements."""
    import keras
    import tensorflow as tf

    from layerwise.config import RunOptions, TrainConfig
    from layerwise.datasets import load_dataset
    from layerwise.optim import dtype_policy, make_optimizer
    from layerwise.trainer import GreedyTrainer

    spec = SHAPES[case["size"]][case["shape"]]
    precision, jit = case.get("precision", "float32"), bool(case.get("jit", False))
    gpu = bool(tf.config.list_physical_devices("GPU"))
    config = TrainConfig(
        dataset="synthetic", model_options=spec["model"], aux_conv_layers=spec["aux_conv_layers"],
        aux_width=spec["aux_width"], epochs_per_stage=1, batch_size=spec["batch"], precision=precision,
        mode="decoupled" if case["variant"] == "decoupled" else "layerwise",
    )
    data = load_dataset("synthetic", image_shape=spec["image"], num_train=spec["batch"] * spec["steps"],
                        num_test=spec["batch"])
    options = RunOptions(
        jit_compile=jit, cache_prefix="memory" if case["variant"] == "cached" else "off",
        cache_budget_mb=1e9, prefix_mode="tape" if case["variant"] == "tape" else "no_tape",
    )
    from models import build_model

    result: dict[str, Any] = dict(case, precision=precision, jit=jit, device="gpu" if gpu else "cpu",
                                  num_train=data.num_train, batch=spec["batch"], per_stage=[])
    with dtype_policy(precision):
        keras.utils.set_random_seed(0)
        network = build_model("layerwise_cnn", data.image_shape, data.num_classes, **config.model_options)
        trainer = GreedyTrainer(network, data, config, None, options=options, verbose=0, log=lambda m: None)
        result["baseline_rss_mib"] = _rss_mib()
        if gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")

        def optimizer_for(model):
            optimizer = make_optimizer(config, trainer.steps_per_epoch, 1)
            optimizer.build(model.trainable_variables)
            return optimizer

        if case["variant"] == "decoupled":
            from layerwise.decoupled import build_stage_models, make_decoupled_step

            models = build_stage_models(trainer)
            step = make_decoupled_step(models, [optimizer_for(m) for m in models],
                                       weight_decay=config.weight_decay, global_batch_size=config.batch_size,
                                       strategy=trainer.strategy, jit_compile=jit)
            from layerwise.trainer import Problem

            run = Problem("decoupled", network.num_stages - 1, models[-1], None, 1)
            result.update(_time_steps(step, trainer.train_batches(run, 0), config.batch_size))
        elif case["variant"] == "end_to_end":
            problem = trainer.end_to_end_problem()
            step = trainer.train_step(problem, optimizer_for(problem.trainable))
            result.update(_time_steps(step, trainer.train_batches(problem, 0), config.batch_size))
        else:
            for j in case["stages"]:
                problem = trainer.stage_problem(j)
                start = time.perf_counter()
                cache = trainer.prefix_cache(problem)
                build = time.perf_counter() - start if cache is not None else 0.0
                step = trainer.train_step(problem, optimizer_for(problem.trainable), cached=cache is not None)
                timing = _time_steps(step, trainer.train_batches(problem, 0, cache), config.batch_size)
                result["per_stage"].append(dict(stage=j, cache_build_s=build, **timing))
                if cache is not None:
                    cache.close()
                network.stages[j].trainable = False
    result["peak_rss_mib"] = _peak_mib()
    if gpu:
        result["gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return result


def run_benchmark(size: str, log: Callable[[str], None] = print, timeout: float = 600) -> list[dict[str, Any]]:
    """Runs every case of ``size`` in its own process, one after the other."""
    results = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for case in cases(size):
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "layerwise.benchmark", json.dumps(case)], cwd=root, capture_output=True,
            text=True, timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            result = dict(case, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
        else:
            result = json.loads(lines[-1])
        result["wall_s"] = time.perf_counter() - start
        log(f"{case['shape']} {case['variant']} {case.get('stages', '')} {case.get('precision', '')} "
            f"{'xla' if case.get('jit') else ''}: {result.get('error') or 'ok'} ({result['wall_s']:.0f} s)")
        results.append(result)
    return results


def _ips(r):
    return r["images_per_s"] if "images_per_s" in r else None


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per shape: per-stage images/s of each variant, peak memory, and the three targets."""
    summary: dict[str, Any] = {}
    ok = [r for r in results if "error" not in r]
    for shape in sorted({r["shape"] for r in ok}):
        rows = [r for r in ok if r["shape"] == shape and r.get("precision", "float32") == "float32" and not r.get("jit")]
        stage_rows: dict[int, dict[str, Any]] = {}
        for r in rows:
            for s in r["per_stage"]:
                row = stage_rows.setdefault(s["stage"], {"stage": s["stage"]})
                row[r["variant"]] = s["images_per_s"]
                if r["variant"] == "cached":
                    row["cache_build_s"] = s["cache_build_s"]
                if r["variant"] == "no_tape":
                    row["peak_rss_mib"] = r["peak_rss_mib"]
                    row["gpu_peak_mib"] = r.get("gpu_peak_mib")
                    row["baseline_rss_mib"] = r["baseline_rss_mib"]
        whole = {r["variant"]: r for r in rows if r["variant"] in ("decoupled", "end_to_end")}
        n = rows[0]["num_train"] if rows else 0
        info: dict[str, Any] = {"stages": [stage_rows[j] for j in sorted(stage_rows)], "num_train": n}
        for name, r in whole.items():
            info[name] = {"images_per_s": r["images_per_s"], "peak_rss_mib": r["peak_rss_mib"],
                          "baseline_rss_mib": r["baseline_rss_mib"], "gpu_peak_mib": r.get("gpu_peak_mib")}
        stages = info["stages"]
        if stages and all("no_tape" in s for s in stages):
            last = stages[-1]
            if "tape" in last and "cached" in last:
                info["last_stage_speedup_cached_vs_tape"] = last["cached"] / last["tape"]
                info["last_stage_speedup_no_tape_vs_tape"] = last["no_tape"] / last["tape"]
            sequential = sum(n / s["no_tape"] for s in stages)
            if "decoupled" in whole:
                info["sequential_stage_epochs_s"] = sequential
                info["decoupled_epoch_s"] = n / whole["decoupled"]["images_per_s"]
            if "end_to_end" in whole:
                e2e = whole["end_to_end"]
                key = "gpu_peak_mib" if e2e.get("gpu_peak_mib") else "peak_rss_mib"
                info["max_stage_over_e2e_peak"] = max(s[key] for s in stages) / e2e[key]
                if key == "peak_rss_mib":
                    info["max_stage_over_e2e_peak_above_baseline"] = max(
                        s["peak_rss_mib"] - s["baseline_rss_mib"] for s in stages
                    ) / max(e2e["peak_rss_mib"] - e2e["baseline_rss_mib"], 1e-9)
        summary[shape] = info
    summary["precision_xla"] = [
        {k: r.get(k) for k in ("shape", "stages", "precision", "jit")} | {"images_per_s": r["per_stage"][0]["images_per_s"]}
        for r in ok if r["variant"] == "no_tape" and r["shape"] == "imagenet"
        and r["stages"] == [SHAPES[r["size"]]["imagenet"]["model"]["num_stages"] - 1]
    ]
    return summary


def markdown(summary: dict[str, Any]) -> str:
    """The benchmark's tables."""
    lines = []
    for shape, info in summary.items():
        if shape == "precision_xla":
            continue
        lines += [f"### {shape} (train images per epoch: {info['num_train']})", "",
                  "| stage | tape img/s | no-tape img/s | cached img/s | cache build s | peak RSS MiB (no-tape) |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for s in info["stages"]:
            cells = [str(s["stage"])] + [f"{s[k]:.0f}" if s.get(k) else "-" for k in ("tape", "no_tape", "cached")]
            cells += [f"{s.get('cache_build_s', 0):.2f}", f"{s.get('peak_rss_mib', 0):.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        for name in ("decoupled", "end_to_end"):
            if name in info:
                r = info[name]
                lines.append(f"| {name} (all stages) | | {r['images_per_s']:.0f} | | | {r['peak_rss_mib']:.0f} |")
        lines.append("")
        for key in ("last_stage_speedup_cached_vs_tape", "last_stage_speedup_no_tape_vs_tape", "max_stage_over_e2e_peak",
                    "max_stage_over_e2e_peak_above_baseline", "decoupled_epoch_s", "sequential_stage_epochs_s"):
            if key in info:
                lines.append(f"- {key}: {info[key]:.2f}")
        lines.append("")
    if summary.get("precision_xla"):
        lines += ["### precision and XLA (imagenet-shaped, last stage, no-tape)", "",
                  "| precision | XLA | img/s |", "|---|---|---:|"]
        for r in summary["precision_xla"]:
            lines.append(f"| {r['precision']} | {'on' if r['jit'] else 'off'} | {r['images_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # one case per process (see run_benchmark)
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
