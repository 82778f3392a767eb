"""Exports a finished run from its run directory: every stage, the ensemble and the cascade.

``export_run(workdir)`` rebuilds the run from its directory alone (``layerwise.restore``:
the network saved with it) and writes each servable as a new version in the TF Serving layout
(``layerwise.serving.servables``). A run's uint8 signature normalises pixels as its training did, and
a run on float images that never were uint8 gets none (``serving_default`` then takes float32).

Example:
    >>> export_run("runs/demo")   # {servable name: new version directory}
"""

from __future__ import annotations

import os

from layerwise.errors import CheckpointError, ConfigError
import layerwise.files as files
from layerwise.run.lock import workdir_lock
from layerwise.restore import restore_run
from layerwise.run.workdir import make_directory, read_config
from layerwise.serving.servables import DEFAULT_CASCADE_THRESHOLD, export_cascade, export_classifier, export_ensemble
from layerwise.serving.models_config import check_serving_root, write_models_config
from layerwise.serving.versions import UNFINISHED_LABEL, check_label


def export_run(
    workdir: str,
    build_network=None,
    export_root: str | None = None,
    *,
    threshold: float = DEFAULT_CASCADE_THRESHOLD,
    label: str = "stable",
    load_data=None,
    allow_unfinished: bool = False,
    serving_root: str | None = None,
    log=print,
) -> dict[str, str]:
    """Rebuilds a trained run from ``workdir`` and exports every servable as a new version.

    Every finished stage (or the end-to-end model) becomes version N+1 of its servable (N is
    left as it is); a layerwise run also gets ``<model>_ensemble`` and ``<model>_cascade``.
    Each new complete version gets ``label`` (``stable`` moves to it only when ``label`` is
    ``"stable"``; ``"canary"`` is added beside ``stable``); the labels of every other version and
    servable stay as they were, and ``models.config`` is rewritten with them. The directory written to is locked for the export (``layerwise.run.lock``): the
    run directory itself when the servables go under it (a run still training there is refused).

    An unfinished run (stages still to train) is refused unless ``allow_unfinished``: then its
    ensemble and cascade, which cover fewer stages than the finished run will, are marked
    partial and labelled ``unfinished``, never ``label``, in ``models.config`` (now and after
    later exports), so an older, worse servable never passes for the stable one.

    Args:
        workdir: a run directory of ``apps.train`` or ``layerwise.fit``.
        build_network: ``None`` (default): the network saved with the run; or ``(config, data)
            -> StagedNetwork`` (``apps.runner.build_network``) for a run written before networks
            were saved (see :func:`~layerwise.restore.restore_run`).
        export_root: where servables go; ``workdir/export`` by default.
        threshold: the cascade's default exit threshold, in (0, 1].
        label: version label of the new complete versions (``layerwise.serving.versions``).
        load_data: ``config -> DataSource``; by default none with the saved network (its recorded
            normalisation), the registered dataset with ``build_network``.
        allow_unfinished: export the finished stages of an unfinished run (with a warning).
        serving_root: where the model server sees ``export_root`` (``/models`` in a container);
            ``models.config``'s ``base_path``s are written below it (default: absolute paths).
        log: where the warning goes.

    Returns:
        ``{servable name: new version directory}``.

    Raises:
        ConfigError: a threshold outside (0, 1], a ``label`` that is not a word (or is
            ``"unfinished"``), a ``serving_root`` that is not an absolute path or holds quotes or
            control characters, an ``export_root`` that is a file.
        CheckpointError: ``workdir`` has no finished stage, or is unfinished.
        WorkdirBusyError: another process holds the directory written to.
        StorageError: a servable could not be written (full disk, read-only directory).
    """
    export_root = export_root or os.path.join(workdir, "export")
    _check_arguments(workdir, export_root, threshold, label, serving_root)
    run = restore_run(workdir, build_network, load_data)  # reads only
    if not run.finished and not allow_unfinished:
        raise _unfinished(workdir, run, label)
    return _export_locked(run, workdir, export_root, threshold, label, serving_root, log)


def _check_arguments(workdir: str, export_root: str, threshold: float, label: str, serving_root: str | None) -> None:
    """Refuses bad arguments (see :func:`export_run`'s ``Raises``) before anything is read or written."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"the cascade threshold must be in (0, 1], got {threshold}")
    check_label(label)
    if serving_root is not None:
        check_serving_root(serving_root)
    read_config(workdir)  # not a run, or a corrupt config: refused before anything else
    if files.exists(export_root) and not files.isdir(export_root):
        raise ConfigError(f"the export directory {export_root} is a file; pass a directory (--export_dir)")


def _unfinished(workdir: str, run, label: str) -> CheckpointError:
    return CheckpointError(
        f"{workdir} is unfinished ({len(run.problems)} of {run.total_problems} stages trained); finish "
        "training first (rerun the same apps.train command), or pass --allow_unfinished to export the "
        f"finished stages (their ensemble and cascade are labelled {UNFINISHED_LABEL!r}, not {label!r})"
    )


def _export_locked(run, workdir: str, export_root: str, threshold: float, label: str, serving_root: str | None,
                   log) -> dict[str, str]:
    inside = os.path.realpath(export_root).startswith(os.path.realpath(workdir) + os.sep)
    if not inside:
        make_directory(export_root)
    # The lock of the directory written to: the run directory itself when the servables go under it,
    # so an export never races a training of the run (which holds it from start to end).
    with workdir_lock(workdir if inside else export_root, "exporting"):
        info = {"complete": run.finished, "stages": len(run.problems), "of": run.total_problems}
        if not run.finished:
            log(f"warning: {workdir} is unfinished: exporting {len(run.problems)} of {run.total_problems} stages; "
                f"the ensemble and cascade are labelled {UNFINISHED_LABEL!r}; export again when training has finished")
        return _export(run, export_root, threshold, label, info, serving_root)


def _export(run, export_root: str, threshold: float, label: str, info: dict, serving_root: str | None) -> dict[str, str]:
    net, mean, std = run.network, run.data.mean, run.data.std
    uint8 = run.data.uint8_pixels  # no uint8 signature for float images of unknown scale
    written = {}
    for name, classifier in zip(run.problems, run.classifiers):
        servable = f"{net.name}_{name}"
        written[servable] = export_classifier(classifier, os.path.join(export_root, servable), mean, std, label,
                                              uint8=uint8)
    if run.layerwise:
        servable = f"{net.name}_ensemble"
        written[servable] = export_ensemble(net, run.heads, os.path.join(export_root, servable), mean, std, info, label,
                                            uint8=uint8)
        servable = f"{net.name}_cascade"
        written[servable] = export_cascade(
            net, run.heads, os.path.join(export_root, servable), mean, std, threshold, info, label, uint8=uint8
        )
    write_models_config(export_root, serving_root)
    return written
