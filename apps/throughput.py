"""Speed and memory of the training modes: images/s and peak memory per stage, precision, XLA.

Each case runs in its own Python process (``python -m apps.throughput CASE_JSON`` prints one
JSON line), one after the other, so cases do not share caches or compete for the cores; every
case runs ``repeats`` times, in rounds that alternate the cases (round 1 runs every case, then
round 2 ...), so that the load of a shared machine falls on all of them, and the summary reports
each number's median and its range. Inside a case every stage is measured in turn: its
throughput over ``steps`` (at least 30 on the sizes meant for numbers) timed steps after
``WARMUP_STEPS`` untimed ones (the first traces and compiles), and its **peak tensor memory**, the allocator's peak while the stage's
steps run (``layerwise.analysis.memory``: ``get_memory_info``, on a GPU or on the CPU, reset before each
stage). The process's peak RSS is recorded too; on a CPU it adds TensorFlow's ~0.8 GiB runtime,
the same for every case. Data are synthetic (no signal, the same cost).

Variants of a stage: ``tape`` (the frozen prefix recomputed inside the gradient tape every
batch, as the paper's reference code does), ``no_tape`` (prefix in inference mode outside the
tape, the trainer's uncached path), ``cached`` (prefix outputs computed once per stage, the
build time reported separately), and the whole-network ``decoupled`` and ``end_to_end`` steps.
A case's ``head`` is ``paper`` (auxiliary convs at the stage's resolution, as the paper
describes) or ``pre_pool4`` (features averaged 4x down first, the DGL ImageNet reference code;
``AuxHead.pre_pool``).

Example:
    >>> results = run_benchmark("tiny")   # list of case dicts; see apps.bench
    >>> summary = apps.throughput_tables.summarize(results)
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

SHAPES = {
    # Every size has the MNIST-shaped default stack and an ImageNet-shaped one (imagenet_k2's
    # layout: input downsampling, J=8, downsampling at 2, 4, 6, aux width 2M; width M scaled).
    # ``heads``: the auxiliary heads measured (HEADS); ``memory_only``: one step per stage, no
    # throughput, the other variants skipped.
    "tiny": {  # a smoke test of the machinery (seconds); its numbers mean nothing
        "mnist5k": dict(image=(28, 28, 1), model=dict(num_stages=2, width=8, downsample_at=[1]),
                        aux_conv_layers=1, aux_width=8, batch=16, steps=3),
        "imagenet": dict(image=(64, 64, 3), model=dict(num_stages=3, width=8, downsample_at=[2], downsample_input=True),
                         aux_conv_layers=1, aux_width=16, batch=8, steps=3, heads=("paper", "pre_pool4")),
    },
    "small": {  # <= ~10 minutes on 2 CPU cores
        "mnist5k": dict(image=(28, 28, 1), model=dict(num_stages=3, width=64, downsample_at=[1, 2]),
                        aux_conv_layers=1, aux_width=128, batch=64, steps=30),
        "imagenet": dict(image=(112, 112, 3),
                         model=dict(num_stages=8, width=16, downsample_at=[2, 4, 6], downsample_input=True),
                         aux_conv_layers=1, aux_width=32, batch=16, steps=30),
        # imagenet_k2's real widths (M=128, M~=256), where activations dwarf the fixed costs
        "imagenet_memory": dict(image=(224, 224, 3),
                                model=dict(num_stages=8, width=128, downsample_at=[2, 4, 6], downsample_input=True),
                                aux_conv_layers=1, aux_width=256, batch=8, steps=1,
                                heads=("paper", "pre_pool4"), memory_only=True),
    },
    "large": {  # GPU-sized: imagenet_k2's widths
        "mnist5k": dict(image=(28, 28, 1), model=dict(num_stages=3, width=64, downsample_at=[1, 2]),
                        aux_conv_layers=1, aux_width=128, batch=128, steps=50),
        "imagenet": dict(image=(224, 224, 3),
                         model=dict(num_stages=8, width=128, downsample_at=[2, 4, 6], downsample_input=True),
                         aux_conv_layers=1, aux_width=256, batch=64, steps=30, heads=("paper", "pre_pool4")),
    },
}
HEADS = {"paper": 1, "pre_pool4": 4}  # head name -> AuxHead.pre_pool
WARMUP_STEPS = 2  # untimed: the first traces and compiles, the second settles the allocator


def cases(size: str) -> list[dict[str, Any]]:
    """Every case of a benchmark size: one process each."""
    out = []
    for shape, spec in SHAPES[size].items():
        for head in spec.get("heads", ("paper",)):
            out.append(dict(size=size, shape=shape, variant="no_tape", head=head))
            out.append(dict(size=size, shape=shape, variant="end_to_end", head=head))
        if not spec.get("memory_only"):
            for variant in ("tape", "cached", "decoupled"):
                out.append(dict(size=size, shape=shape, variant=variant, head="paper"))
    last = SHAPES[size]["imagenet"]["model"]["num_stages"] - 1
    precisions = [("float32", True), ("mixed_bfloat16", False), ("mixed_bfloat16", True)]
    if _has_gpu_hint():
        precisions.append(("mixed_float16", False))
    for precision, jit in precisions:
        out.append(dict(size=size, shape="imagenet", variant="no_tape", head="paper", stages=[last],
                        precision=precision, jit=jit))
    return out


def _has_gpu_hint() -> bool:
    return os.path.exists("/proc/driver/nvidia")


def _measure(step: Callable, batches, batch: int, trace_dir: str | None = None) -> dict[str, float]:
    """Runs every batch: throughput over the steps after ``WARMUP_STEPS``, peak memory of all;
    with ``trace_dir``, a TensorFlow profiler trace of the timed steps written there."""
    import tensorflow as tf

    from layerwise.analysis.memory import current_memory_mb, peak_memory_mb, reset_peak_memory

    gc.collect()
    reset_peak_memory()
    resident = current_memory_mb()  # weights, optimizer slots, the dataset, a cache: before any step
    iterator = iter(batches)
    x, y = next(iterator)
    start = time.perf_counter()
    float(step(x, y)[0])
    first = time.perf_counter() - start
    for _ in range(WARMUP_STEPS - 1):
        x, y = next(iterator)
        float(step(x, y)[0])
    if trace_dir:
        tf.profiler.experimental.start(trace_dir)
    n, start, loss = 0, time.perf_counter(), None
    for x, y in iterator:
        loss = step(x, y)[0]
        n += 1
    if loss is not None:
        float(loss)
    seconds = time.perf_counter() - start
    if trace_dir:
        tf.profiler.experimental.stop()
    return {"first_step_s": first, "images_per_s": n * batch / seconds if n else None, "timed_steps": n,
            "peak_mib": peak_memory_mb(), "resident_mib": resident}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """Runs one case in this process; returns its measurements."""
    import keras
    import tensorflow as tf

    from layerwise.analysis.memory import memory_device, peak_rss_mb
    from layerwise.config import RunOptions
    from layerwise.data import load_dataset
    from layerwise.precision import dtype_policy
    from layerwise.training.trainer import GreedyTrainer
    from models import build_model

    # a case may override its size's batch and step count (``apps.bench --roofline_batch``)
    spec = dict(SHAPES[case["size"]][case["shape"]], **{k: case[k] for k in ("batch", "steps") if k in case})
    jit = bool(case.get("jit", False))
    config = _case_config(case, spec)
    data = load_dataset("synthetic", image_shape=spec["image"], num_train=spec["batch"] * (spec["steps"] + WARMUP_STEPS),
                        num_test=spec["batch"])
    options = RunOptions().replace(
        jit_compile=jit, cache_prefix="memory" if case["variant"] == "cached" else "off",
        cache_budget_mb=1e9, prefix_mode="tape" if case["variant"] == "tape" else "no_tape",
    )
    result: dict[str, Any] = dict(case, precision=config.precision, jit=jit, memory_device=memory_device(),
                                  device="gpu" if tf.config.list_physical_devices("GPU") else "cpu",
                                  num_train=data.num_train, batch=spec["batch"], per_stage=[])
    with dtype_policy(config.precision):
        keras.utils.set_random_seed(0)
        network = build_model("layerwise_cnn", data.image_shape, data.num_classes, **config.model_options)
        trainer = GreedyTrainer(network, data, config, None, options=options, verbose=0, log=lambda m: None)
        result["baseline_rss_mib"] = peak_rss_mb()
        if case["variant"] == "decoupled":
            result.update(_measure_decoupled(trainer, jit))
        elif case["variant"] == "end_to_end":
            problem = trainer.end_to_end_problem()
            step = trainer.train_step(problem, trainer.make_optimizer(problem))
            result.update(_measure(step, trainer.train_batches(problem, 0), config.batch_size))
        else:
            result["per_stage"] = _measure_stages(trainer, case)
    result["peak_rss_mib"] = peak_rss_mb()
    return result


def _case_config(case: dict[str, Any], spec: dict[str, Any]):
    """The case's TrainConfig, its precision settled (``auto``: this machine's)."""
    from layerwise.config import TrainConfig
    from layerwise.precision import settle_precision

    config, _ = settle_precision(TrainConfig().replace(
        dataset="synthetic", model_options=spec["model"], aux_conv_layers=spec["aux_conv_layers"],
        aux_width=spec["aux_width"], aux_pre_pool=HEADS[case.get("head", "paper")], epochs_per_stage=1,
        batch_size=spec["batch"], precision=case.get("precision", "float32"),
        mode="decoupled" if case["variant"] == "decoupled" else "layerwise",
    ))
    return config


def _measure_decoupled(trainer, jit: bool) -> dict[str, Any]:
    """The decoupled mode's step (every stage and its head at once), timed."""
    from layerwise.training.problems import DECOUPLED, Problem, decoupled_models
    from layerwise.training.steps import make_decoupled_step

    network, config = trainer.network, trainer.config
    heads = [trainer.build_head(j) for j in range(network.num_stages)]
    problems = [Problem(DECOUPLED, j, m, None, 1) for j, m in enumerate(decoupled_models(network, heads))]
    step = make_decoupled_step([p.trainable for p in problems], [trainer.make_optimizer(p) for p in problems],
                               weight_decay=config.optim.weight_decay, global_batch_size=config.batch_size,
                               strategy=trainer.strategy, jit_compile=jit)
    return _measure(step, trainer.train_batches(problems[-1], 0), config.batch_size)


