"""Experiments: the named training presets and the papers' own experiments, apart from the model
zoo (``models``) and the library (``layerwise``).

- ``presets``: ``python -m apps.train --experiment NAME`` (``--list_experiments`` prints them),
  by family in ``greedy_cnns`` (Belilovsky et al., ICML 2019) and ``reference_nets`` (the zoo's
  ResNets and AlexNet as their papers trained them), registered in ``catalogue``;
- ``compressed_sensing``: the depth experiment of the optimisation-inspired nets (Li et al.,
  ACML 2018), run by ``python -m apps.optnets``.

Importing the package itself imports nothing: each module brings what it needs.
"""
