"""Exports a finished run from its run directory: every stage, the ensemble and the cascade.

``export_run(workdir, build_network)`` rebuilds the run (``layerwise.run.restore``) and writes
each servable as a new version in the TF Serving layout (``layerwise.serving.export``).

Example:
    >>> from apps.runner import build_network
    >>> export_run("runs/demo", build_network)   # {servable name: new version directory}
"""

from __future__ import annotations

import os

from layerwise.errors import ConfigError
from layerwise.run.restore import default_load_data, restore_run
from layerwise.serving.export import (
    DEFAULT_CASCADE_THRESHOLD, export_cascade, export_classifier, export_ensemble, write_models_config,
)


def export_run(
    workdir: str,
    build_network,
    export_root: str | None = None,
    *,
    threshold: float = DEFAULT_CASCADE_THRESHOLD,
    label: str = "stable",
    load_data=None,
) -> dict[str, str]:
    """Rebuilds a trained run from ``workdir`` and exports every servable as a new version.

    Every finished stage (or the end-to-end model) becomes version N+1 of its servable (N is
    left as it is); a layerwise run also gets ``<model>_ensemble`` and ``<model>_cascade``.
    ``models.config`` is rewritten with ``label`` pointing at each servable's newest version.

    Args:
        workdir: a run directory of ``apps.train``.
        build_network: ``(config, data) -> StagedNetwork`` (``apps.runner.build_network``).
        export_root: where servables go; ``workdir/export`` by default.
        threshold: the cascade's default exit threshold, in (0, 1].
        label: version label of the newest versions in ``models.config``.
        load_data: ``config -> DataSource``; the registered dataset by default.

    Returns:
        ``{servable name: new version directory}``.

    Raises:
        ConfigError: a threshold outside (0, 1].
        CheckpointError: ``workdir`` is not a finished run.
    """
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"the cascade threshold must be in (0, 1], got {threshold}")
    run = restore_run(workdir, build_network, load_data or default_load_data)
    export_root = export_root or os.path.join(workdir, "export")
    net, mean, std = run.network, run.data.mean, run.data.std
    written = {}
    for name, classifier in zip(run.problems, run.classifiers):
        servable = f"{net.name}_{name}"
        written[servable] = export_classifier(classifier, os.path.join(export_root, servable), mean, std)
    if run.layerwise:
        servable = f"{net.name}_ensemble"
        written[servable] = export_ensemble(net, run.heads, os.path.join(export_root, servable), mean, std)
        servable = f"{net.name}_cascade"
        written[servable] = export_cascade(
            net, run.heads, os.path.join(export_root, servable), mean, std, threshold
        )
    write_models_config(export_root, label)
    return written