def _measure_stages(trainer, case: dict[str, Any]) -> list[dict[str, Any]]:
    """Each stage of ``case["stages"]`` (all by default) trained in turn, timed, its FLOPs and conv
    shapes counted; the stage is frozen before the next."""
    from layerwise.nn.flops import count_flops
    from layerwise.analysis.roofline import step_convs

    network, batch_size, per_stage = trainer.network, trainer.config.batch_size, []
    for j in case.get("stages", range(network.num_stages)):
        problem = trainer.stage_problem(j)
        start = time.perf_counter()
        cache = trainer.prefix_cache(problem)
        build = time.perf_counter() - start if cache is not None else 0.0
        step = trainer.train_step(problem, trainer.make_optimizer(problem), cached=cache is not None)
        trace_dir = os.path.join(case["profile_dir"], f"stage_{j:02d}") if case.get("profile_dir") else None
        timing = _measure(step, trainer.train_batches(problem, 0, cache), batch_size, trace_dir)
        # a training step's arithmetic per image: the stage and head forward and backward
        # (~3x forward), plus the prefix's forward unless it is cached
        train_flops = 3 * count_flops(problem.trainable)
        if cache is None and problem.frozen is not None:
            train_flops += count_flops(problem.frozen)
        convs = step_convs(problem.trainable, problem.frozen if cache is None else None, batch_size)
        per_stage.append(dict(stage=j, cache_build_s=build, train_gflop_per_image=train_flops / 1e9,
                              convs=convs, **timing))
        if cache is not None:
            cache.close()
        network.stages[j].trainable = False
        del step, problem, cache
    return per_stage


