"""The family as its authors ran it, session 29 (issue 24): InfoPro's de-normalised target through
the configuration, and asynchronous DGL's worker scheduling and buffer-experiment network.

InfoPro: the authors' reconstruction target is ``InfoProResNet._image_restore(x)`` =
``x * std + mean`` (``networks/resnet.py`` of ``blackfeather-wang/InfoPro-Pytorch``); the data's
statistics reach the loss through the recorded configuration. DGL: one randomly chosen worker per
iteration, the slowed one drawn less often (``train_model`` in ``buffer_experiments/cifar_buffer.py``
of ``eugenium/DGL``: ``Categorical(probs=proba)`` after ``proba[layer_noise] -= noise``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from apps.runner import resolve, run_training
from conftest import tiny_config
from layerwise.data.embedded import load_digits
from layerwise.errors import ConfigError
from layerwise.run.restore import read_config
from layerwise.training.infopro_heads import reconstruction_loss, reconstruction_target
from layerwise.training.local_losses import InfoPro, config_local_loss, local_loss_options, with_image_statistics

CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255.0  # InfoPro's resnet.py
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32) / 255.0


# ----------------------------------------------------------------------------- InfoPro's target
def test_the_target_is_the_de_normalised_image_not_its_min_max_stretch():
    image = np.random.default_rng(0).uniform(0.1, 0.8, (2, 4, 4, 3)).astype(np.float32)
    normalised = (image - CIFAR_MEAN) / CIFAR_STD
    np.testing.assert_allclose(reconstruction_target(normalised, CIFAR_MEAN, CIFAR_STD), image, atol=1e-6)
    stretched = reconstruction_target(normalised).numpy()  # no statistics: each channel spans [0, 1]
    assert stretched.min() == 0.0 and stretched.max() == 1.0


def test_infopro_reads_its_statistics_and_records_them():
    loss = InfoPro(image_mean=list(CIFAR_MEAN), image_std=list(CIFAR_STD))
    assert loss.for_stage(0, 3).image_mean == loss.image_mean  # every module's loss has them
    recorded = local_loss_options(loss, required=True)
    assert recorded["infopro_image_mean"] == pytest.approx(list(CIFAR_MEAN))
    image = np.random.default_rng(1).uniform(0.1, 0.8, (2, 4, 4, 3)).astype(np.float32)
    normalised = (image - CIFAR_MEAN) / CIFAR_STD
    logits = np.random.default_rng(2).normal(size=image.shape).astype(np.float32)
    outputs = {"reconstruction": logits, "logits": np.zeros((2, 10), np.float32)}
    labels = np.array([1, 2])
    ours = loss(outputs, labels, normalised)  # recon_weight 5 x reconstruction + 0.5 x cross-entropy
    expected = 5.0 * np.mean(reconstruction_loss(logits, normalised, CIFAR_MEAN, CIFAR_STD)) + 0.5 * np.log(10)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    with pytest.raises(ConfigError, match="one value per channel"):
        InfoPro(image_mean=[0.5], image_std=[])


def test_unit_statistics_are_the_normalisation_on_the_0_1_scale():
    data = load_digits()
    mean, std = data.unit_statistics()
    np.testing.assert_allclose(mean, data.mean / 255.0, rtol=1e-6)
    np.testing.assert_allclose(std, data.std / 255.0, rtol=1e-6)
    config = tiny_config(local_loss="infopro")
    filled = with_image_statistics(config, (mean, std))
    assert filled.local.infopro_image_mean == pytest.approx(mean)
    assert config_local_loss(filled).image_std == pytest.approx(std)
    assert with_image_statistics(filled, ([0.0], [1.0])) is filled  # what a run recorded stays
    assert with_image_statistics(tiny_config(), (mean, std)) == tiny_config()  # not an InfoPro run


def test_an_infopro_run_records_the_data_statistics_and_resumes_with_them(tmp_path, quiet_log):
    """``layerwise.fit`` fills the statistics from the data into ``config.json``; the rerun on the
    same workdir (a resume) derives the same and is accepted; the loss rebuilt from the record has them."""
    config = resolve(tiny_config(local_loss="infopro", mode="decoupled", infopro_decoder_width=4))
    workdir = str(tmp_path / "run")
    run_training(config, workdir, verbose=0, log=quiet_log)
    with open(f"{workdir}/config.json") as f:
        stored = json.load(f)
    data = load_digits()
    np.testing.assert_allclose(stored["local"]["infopro_image_mean"], data.mean / 255.0, rtol=1e-6)
    rebuilt = config_local_loss(read_config(workdir))
    np.testing.assert_allclose(rebuilt.image_std, data.std / 255.0, rtol=1e-6)
    run_training(config, workdir, verbose=0, log=quiet_log)  # resumes: the same configuration
