"""K local modules of any staged network: consecutive stages grouped by forward cost.

InfoPro (Wang et al., "Revisiting Locally Supervised Learning: an Alternative to End-to-end
Training", ICLR 2021) trains a network as K local modules and compares K = 2 ... 16 (and more) on
the same ResNet. A zoo model's stages are usually finer than that (a CIFAR ResNet-32 built with
``stage_granularity="block"`` is the stem and 15 residual blocks: 16 stages), so :func:`group_stages`
composes runs of consecutive stages into K modules, choosing the cuts that minimise the largest
module's forward FLOPs. The modules are functional models that share the stages' layers: training
the modules trains the network's layers, and the stage boundaries stay the only cut points, so a
cut never crosses a residual connection. ``layerwise.split_model(model, K)`` does the same for a
Keras model's graph directly.

Example:
    >>> network = build_model("resnet32", (32, 32, 3), 10)        # 16 stages
    >>> modules = group_stages(network, 4)
    >>> [len(m.layers) for m in modules.stages]                    # ~equal cost each
"""

from __future__ import annotations

from typing import Sequence

import keras

from layerwise.nn.flops import count_flops
from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork, symbolic_inputs_like


def balanced_groups(costs: Sequence[float], k: int) -> list[int]:
    """The start index of each of ``k`` runs of consecutive ``costs`` that minimise the largest
    run's sum (ties: the earliest cuts). ``[0, ...]``, ``k`` entries.

    Raises:
        ConfigError: ``k`` is not in ``1 .. len(costs)``.
    """
    n = len(costs)
    if not 1 <= k <= n:
        raise ConfigError(f"cannot make {k} modules of {n} stages; use 1 to {n}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[m][i]: the smallest largest-module cost of the first i stages in m modules, and its starts
    best = [[(inf, []) for _ in range(n + 1)] for _ in range(k + 1)]
    best[0][0] = (0.0, [])
    for m in range(1, k + 1):
        for i in range(m, n + 1):
            options = [(max(best[m - 1][s][0], prefix[i] - prefix[s]), best[m - 1][s][1] + [s])
                       for s in range(m - 1, i) if best[m - 1][s][0] < inf]
            best[m][i] = min(options, key=lambda o: (o[0], o[1]))
    return best[k][n][1]


def group_stages(network: StagedNetwork, k: int) -> StagedNetwork:
    """``network`` as ``k`` modules of roughly equal forward FLOPs (see the module doc); the network
    itself when it has ``k`` stages already.

    Raises:
        ConfigError: ``k`` larger than the number of stages (the message says how to get more).
    """
    if k == network.num_stages:
        return network
    if k > network.num_stages:
        raise ConfigError(
            f"{network.name} has {network.num_stages} stages: it cannot be cut into {k} local modules. Build it with "
            "finer stages (zoo ResNets: --model_option stage_granularity=block) or use at most "
            f"{network.num_stages} modules")
    costs = [max(count_flops(stage), 1) for stage in network.stages]
    starts = balanced_groups(costs, k) + [network.num_stages]
    modules = []
    for m, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        inputs = symbolic_inputs_like(network.stages[a], f"module_{m:02d}_input")
        outputs = network.run(inputs, a, b)
        modules.append(keras.Model(inputs, outputs, name=f"module_{m:02d}"))
    options = dict(network.options, local_modules=k, module_starts=starts[:-1])
    return StagedNetwork(network.name, network.input_shape, network.num_classes, modules,
                         final_head=network.final_head, options=options)
