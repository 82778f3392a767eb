"""Benchmark the training modes: images/s per stage, peak memory, precision and XLA; or whole runs.

    python -m apps.bench --size small      # <= ~10 min on 2 CPU cores
    python -m apps.bench --size large      # on GPUs
    python -m apps.bench --compare --out runs/compare     # the default run's shape, float32 vs auto
    python -m apps.bench --compare --reference_command "/tmp/torch-ref/bin/python torch_reference.py"
    python -m apps.bench --profile_dir runs/profile   # TensorFlow profiler traces per stage
    python -m apps.bench --module_memory 2,4,8,16 --out runs/modules   # K-module ResNet-32 vs end to end
    python -m apps.bench --roofline --out runs/roofline   # conv fwd+bwd GFLOP/s here vs each stage's

Writes ``bench.json`` (every case) and ``bench.md`` (tables) to ``--out``; ``--compare`` writes
``compare.json`` and ``compare.md`` (``apps.speed_compare``: rounds alternate the runs, medians
and ranges over ``--repeats``); ``--module_memory`` writes ``modules.json`` and ``modules.md``
(``apps.module_memory``: per-module peak memory of ResNet-32 as K local modules, InfoPro's claim);
``--roofline`` writes ``roofline.json`` and ``roofline.md`` (``layerwise.analysis.roofline``: this
machine's conv forward+backward GFLOP/s for the network's own conv shapes, and each stage's
training step's achieved GFLOP/s as a fraction of that limit).
"""

from __future__ import annotations

import json
import os

from absl import flags

from apps import cli, profiling, speed_compare
from apps.throughput import run_benchmark, run_case
from apps.throughput_tables import markdown, summarize
from layerwise.errors import ConfigError

flags.DEFINE_enum(
    "size", "small", ["tiny", "small", "large"],
    "tiny: a smoke test (its numbers mean nothing); small: <= 10 min on 2 CPU cores; large: GPU-sized stacks.",
)
flags.DEFINE_string("out", "runs/bench", "Directory for bench.json and bench.md (compare.json, compare.md).")
flags.DEFINE_boolean(
    "compare", False,
    "Time whole apps.train runs of the default run's shape (3 stages, 3 epochs per stage, batch 64, lr 0.05) "
    "per --precisions, alternating with --reference_command, --repeats rounds.",
)
flags.DEFINE_list("precisions", ["float32", "auto"], "--compare: our variants, by --precision.")
flags.DEFINE_list(
    "onednn", [],
    "--compare: run every --precisions variant once per value of TF_ENABLE_ONEDNN_OPTS given here (0, 1), "
    "e.g. 0,1 for the oneDNN A/B; empty: layerwise's default (on for x86-64 Linux unless you set it).")
flags.DEFINE_string(
    "onednn_max_isa", None,
    "--compare: ONEDNN_MAX_CPU_ISA for every run, the reference's too (e.g. AVX2 makes oneDNN, which TensorFlow "
    "and PyTorch both use, dispatch as on an AVX2-only CPU: an emulation, not that CPU).")
flags.DEFINE_list(
    "train_flags", [],
    "--compare: apps.train flags added to every variant of ours, as variants of their own beside the plain "
    "ones, e.g. --train_flags=--validation_freq=3 (one test evaluation per stage, as the paper's code).")
flags.DEFINE_string(
    "reference_command", None,
    "--compare: another implementation's command, timed in the same rounds; its last output line is a JSON "
    "object with total_s and last_test_acc.",
)
flags.DEFINE_string(
    "profile_dir", None,
    "Profile instead: trace the MNIST-shaped case's stages once per --precisions with the TensorFlow profiler "
    "into this directory (TensorBoard's Profile tab), and print each stage's op types by self time when "
    "tensorboard-plugin-profile is installed.",
)
flags.DEFINE_list(
    "module_memory", [],
    "K values: measure the peak memory of every module of ResNet-32 trained as K local modules (InfoPro "
    "loss) and of its end-to-end step, at --size (tiny: a smoke test; small: CIFAR shape, batch 64).",
)
flags.DEFINE_boolean(
    "roofline", False,
    "Measure this machine's conv forward+backward GFLOP/s for the --size's MNIST-shaped network's own conv "
    "shapes (float32, and bfloat16 where --precisions asks for it: auto resolves to it on CPUs with "
    "avx512_bf16 or AMX), time a short training of every stage, and report each stage's achieved GFLOP/s "
    "as a fraction of its conv limit. --repeats: timed repeats per conv shape (the median is reported).",
)
flags.DEFINE_integer(
    "roofline_batch", None, "--roofline: the batch size (default: the --size's, 64 for small).", lower_bound=1)
