"""Peak memory of training a CIFAR ResNet as K local modules, module by module, against end to end.

InfoPro (Wang et al., "Revisiting Locally Supervised Learning: an Alternative to End-to-end
Training", ICLR 2021) reports 40-60% lower GPU memory when ResNet-32/110 trains as K
gradient-isolated modules: a module's backward pass keeps only its own activations (and its
auxiliary head's and decoder's), where end-to-end back-propagation keeps the whole network's. This
measures that figure: for each K, every module's training step (the earlier modules run in
inference mode outside the gradient tape, as in greedy and decoupled training) with the allocator's
peak reset before it (``layerwise.analysis.memory``), and the end-to-end step of the same network
(plain cross-entropy, no auxiliary terms). On a CPU the allocator does not count very small
tensors: the ``tiny`` size reads ~0 and only checks the machinery.

Each case runs in its own process (``python -m apps.module_memory CASE_JSON`` prints one JSON
line) so that cases share no allocator state, started with ``TF_CPU_ALLOCATOR_USE_BFC=true`` (unless
set otherwise) so that the CPU allocator keeps statistics on every CPU; ``apps.bench --module_memory 2,4,8,16`` runs them and
writes ``modules.json`` and ``modules.md``.

Example:
    >>> results = run_cases([2, 4], size="tiny")
    >>> print(markdown(results))
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import keras

from apps.runner import build_network
from layerwise.analysis.memory import (
    ALLOCATOR_STATS_ENV,
    current_memory_mb,
    largest_peak,
    memory_device,
    peak_memory_mb,
    reset_peak_memory,
)
from layerwise.data import load_dataset
from layerwise.config import RunOptions, TrainConfig
from layerwise.training.trainer import GreedyTrainer

# tiny: a smoke test (seconds; its numbers mean nothing). small: ResNet-32 as published (width 16)
# on CIFAR-shaped images, a CPU-sized batch. large: InfoPro's batch on a GPU.
SIZES = {
    "tiny": {"depth": 20, "width": 2, "image": (8, 8, 3), "batch": 4},
    "small": {"depth": 32, "width": 16, "image": (32, 32, 3), "batch": 64},
    "large": {"depth": 32, "width": 16, "image": (32, 32, 3), "batch": 1024},
}
STEPS = 2  # the first step traces; the peak is over both


def _peak_of(step, x, y) -> dict[str, float]:
    gc.collect()
    reset_peak_memory()
    resident = current_memory_mb()
    for _ in range(STEPS):
        float(step(x, y).loss)
    return {"peak_mib": peak_memory_mb(), "resident_mib": resident}


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One case in this process: ``k`` modules (0: end to end) of ``SIZES[case["size"]]``."""
    spec = SIZES[case["size"]]
    k = int(case["k"])
    config = TrainConfig().replace(
        dataset="synthetic", model=f"resnet{spec['depth']}", model_options={"width": spec["width"]},
        batch_size=spec["batch"], epochs_per_stage=1, local_loss=case.get("loss", "infopro") if k else "pred",
        local_modules=k, mode="end_to_end" if k == 0 else "layerwise", aux_conv_layers=0,
        precision="float32")  # memory compared in one dtype, whatever the hardware
    data = load_dataset("synthetic", image_shape=spec["image"], num_train=spec["batch"], num_test=spec["batch"])
    options = RunOptions().replace(cache_prefix="off")
    network = build_network(config, data)
    trainer = GreedyTrainer(network, data, config, None, options=options, verbose=0, log=lambda m: None)
    x, y = next(iter(data.train_batches(spec["batch"], 0, 0)))
    result = dict(case, loss=config.local.loss, memory_device=memory_device(), depth=spec["depth"], batch=spec["batch"],
                  modules=[])
    if k == 0:
        problem = trainer.end_to_end_problem()
        result.update(_peak_of(trainer.train_step(problem, trainer.make_optimizer(problem)), x, y))
        return result
    for j in range(network.num_stages):
        problem = trainer.stage_problem(j)
        step = trainer.train_step(problem, trainer.make_optimizer(problem))
        result["modules"].append(dict(module=j, **_peak_of(step, x, y)))
        network.stages[j].trainable = False
        del step, problem
        keras.backend.clear_session(free_memory=False)
    result["peak_mib"] = largest_peak(m["peak_mib"] for m in result["modules"])
    return result


def run_cases(ks: list[int], size: str = "small", loss: str = "infopro", log: Callable[[str], None] = print,
              timeout: float = 900) -> list[dict[str, Any]]:
    """End to end, then every K in ``ks``, each in its own process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    results = []
    for k in [0, *ks]:
        case = {"size": size, "k": k, "loss": loss}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "apps.module_memory", json.dumps(case)], cwd=root, check=False,
                              capture_output=True, text=True, timeout=timeout,
                              env={**ALLOCATOR_STATS_ENV, **os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            result = dict(case, error=(proc.stderr.strip().splitlines() or ["failed"])[-1])
        else:
            result = json.loads(lines[-1])
        result["wall_s"] = time.perf_counter() - start
        log(f"K={k or 'end to end'}: {result.get('error') or 'ok'} ({result['wall_s']:.0f} s)")
        results.append(result)
    return results


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """Per K: every module's peak, the largest, and its ratio to end to end."""
    ok = [r for r in results if "error" not in r]
    e2e = next((r for r in ok if r["k"] == 0), None)
    if not ok:
        return "no case succeeded\n"
    first = next((r for r in ok if r["k"]), ok[0])
    lines = [f"### ResNet-{first['depth']} as K local modules ({first['loss']}), batch {first['batch']}: "
             f"peak tensor memory on {first['memory_device']} (MiB)", "",
             "| K | per module | largest module | / end to end |", "|---:|---|---:|---:|"]
    for r in ok:
        ratio = f"{r['peak_mib'] / e2e['peak_mib']:.2f}" if e2e and r["peak_mib"] and e2e["peak_mib"] else "-"
        per = ", ".join(_mib(m["peak_mib"]) for m in r["modules"]) or "-"
        lines.append(f"| {r['k'] or 'end to end'} | {per} | {_mib(r['peak_mib'])} | {ratio} |")
    for r in results:
        if "error" in r:
            lines.append(f"| {r['k']} | error: {r['error']} | | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # one case per process (see run_cases)
    print(json.dumps(run_case(json.loads(sys.argv[1]))))
