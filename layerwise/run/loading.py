"""The one way a run's configuration becomes its data, for training, export and restore alike.

``load_data(config)`` loads the registered dataset ``config.dataset`` with the run's split seed,
augmentation and data directory, holds out the validation split and applies the crops, so a
rebuilt run (``layerwise.restore``) sees exactly the data its training saw.
"""

from __future__ import annotations

from typing import Any

from layerwise.data import DataSource, load_dataset
from layerwise.data.crops import with_crops
from layerwise.config import TrainConfig


def load_data(config: TrainConfig, trust_pickle: bool = False, download: bool = True) -> DataSource:
    """The dataset of ``config``: split, augmentation, data_dir, validation split and crops.

    ``trust_pickle`` lets a loader unpickle files in ``data_dir`` (CIFAR's python version); it is
    an explicit decision of the person running the command, never read from a run directory.
    So is ``download`` (``--download``): a TFDS dataset that is not prepared in ``data_dir`` is
    downloaded when its hosts answer (``layerwise.data.tfds``), unless it is false.

    Raises:
        UnknownNameError: an unknown dataset.
        DatasetUnavailableError: the data is not on disk and cannot be downloaded here.
        ConfigError: options the dataset cannot honour (a validation split of a streamed dataset).
    """
    options: dict[str, Any] = {"split_seed": config.split_seed}
    if config.augment != "auto":
        options["augment"] = config.augment
    if config.data_dir:
        options["data_dir"] = config.data_dir
    if trust_pickle:
        options["trust_pickle"] = True
    if not download:
        options["download"] = False
    data = load_dataset(config.dataset, **options)
    if config.validation_fraction:
        data = data.with_validation(config.validation_fraction, config.split_seed)
    return with_crops(data, config.crop_size)
