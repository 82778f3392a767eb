"""Config -> data -> zoo network -> ``layerwise.fit`` -> table and report: the run behind ``apps.train``.

The CLI's only additions to the library are the zoo (``models``: a model *name* becomes a
network) and the printed table and report. Everything is validated before anything is written:
a bad configuration leaves no workdir.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable

import keras
import tensorflow as tf

import layerwise
from layerwise.data import DataSource
from layerwise.distribute import is_chief, make_strategy, synchronize_batchnorm
from layerwise.config import RunOptions, TrainConfig
from layerwise.run.loading import load_data
from layerwise.run.network_file import has_network
from layerwise.run.report import stage_table, write_report
from layerwise.restore import RestoredRun, restore_run
from layerwise.run.workdir import check_workdir
from layerwise.training.stage_groups import group_stages
from layerwise.nn.network import StagedNetwork
from layerwise.precision import dtype_policy, settle_precision
from models import build_model
from models.zoo import resolve_options

__all__ = ["build_network", "load_data", "resolve", "restore", "run_training"]


def build_network(config: TrainConfig, data: DataSource, strategy=None) -> StagedNetwork:
    """Builds the configured zoo model with weights seeded by ``config.seed``, under the
    strategy's scope and ``config.precision``'s dtype policy (synchronized BatchNorm when
    configured), as ``config.local.modules`` local modules when set."""
    keras.utils.set_random_seed(config.seed)
    with (strategy or tf.distribute.get_strategy()).scope(), dtype_policy(config.precision):
        network = build_model(config.model, data.image_shape, data.num_classes, **config.model_options)
        if config.local.modules:
            network = group_stages(network, config.local.modules)
    if config.sync_batchnorm:
        for stage in network.stages:
            synchronize_batchnorm(stage)
    return network


def resolve(config: TrainConfig) -> TrainConfig:
    """Validates ``config``, fills in the model builder's default options and turns
    ``precision="auto"`` into the policy this hardware runs best (``settle_precision``)."""
    config.validate()
    return settle_precision(config)[0].replace(model_options=resolve_options(config.model, config.model_options))


def restore(workdir: str, trust_pickle: bool = False) -> RestoredRun:
    """The finished run in ``workdir`` rebuilt with its trained weights and its dataset (see
    layerwise.restore): the network saved with the run, or the zoo's for a run written before
    networks were saved; ``trust_pickle``: the data may be read from pickles (``--trust_pickle``)."""
    builder = None if has_network(workdir) else (lambda config, data: build_network(resolve(config), data))
    return restore_run(workdir, builder, lambda config: load_data(config, trust_pickle))


def run_training(
    config: TrainConfig,
    workdir: str | None,
    *,
    strategy: tf.distribute.Strategy | str | None = None,
    options: RunOptions | None = None,
    verbose: int = 1,
    log: Callable[[str], None] = print,
    callbacks=None,
    trust_pickle: bool = False,
    download: bool = True,
) -> list[dict[str, Any]]:
    """Trains ``config`` into ``workdir`` (resuming what is there) and returns stage records.

    Args:
        config: what to train (the run's fingerprint, written to ``config.json``).
        workdir: run directory (``None``: in memory only).
        strategy: a ``tf.distribute.Strategy`` or a name for ``make_strategy`` (``auto``,
            ``one_device``, ``mirrored``, ``multi_worker``); not part of the fingerprint.
        options: XLA and prefix-cache options; not part of the fingerprint.
        callbacks: Keras callbacks for ``layerwise.fit``.
        trust_pickle: the data may be read from pickles (``--trust_pickle``; CIFAR's python version).
        download: a TFDS dataset not yet in ``data_dir`` may be downloaded (``--download``).

    On a multi-worker cluster only the chief logs and writes into ``workdir``; the other
    workers write to a temporary directory they delete at the end.

    Raises:
        LayerwiseError: bad configuration, unavailable data, a workdir of another
            configuration, a corrupt checkpoint or a non-finite loss.
    """
    if isinstance(strategy, str):  # first: multi_worker must start before TensorFlow runs
        strategy = make_strategy(strategy)
    chief = is_chief(strategy)
    config, decided = settle_precision(config)  # decided here, before the network is built under it
    if decided and chief:
        log(decided)
    config = resolve(config)
    options = (options or RunOptions()).validate(config)
    if workdir is not None and chief:
        check_workdir(workdir, config)  # a bad --workdir is refused before any data is read
    data = load_data(config, trust_pickle, download)
    network = build_network(config, data, strategy)
    start = time.perf_counter()
    result = layerwise.fit(
        network, data, config=config, workdir=workdir, strategy=strategy, callbacks=callbacks,
        verbose=verbose if chief else 0, log=log if chief else (lambda message: None), **dataclasses.asdict(options),
    )
    if chief:
        log("")
        log(stage_table(result.records))
        log(f"\n{config.mode} training of {network.name} on {data.name}: {time.perf_counter() - start:.1f} s")
    if workdir is not None and chief:
        _report_after_training(workdir, log)
    return result.records


def _report_after_training(workdir: str, log: Callable[[str], None]) -> None:
    """Writes the finished run's report; a report that fails is logged, never raised: the run
    itself is done and intact, and ``python -m apps.report WORKDIR`` can retry it."""
    try:
        write_report(workdir)
    except Exception as e:  # noqa: BLE001 (any failure of the report, a bug included, must not fail the run)
        log(f"warning: training finished, but its report could not be written ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:300]}); the run is complete: python -m apps.report {workdir} retries it")
        return
    log(f"results in {os.path.abspath(workdir)} (report.md, report.html, plots/)")