def run_benchmark(size: str, repeats: int = 3, log: Callable[[str], None] = print,
                  timeout: float = 600) -> list[dict[str, Any]]:
    """Runs every case of ``size`` ``repeats`` times, each in its own process, in rounds that
    alternate the cases; returns one result per case, its repeats merged (:func:`merge_repeats`)."""
    runs: list[list[dict[str, Any]]] = [[] for _ in cases(size)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for round_ in range(repeats):
        for case, results in zip(cases(size), runs):
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "apps.throughput", json.dumps(case)], cwd=root, capture_output=True,
                text=True, timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
            lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                result = dict(case, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed")
            else:
                result = json.loads(lines[-1])
            result["wall_s"] = time.perf_counter() - start
            log(f"round {round_ + 1}/{repeats} {case['shape']} {case['variant']} {case['head']} "
                f"{case.get('precision', '')} {'xla' if case.get('jit') else ''}: "
                f"{result.get('error') or 'ok'} ({result['wall_s']:.0f} s)")
            results.append(result)
    return [merge_repeats(results) for results in runs]


SPREAD_KEYS = ("images_per_s", "first_step_s", "peak_mib", "resident_mib", "cache_build_s")


def merge_repeats(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's repeated results as one: every measured number (whole-case and per stage) is
    the median of the repeats, with ``<key>_range`` = ``[min, max]`` beside it."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1]

    def merged(records: list[dict[str, Any]]) -> dict[str, Any]:
        out = dict(records[0])
        for key in SPREAD_KEYS + ("peak_rss_mib", "baseline_rss_mib", "wall_s"):
            values = [r[key] for r in records if r.get(key) is not None]
            if values:
                out[key] = statistics.median(values)
                out[f"{key}_range"] = [min(values), max(values)]
        return out

    case = merged(ok)
    case["repeats"] = len(ok)
    case["per_stage"] = [merged([r["per_stage"][i] for r in ok]) for i in range(len(ok[0]["per_stage"]))]
    return case


if __name__ == "__main__":  # one case per process (see run_benchmark)
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
