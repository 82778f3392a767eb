"""Synthetic compressed sensing and the depth experiment of the optimisation-inspired nets.

Li, Yang, Chen & Lin (ACML 2018) compare networks built from GD, heavy ball, two Nesterov
methods and ADMM on a sparse-recovery regression at several depths. Here: A in R^{m x n}
Gaussian with unit-norm columns, x* with entries non-zero with probability ``sparsity`` and
N(0, 1) values, y = A x* + Gaussian noise at ``snr_db`` (per sample). Every family is trained at
every depth on the same data with the same budget (Adam, custom loop), and compared to its own
algorithm run for the same number of iterations.

This module takes arguments and never reads flags; ``apps.optnets`` is the CLI. TensorFlow is imported lazily so that
validating a config stays instant. It does not
import the model zoo either: the caller passes ``build_net(family, A, lam, depth)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Callable

import numpy as np

import models.proximal as proximal
from layerwise.errors import ConfigError

FAMILIES = ("gd", "hb", "agd", "agd2", "admm")
LABELS = {"gd": "GD (ISTA)", "hb": "HB", "agd": "AGD (Nesterov)", "agd2": "AGD2", "admm": "ADMM"}


@dataclasses.dataclass(frozen=True)
class CSConfig:
    """Everything the depth experiment depends on (saved as ``config.json``)."""

    m: int = 250
    n: int = 500
    sparsity: float = 0.1
    snr_db: float = 40.0
    lam: float = 0.1
    rho: float = 1.0
    depths: tuple[int, ...] = (2, 4, 8, 12, 16)
    families: tuple[str, ...] = FAMILIES
    train_samples: int = 4000
    test_samples: int = 1000
    steps: int = 300
    batch_size: int = 64
    learning_rate: float = 1e-4
    share_weights: bool = True
    train_coefficients: bool = True
    seed: int = 0

    def validate(self) -> "CSConfig":
        for field in ("m", "n", "train_samples", "test_samples", "batch_size"):
            if getattr(self, field) <= 0:
                raise ConfigError(f"{field} must be positive, got {getattr(self, field)}")
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if not 0.0 < self.sparsity <= 1.0:
            raise ConfigError(f"sparsity must be in (0, 1], got {self.sparsity}")
        if self.lam < 0 or self.rho <= 0 or self.learning_rate <= 0:
            raise ConfigError("lam must be >= 0, rho and learning_rate > 0")
        if not self.depths or any(k <= 0 for k in self.depths):
            raise ConfigError(f"depths must be positive integers, got {list(self.depths)}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            raise ConfigError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
        return self


def make_matrix(m: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian ``(m, n)`` matrix with unit-norm columns."""
    A = rng.normal(size=(m, n))
    return A / np.linalg.norm(A, axis=0, keepdims=True)


def sample(A, num, sparsity, snr_db, rng) -> tuple[np.ndarray, np.ndarray]:
    """``num`` pairs (x*, y = A x* + noise) at the given per-sample SNR (dB)."""
    n = A.shape[1]
    x = rng.normal(size=(num, n)) * (rng.random((num, n)) < sparsity)
    clean = x @ A.T
    power = np.mean(clean**2, axis=1, keepdims=True)
    noise = rng.normal(size=clean.shape) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return x, clean + noise


def nmse_db(x_hat, x) -> float:
    """10 log10( sum ||x_hat - x||^2 / sum ||x||^2 ) over a test set."""
    return float(10.0 * math.log10(np.sum((x_hat - x) ** 2) / np.sum(x**2)))


def train_net(net, x_train, y_train, steps, batch_size, learning_rate, seed=0) -> list[float]:
    """Trains ``net`` (y -> x_hat) with Adam on the squared error; returns the loss per step."""
    import keras
    import tensorflow as tf

    x_train = tf.constant(x_train, dtype=net.compute_dtype)
    y_train = tf.constant(y_train, dtype=net.compute_dtype)
    optimizer = keras.optimizers.Adam(learning_rate)
    optimizer.build(net.trainable_variables)

    @tf.function
    def step(idx):
        xb, yb = tf.gather(x_train, idx), tf.gather(y_train, idx)
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.reduce_sum(tf.square(net(yb) - xb), axis=1))
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, x_train.shape[0], size=batch_size).astype(np.int32)
        losses.append(float(step(tf.constant(idx))))
        if not math.isfinite(losses[-1]):
            break
    return losses