flags.DEFINE_integer(
    "repeats", 3, "Rounds: each runs every case (with --compare: every variant and the reference) once; "
    "the tables give medians and ranges.")
FLAGS = flags.FLAGS


def compare(out: str) -> None:
    from layerwise.analysis.roofline import cpu_model_name  # imports TensorFlow: not for every --help
    variants, environments = speed_compare.variants(FLAGS.precisions, FLAGS.onednn, FLAGS.onednn_max_isa,
                                                    FLAGS.train_flags)
    runs = speed_compare.compare(variants, FLAGS.reference_command, FLAGS.repeats, environments=environments)
    summary = speed_compare.summarize(runs)
    machine = f"{cpu_model_name()}, {os.cpu_count()} cores" + (
        f"; ONEDNN_MAX_CPU_ISA={FLAGS.onednn_max_isa} (emulated ISA)" if FLAGS.onednn_max_isa else "")
    table = f"Machine: {machine}\n\n" + speed_compare.markdown(summary)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "compare.json"), "w") as f:
        json.dump({"runs": runs, "summary": summary, "reference_command": FLAGS.reference_command,
                   "environments": environments, "machine": machine}, f, indent=2)
    with open(os.path.join(out, "compare.md"), "w") as f:
        f.write(table)
    print(table)


def profile(profile_dir: str) -> None:
    results = []
    for precision in FLAGS.precisions:
        case = dict(size=FLAGS.size, shape="mnist5k", variant="no_tape", head="paper",
                    precision=precision, profile_dir=os.path.join(profile_dir, precision))
        result = run_case(case)
        if profiling.breakdown_available():
            for stage in result["per_stage"]:
                trace_dir = os.path.join(case["profile_dir"], f"stage_{stage['stage']:02d}")
                stage["ops"] = profiling.op_breakdown(trace_dir, stage["timed_steps"])
        results.append(result)
    with open(os.path.join(profile_dir, "profile.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = profiling.markdown(results)
    with open(os.path.join(profile_dir, "profile.md"), "w") as f:
        f.write(table)
    print(table + f"traces in {profile_dir}: tensorboard --logdir {profile_dir} (Profile tab)")


def roofline(out: str) -> None:
    from layerwise.analysis import roofline as rl  # imports TensorFlow: not for every --help

    from layerwise.config import TrainConfig
    from layerwise.precision import settle_precision

    precisions = list(dict.fromkeys(settle_precision(TrainConfig().replace(precision=p))[0].precision
                                    for p in FLAGS.precisions))
    report = rl.roofline_report(
        [dict(size=FLAGS.size, shape="mnist5k", variant="no_tape", head="paper", precision=precision,
              **({"batch": FLAGS.roofline_batch} if FLAGS.roofline_batch else {})) for precision in precisions],
        run_case, FLAGS.repeats, log=print)
    report["size"] = FLAGS.size
    table = rl.markdown(report)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "roofline.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "roofline.md"), "w") as f:
        f.write(table)
    print(table)


def module_memory(out: str) -> None:
    from apps import module_memory as mm  # imports Keras: not for every --help

    try:
        ks = [int(k) for k in FLAGS.module_memory]
    except ValueError:
        raise ConfigError(f"--module_memory takes integers K >= 2, got {FLAGS.module_memory}") from None
    if min(ks) < 2:
        raise ConfigError(f"--module_memory takes integers K >= 2 (end to end is always measured), got {ks}")
    results = mm.run_cases(ks, size=FLAGS.size)
    table = mm.markdown(results)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "modules.json"), "w") as f:
        json.dump({"size": FLAGS.size, "cases": results}, f, indent=2)
    with open(os.path.join(out, "modules.md"), "w") as f:
        f.write(table)
    print(table)


def main(argv: list[str]) -> None:
    cli.refuse_arguments(argv)
    if FLAGS.repeats < 1:
        raise ConfigError("--repeats must be >= 1")
    if FLAGS.compare:
        compare(FLAGS.out)
        return
    if FLAGS.profile_dir:
        profile(FLAGS.profile_dir)
        return
    if FLAGS.module_memory:
        module_memory(FLAGS.out)
        return
    if FLAGS.roofline:
        roofline(FLAGS.out)
        return
    results = run_benchmark(FLAGS.size, FLAGS.repeats)
    summary = summarize(results)
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "bench.json"), "w") as f:
        json.dump({"size": FLAGS.size, "repeats": FLAGS.repeats, "cases": results, "summary": summary}, f, indent=2)
    table = markdown(summary)
    with open(os.path.join(FLAGS.out, "bench.md"), "w") as f:
        f.write(table)
    print(table)


def console() -> None:
    """The installed ``layerwise-bench`` command (``python -m apps.bench`` from a checkout)."""
    cli.run(main)


if __name__ == "__main__":
    console()
