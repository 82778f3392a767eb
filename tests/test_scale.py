"""Prefix cache, precision, XLA and decoupled mode on tiny problems."""

import glob
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.runner import build_network, load_data, resolve
from conftest import run_cli, tiny_config
from layerwise.config import RunOptions, TrainConfig
from layerwise.errors import ConfigError
from layerwise.analysis.memory import allocator_reports_memory, memory_device
from layerwise.data.base import ArraySource
from layerwise.precision import resolve_precision
from layerwise.training.optim import make_optimizer
from layerwise.training.prefix_cache import (CacheCosts, PrefixCache, cached_eval_splits, choose_mode, feature_bytes,
                                             measure_costs, prefix_forward, problem_cache)
from layerwise.training.problems import decoupled_models
from layerwise.training.steps import make_decoupled_step
from layerwise.training.trainer import GreedyTrainer


def _trainer(config, workdir=None, log=print, **options):
    config = resolve(config)
    data = load_data(config)
    network = build_network(config, data)
    return GreedyTrainer(network, data, config, workdir, options=RunOptions(**options), verbose=1, log=log)


def _stage_weights(trainer):
    return [v.numpy() for stage in trainer.network.stages for v in stage.variables] + [
        v.numpy() for j in sorted(trainer.heads) for v in trainer.heads[j].variables
    ]


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_cached_prefix_gives_the_same_stage_weights(tmp_path, quiet_log, cache):
    config = tiny_config(epochs_per_stage=2)
    uncached = _trainer(config, log=quiet_log, cache_prefix="off")
    uncached.run()
    cached = _trainer(config, str(tmp_path / "run"), log=quiet_log, cache_prefix=cache)
    cached.run()
    for a, b in zip(_stage_weights(uncached), _stage_weights(cached)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not (tmp_path / "run" / "cache" / "stage_01").exists()  # deleted after the stage


def _blank_test_images_at_stage_1(data):
    """A callback that zeroes the data's test images when stage 1's first epoch begins (after its
    prefix cache is filled): an evaluation that reads the images from then on sees blanks."""
    def blank(epoch, logs):
        if logs["stage"] == 1 and logs["stage_epoch"] == 0:
            images = data.tensors("test")[0]
            images.assign(tf.zeros_like(images))
    return keras.callbacks.LambdaCallback(on_epoch_begin=blank)


def _stage_1_accuracies(cache, blank, quiet_log, workdir):
    """Stage 1's test and validation accuracies after each epoch, and its record's test accuracy."""
    config = resolve(tiny_config(epochs_per_stage=2, validation_fraction=0.1))
    data = load_data(config)
    trainer = GreedyTrainer(build_network(config, data), data, config, workdir, log=quiet_log,
                            options=RunOptions(cache_prefix=cache),
                            callbacks=[_blank_test_images_at_stage_1(data)] if blank else None)
    records = trainer.run()
    epochs = [r[key] for r in trainer.runlog.records if r["event"] == "epoch" and r["stage"] == 1
              for key in ("test_accuracy", "val_accuracy")]
    return [*epochs, records[1]["test_accuracy"]]


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_a_cached_stage_evaluates_its_head_on_the_cached_test_features(tmp_path, quiet_log, cache):
    """With the prefix cached, the test split's features are cached too and every evaluation of the
    stage reads them (the validation split's as well): blanking the test images after the cache is
    filled changes nothing, whereas the uncached run, which reads the images, then evaluates blanks."""
    off = _stage_1_accuracies("off", False, quiet_log, str(tmp_path / "off"))
    cached_blanked = _stage_1_accuracies(cache, True, quiet_log, str(tmp_path / "cached"))
    # every epoch's and the stage's; cached and uncached weights agree to float rounding, so an
    # example on a decision boundary may flip (one example: 0.3 % of the test split, 0.7 % of val)
    assert cached_blanked == pytest.approx(off, abs=0.01)
    assert _stage_1_accuracies("off", True, quiet_log, str(tmp_path / "blanked"))[-1] != pytest.approx(
        off[-1], abs=0.01)


def test_the_test_split_is_cached_in_its_order_within_auto_s_budget():
    n, n_test = 256, 100
    rng = np.random.default_rng(0)
    data = ArraySource("plain", (rng.integers(0, 255, (n, 8, 8, 1), np.uint8), np.arange(n) % 10),
                       (rng.integers(0, 255, (n_test, 8, 8, 1), np.uint8), np.arange(n_test) % 10), 10)
    prefix = _image_prefix((8, 8, 1))
    train_only, everything = (feature_bytes(prefix, k) / 2**20 for k in (n, n + n_test))
    assert cached_eval_splits("auto", prefix, data, everything) == ("test", "val")
    assert cached_eval_splits("auto", prefix, data, (train_only + everything) / 2) == ()
    assert cached_eval_splits("memory", prefix, data, 0.0) == ("test", "val")
    cache = PrefixCache(prefix, data, "memory", eval_splits=("test", "val"))
    assert cache.eval_splits == ("test",)  # no validation split here
    features = np.concatenate([x.numpy() for x, _ in cache.eval_batches("test", 32)])
    images = np.concatenate([x.numpy() for x, _ in data.eval_batches("test", 32)])
    np.testing.assert_allclose(features, prefix(images, training=False).numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(KeyError, match="holds no 'val' split"):
        next(cache.eval_batches("val", 32))


def test_tape_prefix_mode_gives_the_same_weights(quiet_log):
    config = tiny_config()
    a = _trainer(config, log=quiet_log, cache_prefix="off")
    a.run()
    b = _trainer(config, log=quiet_log, cache_prefix="off", prefix_mode="tape")
    b.run()
    for x, y in zip(_stage_weights(a), _stage_weights(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_cache_with_augmentation_is_refused_and_auto_turns_it_off(quiet_log):
    with pytest.raises(ConfigError, match="augmentation"):
        _trainer(tiny_config(augment="crop"), log=quiet_log, cache_prefix="memory").run()
    records = _trainer(tiny_config(augment="crop"), log=quiet_log, cache_prefix="auto").run()
    assert len(records) == 2


def test_auto_precision_is_bfloat16_exactly_on_cpus_with_bfloat16_units():
    with open("/proc/cpuinfo") as f:
        flags = {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    expected = "mixed_bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU decides by its compute capability")
    assert TrainConfig().precision == "auto"
    assert resolve(tiny_config(precision="auto")).precision == expected
    assert resolve(tiny_config(precision="float32")).precision == "float32"


def _image_prefix(image_shape, features: int = 16) -> keras.Model:
    """A prefix from images to ``features`` float32 numbers per example."""
    x = keras.Input(image_shape)
    return keras.Model(x, keras.layers.Dense(features)(keras.layers.Flatten()(x)))


class _UnorderedDigits(ArraySource):
    """A source that cannot say its example order (as a user's pipeline)."""

    def train_order(self, seed, epoch):
        return None


def test_auto_prefix_cache_caches_exactly_where_the_measured_costs_say_it_pays():
    # the rule of prefix_cache's docstring: memory iff one forward pass and E gathers cost at most
    # half of E forward passes (measured), the features fit in the budget, no augmentation and a known
    # example order; else recompute (off)
    n = 100
    images, labels = np.zeros((n, 2, 2, 1), np.uint8), np.arange(n) % 10
    plain = ArraySource("plain", (images, labels), None, 10)
    augmented = ArraySource("augmented", (images, labels), None, 10, augment="crop")
    unordered = _UnorderedDigits("unordered", (images, labels), None, 10)
    lots = 1024.0
    prefix = _image_prefix((2, 2, 1))
    # 3 epochs: cache iff f + 3 g <= 1.5 f, i.e. g <= f / 6
    pays, does_not = (lambda: CacheCosts(3e-4, 0.49e-4, 3)), (lambda: CacheCosts(3e-4, 0.51e-4, 3))
    assert choose_mode("auto", plain, prefix, lots, pays) == "memory"
    assert choose_mode("auto", plain, prefix, lots, does_not) == "off"
    # one epoch: recomputing is one forward pass, as is filling the cache: never worth it
    assert not CacheCosts(1.0, 0.0, 1).worth_caching() and CacheCosts(1.0, 0.0, 3).worth_caching()
    # the budget: n examples x 16 float32 features, in MiB
    assert choose_mode("auto", plain, prefix, n * 64 / 2**20, pays) == "memory"
    assert choose_mode("auto", plain, prefix, (n * 64 - 1) / 2**20, pays) == "off"
    # bfloat16 features (a mixed_bfloat16 prefix) take 2 bytes a number, not 4
    x = keras.Input((2, 2, 1))
    half = keras.Model(x, keras.layers.Dense(16, dtype="bfloat16")(keras.layers.Flatten()(x)))
    assert feature_bytes(half, n) == n * 32
    assert choose_mode("auto", plain, half, n * 32 / 2**20, pays) == "memory"
    # not exact with random augmentation, not possible without the order: off, or refused when asked for
    assert choose_mode("auto", augmented, prefix, lots, pays) == "off"
    assert choose_mode("auto", unordered, prefix, lots, pays) == "off"
    for data in (augmented, unordered):
        with pytest.raises(ConfigError):
            choose_mode("memory", data, prefix, lots)
    assert choose_mode("memory", plain, prefix, 0.0, does_not) == "memory"  # as asked
    assert choose_mode("off", plain, prefix, lots, pays) == choose_mode("auto", plain, None, lots, pays) == "off"


def test_auto_prefix_cache_measures_on_this_machine_and_logs_its_choice(quiet_log):
    """The costs are timed on the data (positive, per example), and the log line gives them."""
    n = 512
    images, labels = np.random.default_rng(0).integers(0, 255, (n, 8, 8, 1), np.uint8), np.arange(n) % 10
    data = ArraySource("plain", (images, labels), None, 10)
    prefix = _image_prefix((8, 8, 1))
    costs = measure_costs(prefix_forward(prefix), data, batch_size=64, epochs=3)
    assert costs.epochs == 3 and 0 < costs.forward_s < 1 and 0 < costs.gather_s < 1
    lines = []
    cache = problem_cache("stage_01", prefix, False, data, "auto", 1024.0, None, jit_compile=False,
                          batch_size=64, epochs=3, log=lines.append)
    assert len(lines) == 1 and "measured: the prefix's forward pass" in lines[0]
    assert ("cached the frozen prefix" in lines[0]) == (cache is not None)
    assert ("recomputed every batch" in lines[0]) == (cache is None)


@pytest.mark.parametrize("gpus, cpu_flags, expected", [
    ([{"compute_capability": (9, 0)}], set(), "mixed_bfloat16"),  # Hopper
    ([{"compute_capability": (8, 0)}], set(), "mixed_bfloat16"),  # A100: the first with bfloat16 units
    ([{"compute_capability": (8, 6)}], set(), "mixed_bfloat16"),
    ([{"compute_capability": (7, 5)}], {"avx512_bf16"}, "mixed_float16"),  # Turing: the GPU decides, not the CPU
    ([{"compute_capability": (7, 0)}], set(), "mixed_float16"),  # V100
    ([{"compute_capability": (6, 1)}], {"amx_bf16"}, "float32"),  # Pascal
    ([{"device_name": "no capability reported"}], set(), "float32"),
    ([], {"avx512_bf16", "avx512f"}, "mixed_bfloat16"),  # Cooper Lake
    ([], {"amx_bf16", "amx_tile"}, "mixed_bfloat16"),  # Sapphire Rapids
    ([], {"avx2", "avx512f", "avx512_vnni"}, "float32"),  # no bfloat16 instructions
    ([], set(), "float32"),
], ids=["cc9.0", "cc8.0", "cc8.6", "cc7.5", "cc7.0", "cc6.1", "cc_unknown", "cpu_avx512bf16", "cpu_amx",
        "cpu_avx512", "cpu_plain"])
def test_auto_precision_by_gpu_compute_capability_and_cpu_flags(gpus, cpu_flags, expected):
    # faked device details (what tf.config.experimental.get_device_details returns) and cpuinfo flags
    assert resolve_precision("auto", gpu_details=gpus, cpu_flags=cpu_flags)[0] == expected
    assert resolve_precision("float32", gpu_details=gpus, cpu_flags=cpu_flags)[0] == "float32"  # as configured


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_logits(quiet_log, precision):
    import keras

    trainer = _trainer(tiny_config(precision=precision), log=quiet_log, jit_compile=True)
    records = trainer.run()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert trainer.network.stages[0].get_layer("stage_00_conv").compute_dtype != "float32"
    assert trainer.heads[1].output.dtype == "float32"
    assert records[-1]["test_accuracy"] > 0.3, records


def _test_probabilities(network, heads, data) -> list[np.ndarray]:
    """Every stage's test probabilities: image -> stages 0..j -> head j, in inference mode."""
    images = np.concatenate([x.numpy() for x, _ in data.eval_batches("test", 512)])
    return [
        tf.nn.softmax(network.compose(upto=j + 1, head=heads[j])(images, training=False)).numpy()
        for j in range(network.num_stages)
    ]


def test_decoupled_trains_every_stage_in_one_pass(tmp_path, quiet_log):
    trainer = _trainer(tiny_config(mode="decoupled", epochs_per_stage=2), str(tmp_path / "run"), log=quiet_log)
    initial = [[(v, v.numpy().copy()) for v in stage.trainable_variables] for stage in trainer.network.stages]
    records = trainer.run()
    assert [r["stage"] for r in records] == [0, 1]
    assert all(r["problem"] == f"stage_{r['stage']:02d}" for r in records)
    # one pass of epochs_per_stage epochs trained every stage
    epochs = [(r["problem"], r["epoch"]) for r in trainer.runlog.records if r["event"] == "epoch"]
    assert epochs == [("decoupled", 0), ("decoupled", 1)]
    for j, variables in enumerate(initial):
        assert variables and all(not np.array_equal(v.numpy(), value) for v, value in variables), j
    # each record's accuracies are those of its stage's classifier and the 2^j-weighted ensemble
    probs = _test_probabilities(trainer.network, trainer.heads, trainer.data)
    labels = trainer.data.labels("test")
    ensemble = (1 * probs[0] + 2 * probs[1]) / 3
    for r, p, e in zip(records, probs, [probs[0], ensemble]):
        assert r["test_accuracy"] == pytest.approx(np.mean(p.argmax(-1) == labels), abs=1e-9)
        assert r["ensemble_accuracy"] == pytest.approx(np.mean(e.argmax(-1) == labels), abs=1e-9)
        assert r["test_accuracy"] > 0.5, records
    exports = sorted(p.name for p in (tmp_path / "run" / "export").iterdir())
    assert exports == ["layerwise_cnn_stage_00", "layerwise_cnn_stage_01", "models.config"]
    # a rerun loads everything
    again = _trainer(tiny_config(mode="decoupled", epochs_per_stage=2), str(tmp_path / "run"), log=quiet_log)
    assert [r["test_accuracy"] for r in again.run()] == [r["test_accuracy"] for r in records]


def test_decoupled_stage_0_trains_exactly_as_if_it_were_alone(quiet_log):
    """Decoupled Greedy Learning: no gradient crosses a stage boundary, so stage 0 (and its head)
    after some steps of the two-stage step are what the same steps give stage 0 alone."""
    config = resolve(tiny_config(mode="decoupled"))
    data = load_data(config)

    def train(num_stages: int):
        trainer = GreedyTrainer(build_network(config, data), data, config, verbose=0, log=quiet_log)
        heads = [trainer.build_head(j) for j in range(trainer.network.num_stages)]  # seeded: the same weights
        models = decoupled_models(trainer.network, heads)[:num_stages]
        optimizers = [make_optimizer(config.optim, config.optim.lr) for _ in models]
        for model, optimizer in zip(models, optimizers):
            optimizer.build(model.trainable_variables)
        initial = [(v, v.numpy().copy()) for v in models[-1].trainable_variables]
        step = make_decoupled_step(
            models, optimizers, weight_decay=config.optim.weight_decay, global_batch_size=config.batch_size,
            strategy=tf.distribute.get_strategy(),
        )
        for x, y in data.train_batches(config.batch_size, 0, 0).take(8):
            assert bool(step(x, y).finite)
        assert initial and all(not np.array_equal(v.numpy(), value) for v, value in initial), "no training"
        return [v.numpy() for v in models[0].variables]

    alone, together = train(1), train(2)
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)


# The allocator's statistics differ by machine: on when oneDNN is (by default only on CPUs with
# AVX-512 VNNI/bfloat16/AMX) or with TF_CPU_ALLOCATOR_USE_BFC, off otherwise (an AVX2-only CPU).
# Each environment runs in its own process, so both behaviours are checked on every machine.
MEMORY_WINDOW = """
import json
import tensorflow as tf
from layerwise.analysis.memory import allocator_reports_memory, current_memory_mb, peak_memory_mb, reset_peak_memory
reset_peak_memory()
big = tf.ones([64, 1024, 1024])  # 256 MiB
float(tf.reduce_sum(big))
big_peak = peak_memory_mb()
del big
reset_peak_memory()
float(tf.reduce_sum(tf.ones([4, 1024, 1024])))  # 16 MiB
print(json.dumps({"reports": allocator_reports_memory(), "big": big_peak, "small": peak_memory_mb(),
                  "current": current_memory_mb()}))
"""
ALLOCATOR_ENVIRONMENTS = {
    "this_machine": {},
    "onednn_off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "onednn_off_bfc": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
}


@pytest.mark.parametrize("environment", ALLOCATOR_ENVIRONMENTS)
def test_peak_memory_counts_the_tensors_of_this_window_or_says_it_cannot(environment):
    import json
    import os
    import subprocess

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", **ALLOCATOR_ENVIRONMENTS[environment]}
    if not ALLOCATOR_ENVIRONMENTS[environment]:
        env.pop("TF_CPU_ALLOCATOR_USE_BFC", None)
    proc = subprocess.run([sys.executable, "-c", MEMORY_WINDOW], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    if environment == "onednn_off_bfc":
        assert measured["reports"]
    if measured["reports"]:
        assert measured["big"] >= 256 and measured["small"] < 128 and measured["current"] is not None
    else:  # no stand-in number (the process's peak RSS would read ~1 GiB here)
        assert measured["big"] is None and measured["small"] is None and measured["current"] is None


def test_stage_table_says_n_a_where_memory_was_not_measured():
    from layerwise.run.report import stage_table

    measured = stage_table([{"stage": 0, "test_accuracy": 0.5, "peak_memory_mb": 12.0}])
    assert "peak MiB" in measured.splitlines()[0] and "| 12 |" in measured and "n/a" not in measured
    unmeasured = stage_table([{"stage": 0, "test_accuracy": 0.5, "peak_memory_mb": None}])
    assert "peak MiB" in unmeasured.splitlines()[0] and "| n/a |" in unmeasured
    assert "TF_CPU_ALLOCATOR_USE_BFC" in unmeasured
    assert "peak MiB" not in stage_table([{"stage": 0, "test_accuracy": 0.5}])  # nothing to measure


def test_stage_records_carry_their_training_peak_memory(quiet_log):
    # width 64: every activation over 256 KiB, which oneDNN's CPU allocator counts (it leaves out smaller ones)
    trainer = _trainer(tiny_config(model_options={"num_stages": 2, "width": 64, "downsample_at": [1]}),
                       log=quiet_log, cache_prefix="memory")
    records = trainer.run()
    network, config = trainer.network, trainer.config

    def mib(values: int) -> float:  # of float32
        return values * 4 / 2**20

    if not allocator_reports_memory():  # e.g. an AVX2-only CPU: recorded as not measured, not as a guess
        assert all(e["peak_memory_mb"] is None for e in trainer.runlog.records if e["event"] == "epoch")
        assert all(r["peak_memory_mb"] is None for r in records)
        return
    for r in records:
        epochs = [e["peak_memory_mb"] for e in trainer.runlog.records
                  if e["event"] == "epoch" and e["problem"] == r["problem"]]
        assert r["peak_memory_mb"] == max(epochs) > 0
        # a training step holds at least one batch of its stage's output
        assert r["peak_memory_mb"] >= mib(config.batch_size * np.prod(network.output_shape(r["stage"])))
    if "CPU" in memory_device():  # stage 1's steps read the cached stage-0 features, held in memory
        cache = mib(trainer.data.num_train * np.prod(network.output_shape(0)))
        assert cache > 1 and records[1]["peak_memory_mb"] >= cache


def test_benchmark_case_measures_every_stage_and_summarizes():
    from apps.throughput import SHAPES, merge_repeats, run_case
    from apps.throughput_tables import markdown, summarize

    cases = [dict(size="tiny", shape="mnist5k", variant=v, head="paper") for v in ("no_tape", "end_to_end")]
    results = [run_case(case) for case in cases]
    stages = results[0]["per_stage"]
    assert [s["stage"] for s in stages] == [0, 1]
    steps = SHAPES["tiny"]["mnist5k"]["steps"]
    assert all(s["images_per_s"] > 0 and s["timed_steps"] == steps for s in stages)
    if not allocator_reports_memory():  # "n/a" in the table, never a stand-in number
        assert all(s["peak_mib"] is None for s in stages) and results[1]["peak_mib"] is None
        assert "max_stage_over_e2e_peak" not in summarize(results)["mnist5k"]
        assert "n/a" in markdown(summarize(results))
        return
    assert all(s["peak_mib"] > 0 for s in stages)
    # repeats merge into medians with their ranges
    slower = dict(results[0], per_stage=[dict(s, images_per_s=s["images_per_s"] / 2) for s in stages])
    merged = merge_repeats([results[0], slower, results[0]])
    assert merged["repeats"] == 3 and merged["per_stage"][1]["images_per_s"] == stages[1]["images_per_s"]
    assert merged["per_stage"][1]["images_per_s_range"] == [stages[1]["images_per_s"] / 2, stages[1]["images_per_s"]]
    summary = summarize(results)["mnist5k"]
    assert summary["max_stage_over_e2e_peak"] == max(s["peak_mib"] for s in stages) / results[1]["peak_mib"]
    assert summary["stages"][1]["no_tape_gflop_per_s"] > 0
    assert "| 1 |" in markdown({"mnist5k": summary})


@pytest.mark.slow
def test_speed_compare_times_our_run_and_a_reference_in_alternating_rounds():
    from apps.speed_compare import compare, markdown, summarize

    tiny = ["--dataset", "digits", "--num_stages", "1", "--downsample_at", "", "--width", "8", "--aux_width", "8",
            "--epochs_per_stage", "1"]
    reference = f"{sys.executable} -c 'import json; print(json.dumps({{\"total_s\": 2.0, \"last_test_acc\": 0.5}}))'"
    log = []
    runs = compare({"ours": tiny, "broken": ["--width", "0"]}, reference, repeats=1, log=log.append)
    assert [line.split(":")[0] for line in log] == ["round 1/1 ours", "round 1/1 broken", "round 1/1 reference"]
    summary = summarize(runs)
    ours = summary["ours"]
    assert ours["runs"] == 1 and 0 < ours["steps_s"]["median"] < ours["fit_s"]["median"] < ours["wall_s"]["median"]
    assert ours["last_test_acc"]["median"] > 0.2
    assert ours["fit_over_reference"] == ours["fit_s"]["median"] / 2.0
    assert summary["broken"]["runs"] == 0 and "width" in summary["broken"]["errors"][0]
    assert summary["reference"]["last_test_acc"]["median"] == 0.5
    assert "| ours (1 runs) |" in markdown(summary)


@pytest.mark.slow
def test_bench_profile_writes_a_trace_per_stage(tmp_path):
    result = run_cli("apps.bench", "--profile_dir", str(tmp_path), "--size", "tiny", "--precisions", "float32",
                     timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    for stage in ("stage_00", "stage_01"):
        assert glob.glob(str(tmp_path / "float32" / stage / "**" / "*.xplane.pb"), recursive=True), stage
    assert "float32 stage 1:" in (tmp_path / "profile.md").read_text()
