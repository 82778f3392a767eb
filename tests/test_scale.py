"""Prefix cache, precision, XLA and decoupled mode on tiny problems."""

import numpy as np
import pytest

from apps.runner import build_network, load_data, resolve
from conftest import tiny_config
from layerwise.run.config import RunOptions
from layerwise.errors import ConfigError
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


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_trains_with_float32_logits(quiet_log, precision):
    import keras

    trainer = _trainer(tiny_config(precision=precision), log=quiet_log, jit_compile=True)
    records = trainer.run()
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert trainer.network.stages[0].get_layer("stage_00_conv").compute_dtype != "float32"
    assert trainer.heads[1].output.dtype == "float32"
    assert records[-1]["test_acc"] > 0.3, records


def test_decoupled_trains_every_stage_in_one_pass(tmp_path, quiet_log):
    trainer = _trainer(tiny_config(mode="decoupled", epochs_per_stage=2), str(tmp_path / "run"), log=quiet_log)
    records = trainer.run()
    assert [r["stage"] for r in records] == [0, 1]
    assert all(r["problem"] == f"stage_{r['stage']:02d}" for r in records)
    assert records[-1]["test_acc"] > 0.5 and records[-1]["ensemble_acc"] > 0.5, records
    exports = sorted(p.name for p in (tmp_path / "run" / "export").iterdir())
    assert exports == ["layerwise_cnn_stage_00", "layerwise_cnn_stage_01", "models.config"]
    # a rerun loads everything
    again = _trainer(tiny_config(mode="decoupled", epochs_per_stage=2), str(tmp_path / "run"), log=quiet_log)
    assert [r["test_acc"] for r in again.run()] == [r["test_acc"] for r in records]


def test_peak_memory_counts_the_tensors_of_this_window():
    import tensorflow as tf

    from layerwise.analysis.memory import peak_memory_mb, reset_peak_memory

    reset_peak_memory()
    big = tf.ones([64, 1024, 1024])  # 256 MiB
    float(tf.reduce_sum(big))
    assert peak_memory_mb() >= 256
    del big
    reset_peak_memory()
    float(tf.reduce_sum(tf.ones([4, 1024, 1024])))  # 16 MiB
    assert peak_memory_mb() < 128


def test_stage_records_carry_their_training_peak_memory(quiet_log):
    records = _trainer(tiny_config(), log=quiet_log).run()
    assert all(r["peak_memory_mb"] > 0 for r in records)


def test_benchmark_case_measures_every_stage_and_summarizes():
    from apps.benchmark import markdown, run_case, summarize

    cases = [dict(size="tiny", shape="mnist5k", variant=v, head="paper") for v in ("no_tape", "end_to_end")]
    results = [run_case(case) for case in cases]
    stages = results[0]["per_stage"]
    assert [s["stage"] for s in stages] == [0, 1]
    assert all(s["images_per_s"] > 0 and s["peak_mib"] > 0 and s["timed_steps"] == 2 for s in stages)
    summary = summarize(results)["mnist5k"]
    assert summary["max_stage_over_e2e_peak"] == max(s["peak_mib"] for s in stages) / results[1]["peak_mib"]
    assert "| 1 |" in markdown({"mnist5k": summary})