def run_depth_experiment(
    config: CSConfig,
    build_net: Callable[..., object],
    log: Callable[[str], None] = print,
) -> dict:
    """Trains every family at every depth; returns NMSE (dB) of learned nets and algorithms.

    Args:
        config: the experiment (validated here).
        build_net: ``build_net(family, A, lam, depth, **options) -> keras.Model`` with analytic
            initialisation (``models.unrolled.build_unrolled``).
        log: progress sink.

    Returns:
        ``{"config", "learned": {family: {depth: nmse}}, "algorithm": {...}, "initial": {...},
        "seconds": {...}}``; depths are string keys (JSON).
    """
    import keras

    config.validate()
    rng = np.random.default_rng(config.seed)
    A = make_matrix(config.m, config.n, rng)
    x_train, y_train = sample(A, config.train_samples, config.sparsity, config.snr_db, rng)
    x_test, y_test = sample(A, config.test_samples, config.sparsity, config.snr_db, rng)
    results = {"config": dataclasses.asdict(config), "learned": {}, "algorithm": {},
               "initial": {}, "final_loss": {}, "seconds": {}}
    for family in config.families:
        for key in ("learned", "algorithm", "initial", "final_loss", "seconds"):
            results[key][family] = {}
        for depth in config.depths:
            start = time.perf_counter()
            baseline = proximal.run_algorithm(family, A, y_test, config.lam, depth, rho=config.rho)
            keras.utils.set_random_seed(config.seed)
            options = dict(share_weights=config.share_weights,
                           train_coefficients=config.train_coefficients)
            if family == "admm":
                options["rho"] = config.rho
            net = build_net(family, A, config.lam, depth, **options)
            initial = nmse_db(net(y_test.astype(np.float32)).numpy(), x_test)
            losses = train_net(net, x_train, y_train, config.steps, config.batch_size,
                               config.learning_rate, seed=config.seed)
            learned = nmse_db(net(y_test.astype(np.float32)).numpy(), x_test)
            if not math.isfinite(learned):
                learned = float("nan")
            seconds = time.perf_counter() - start
            d = str(depth)
            results["algorithm"][family][d] = nmse_db(baseline, x_test)
            results["initial"][family][d] = initial
            results["learned"][family][d] = learned
            results["final_loss"][family][d] = losses[-1] if losses else None
            results["seconds"][family][d] = round(seconds, 2)
            log(f"{family:5s} K={depth:2d}: algorithm {results['algorithm'][family][d]:7.2f} dB, "
                f"learned {learned:7.2f} dB ({seconds:.1f} s)")
    return results


def markdown_table(results: dict) -> str:
    """Method x depth table of test NMSE (dB), learned nets then un-learned algorithms."""
    depths = list(results["config"]["depths"])
    lines = ["| method | " + " | ".join(f"K={k}" for k in depths) + " |",
             "|---" * (len(depths) + 1) + "|"]
    for kind, suffix in (("learned", " net (learned)"), ("algorithm", " algorithm")):
        for family, row in results[kind].items():
            cells = " | ".join(f"{row[str(k)]:.2f}" for k in depths)
            lines.append(f"| {LABELS[family]}{suffix} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict, workdir: str) -> dict:
    """Writes ``results.json``, ``report.md`` and ``nmse_vs_depth.png`` to ``workdir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(workdir, exist_ok=True)
    paths = {k: os.path.join(workdir, v) for k, v in
             (("json", "results.json"), ("markdown", "report.md"), ("plot", "nmse_vs_depth.png"))}
    with open(paths["json"], "w") as f:
        json.dump(results, f, indent=2)
    cfg = results["config"]
    with open(paths["markdown"], "w") as f:
        f.write("# Optimisation-inspired unrolled nets: test NMSE (dB, lower is better)\n\n")
        f.write(f"m={cfg['m']}, n={cfg['n']}, sparsity={cfg['sparsity']}, SNR={cfg['snr_db']} dB, "
                f"lambda={cfg['lam']}, {cfg['train_samples']} training samples, "
                f"{cfg['steps']} Adam steps (batch {cfg['batch_size']}, lr {cfg['learning_rate']}), "
                f"shared weights={cfg['share_weights']}, seed {cfg['seed']}.\n\n")
        f.write(markdown_table(results))
    fig, ax = plt.subplots(figsize=(6, 4))
    depths = list(cfg["depths"])
    for i, family in enumerate(results["learned"]):
        color = f"C{i}"
        ax.plot(depths, [results["learned"][family][str(k)] for k in depths], "o-", color=color,
                label=f"{LABELS[family]} net")
        ax.plot(depths, [results["algorithm"][family][str(k)] for k in depths], "--", color=color,
                alpha=0.6, label=f"{LABELS[family]} algorithm")
    ax.set_xlabel("depth K (layers = iterations)")
    ax.set_ylabel("test NMSE (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(paths["plot"], dpi=120)
    plt.close(fig)
    return paths
