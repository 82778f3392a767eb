"""Config -> dataset -> staged network -> trainer -> records: the run behind ``apps.train``.

Everything is validated before anything is written: a bad configuration leaves no workdir.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable

import keras
import tensorflow as tf

from layerwise.run.config import RunOptions, TrainConfig
from layerwise.data import DataSource, load_dataset
from layerwise.data.crops import with_crops
from layerwise.distribute import is_chief, make_strategy, synchronize_batchnorm, worker_workdir
from layerwise.errors import ConfigError
from layerwise.training.optim import dtype_policy
from layerwise.run.report import stage_table, write_report
from layerwise.run.restore import RestoredRun, restore_run
from layerwise.training.network import StagedNetwork
from layerwise.training.trainer import GreedyTrainer
from layerwise.run.workdir import prepare_workdir
from models import build_model
from models.registry import resolve_options


def load_data(config: TrainConfig) -> DataSource:
    options: dict[str, Any] = {"split_seed": config.split_seed}
    if config.augment != "auto":
        options["augment"] = config.augment
    if config.data_dir:
        options["data_dir"] = config.data_dir
    data = load_dataset(config.dataset, **options)
    if config.validation_fraction:
        if not hasattr(data, "with_validation"):
            raise ConfigError(
                f"dataset {config.dataset!r} cannot hold out a validation split; "
                "drop --validation_fraction/--keep_best"
            )
        data = data.with_validation(config.validation_fraction, config.split_seed)
    return with_crops(data, config.crop_size)


def build_network(config: TrainConfig, data: DataSource, strategy=None) -> StagedNetwork:
    """Builds the configured model with weights seeded by ``config.seed``, under the strategy's
    scope and ``config.precision``'s dtype policy (synchronized BatchNorm when configured)."""
    keras.utils.set_random_seed(config.seed)
    with (strategy or tf.distribute.get_strategy()).scope(), dtype_policy(config.precision):
        network = build_model(config.model, data.image_shape, data.num_classes, **config.model_options)
    if config.sync_batchnorm:
        for stage in network.stages:
            synchronize_batchnorm(stage)
    return network


def resolve(config: TrainConfig) -> TrainConfig:
    """Validates ``config`` and fills in the model builder's default options."""
    config.validate()
    return config.replace(model_options=resolve_options(config.model, config.model_options))


def restore(workdir: str) -> RestoredRun:
    """The finished run in ``workdir`` rebuilt with its trained weights (see layerwise.run.restore)."""

    return restore_run(workdir, lambda config, data: build_network(resolve(config), data), load_data)


def run_training(
    config: TrainConfig,
    workdir: str | None,
    *,
    strategy: tf.distribute.Strategy | str | None = None,
    options: RunOptions | None = None,
    verbose: int = 1,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Trains ``config`` into ``workdir`` (resuming what is there) and returns stage records.

    Args:
        config: what to train (the run's fingerprint, written to ``config.json``).
        workdir: run directory (``None``: in memory only).
        strategy: a ``tf.distribute.Strategy`` or a name for ``make_strategy`` (``auto``,
            ``one_device``, ``mirrored``, ``multi_worker``); not part of the fingerprint.
        options: XLA and prefix-cache options; not part of the fingerprint.

    On a multi-worker cluster only the chief logs and writes into ``workdir``; the other
    workers write to a temporary directory they delete at the end.

    Raises:
        LayerwiseError: bad configuration, unavailable data, a workdir of another
            configuration, a corrupt checkpoint or a non-finite loss.
    """
    if isinstance(strategy, str):  # first: multi_worker must start before TensorFlow runs
        strategy = make_strategy(strategy)
    config = resolve(config)
    options = (options or RunOptions()).validate()
    if not is_chief(strategy):
        verbose, log = 0, lambda message: None
    data = load_data(config)
    network = build_network(config, data, strategy)
    with worker_workdir(workdir, strategy) as writes_to:
        trainer = GreedyTrainer(
            network, data, config, writes_to, strategy=strategy, options=options, verbose=verbose, log=log
        )
        if writes_to is not None:
            if prepare_workdir(writes_to, config.to_dict(), defaults=TrainConfig().to_dict()):
                log(f"resuming the run in {writes_to}")
        start = time.perf_counter()
        records = trainer.run()
    log("")
    log(stage_table(records))
    log(f"\n{config.mode} training of {network.name} on {data.name}: {time.perf_counter() - start:.1f} s")
    if workdir is not None and is_chief(strategy):
        write_report(workdir)
        log(f"results in {os.path.abspath(workdir)} (report.md, report.html, plots/)")
    return records
