"""Subprocess entry for the distributed tests (TensorFlow's devices are fixed per process).

    python tests/distributed_worker.py mirrored OUT.npz   # 2 logical CPUs: Mirrored vs one device
    TF_CONFIG=... python tests/distributed_worker.py worker OUT.npz WORKDIR [NUM_STAGES]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def config(num_stages=2, mode="layerwise", batch_size=32):
    from conftest import tiny_config

    return tiny_config(
        mode=mode,
        sync_batchnorm=True,
        epochs_per_stage=1,
        batch_size=batch_size,
        model_options={"num_stages": num_stages, "width": 8, "downsample_at": [], "batchnorm": True},
    )


# Mirrored and one-device steps agree to float rounding (~1e-7: the replicas' sums are added in
# another order), but training amplifies such differences step after step (with synchronized
# BatchNorm, ~1e-1 after the 45 steps of a batch-32 epoch on some CPUs). The comparison runs 5
# steps per stage (batch 256), where the runs agree to ~5e-4, and a broken reduction (a gradient
# not summed over replicas, a loss scaled twice) moves the weights by ~1e-2 or more.
MIRRORED_BATCH = 256


def weights(records_trainer_network):
    return {f"var_{i}": v.numpy() for i, v in enumerate(records_trainer_network)}


def train(strategy, workdir=None, mode="layerwise", batch_size=32):
    from apps.runner import build_network, load_data, resolve
    from layerwise.training.trainer import GreedyTrainer

    cfg = resolve(config(mode=mode, batch_size=batch_size))
    data = load_data(cfg)
    network = build_network(cfg, data, strategy)
    trainer = GreedyTrainer(network, data, cfg, workdir, strategy=strategy, verbose=0, log=lambda m: None)
    trainer.run()
    return [v for s in network.stages for v in s.variables] + [v for j in sorted(trainer.heads) for v in trainer.heads[j].variables]


def main(mode, out, workdir=None, num_stages="1"):
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from layerwise.distribute import make_strategy

        mirrored = make_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
        assert mirrored.num_replicas_in_sync == 2
        arrays = {}
        for mode in ("layerwise", "decoupled"):
            for name, strategy in (("one", None), ("two", mirrored)):
                arrays.update({f"{name}_{mode}_{k}": v for k, v in weights(train(strategy, mode=mode, batch_size=MIRRORED_BATCH)).items()})
        np.savez(out, **arrays)
    else:
        from apps.runner import run_training
        from layerwise.distribute import is_chief, make_strategy

        strategy = make_strategy("multi_worker")
        assert strategy.num_replicas_in_sync == 2
        captured = {}
        from layerwise.training import trainer as trainer_module

        original = trainer_module.GreedyTrainer.run

        def run(self):
            records = original(self)
            captured["vars"] = [v for s in self.network.stages for v in s.variables] + [
                v for j in sorted(self.heads) for v in self.heads[j].variables
            ]
            captured["workdir"] = self.workdir
            return records

        trainer_module.GreedyTrainer.run = run
        run_training(config(num_stages=int(num_stages)), workdir, strategy=strategy, verbose=0, log=lambda m: None)
        np.savez(out, chief=is_chief(strategy), workdir=str(captured["workdir"]), **weights(captured["vars"]))


if __name__ == "__main__":
    main(*sys.argv[1:])
