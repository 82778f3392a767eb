"""Layer-response analysis (He et al., CVPR 2016, Sec. 4.2 and Fig. 7).

"The responses are the outputs of each 3x3 layer, after BN and before other nonlinearity
(ReLU/addition)": for every 3x3 convolution ``<prefix>conv<i>`` followed by its BatchNorm
``<prefix>bn<i>`` (the zoo's naming: ``stem_conv``/``stem_bn``, ``conv3_1_conv2``/
``conv3_1_bn2``), we record the BatchNorm output in inference mode over a dataset.

Statistic: the standard deviation of each channel over examples and positions, averaged over the
channels. (The paper does not spell out the reduction; a per-channel std ignores the BN shift
beta, which is a bias, not a response magnitude.)

In inference mode a BN output channel is ``gamma * (x - mu) / sqrt(var + eps) + beta`` with the
moving statistics, so its std over the data is ``|gamma|`` times the ratio of the data's std to
the moving one (~1): the response is a reading of the learned BN scales
(:func:`bn_gamma_magnitudes`). On the trained depth-8 and depth-20 runs of docs/zoo.md the two
agree within 6% for every layer. The gammas move away from their initial 1 only as training (and
weight decay) proceed, which is why the analysis needs nets trained long enough.
"""

from __future__ import annotations

import re
from typing import Iterable

import keras
import numpy as np

from layerwise.nn.network import StagedNetwork


def response_layers(stage: keras.Model) -> list[str]:
    """Names of the BatchNorm layers that follow a 3x3 conv in ``stage``, in layer order."""
    names = {layer.name for layer in stage.layers}
    found = []
    for layer in stage.layers:
        if isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (3, 3):
            bn = re.sub(r"conv(\d*)$", r"bn\1", layer.name)
            if bn != layer.name and bn in names:
                found.append(bn)
    return found


def layer_response_stds(network: StagedNetwork, batches: Iterable) -> dict[str, float]:
    """Per-channel std (averaged over channels) of every 3x3 layer's BN output.

    Args:
        network: a trained staged network (run in inference mode).
        batches: ``(images, labels)`` batches of normalised images (e.g. ``data.eval_batches``).

    Returns:
        ``{bn_layer_name: std}`` in network order (stage by stage, layer order within a stage).
    """
    probes = []
    for stage in network.stages:
        names = response_layers(stage)
        outputs = [stage.get_layer(n).output for n in names]
        probes.append((names, keras.Model(stage.inputs, outputs) if names else None))
    sums: dict[str, list] = {}
    for images, _ in batches:
        x = images
        for stage, (names, probe) in zip(network.stages, probes):
            if probe is not None:
                values = probe(x, training=False)
                values = values if isinstance(values, (list, tuple)) else [values]
                for name, v in zip(names, values):
                    v = np.asarray(v, np.float64).reshape(-1, v.shape[-1])
                    acc = sums.setdefault(name, [0, 0.0, 0.0])
                    acc[0] += v.shape[0]
                    acc[1] = acc[1] + v.sum(0)
                    acc[2] = acc[2] + (v * v).sum(0)
            x = stage(x, training=False)
    stds = {}
    for name, (n, s, ss) in sums.items():
        var = np.maximum(ss / n - (s / n) ** 2, 0.0)
        stds[name] = float(np.mean(np.sqrt(var)))
    return stds


def bn_gamma_magnitudes(network: StagedNetwork, names: Iterable[str]) -> dict[str, float]:
    """``{bn_layer_name: mean |gamma|}`` of the named BatchNorm layers (see the module doc)."""
    layers = {layer.name: layer for stage in network.stages for layer in stage.layers}
    return {name: float(np.mean(np.abs(np.asarray(layers[name].gamma)))) for name in names}
