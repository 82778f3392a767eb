"""Building blocks of a staged network: what every other package of layerwise builds on.

Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to ImageNet" (ICML 2019),
cut a CNN into stages trained one after another, each with an auxiliary classifier. This package
holds those pieces and nothing that trains them:

- ``network``: :class:`~layerwise.nn.network.StagedNetwork` (the ordered stages) and ``primary``;
- ``heads``: the paper's auxiliary heads (:class:`~layerwise.nn.heads.AuxHead`, ``build_aux_head``);
- ``layers``, ``downsampling``, ``training_layers``: the Keras layers stages and heads are made of;
- ``flops``: the FLOP count of a layer or model;
- ``portable``: a trained model rebuilt from standard Keras layers, for ``.keras`` files.

It imports only the ground floor (``layerwise.config``, ``layerwise.errors``); see
``docs/concepts.md`` for the packages above it.
"""
