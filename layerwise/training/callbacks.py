"""Keras callbacks in layerwise training: the run is one ``fit``, each stage a phase of it.

What a callback sees (``keras.callbacks.Callback``, unchanged):

- ``on_train_begin`` / ``on_train_end``: once per run (``layerwise.fit``);
- ``on_epoch_begin(epoch, logs)`` / ``on_epoch_end(epoch, logs)``: for every epoch of every stage.
  ``epoch`` counts across the run (stage j's epochs are ``j * epochs_per_stage + e``), so
  ``CSVLogger`` writes one table and ``TensorBoard`` draws one curve per metric; ``logs`` holds
  ``loss``, ``accuracy``, ``val_loss`` / ``val_accuracy`` (with a validation split),
  ``test_accuracy`` (with a test split), ``lr``, ``stage`` and ``stage_epoch``;
- ``on_train_batch_begin`` / ``on_train_batch_end(batch, logs)`` with ``loss`` and ``accuracy``,
  only when some callback overrides them (reading the loss every batch waits for the device);
- ``self.model``: the current stage's training model (stage + head, its ``optimizer`` set);
- ``on_stage_begin(stage, logs)`` / ``on_stage_end(stage, logs)``, on callbacks that define them
  (:class:`StageCallback` declares both); ``on_stage_end`` gets the stage's record.

Stopping: ``model.stop_training = True`` set by a *per-stage* callback ends the current stage (the
run goes on with the next one); set by any other callback it ends the run, as in ``Model.fit``.
Keras's ``EarlyStopping`` is per-stage: it restarts at every stage (``on_train_begin`` at the
stage's start, ``on_train_end`` at its end, so ``restore_best_weights`` restores the stage's best
epoch). :func:`per_stage` makes any callback per-stage.

A stage ended early this way is finished, as in ``Model.fit``: it is finalised and exported with
the epochs it trained, its record says ``"stopped_early": true`` and ``"epochs"`` (the epochs
trained, fewer than ``epochs_per_stage``), and a rerun on the same workdir loads it as it is,
never trains it on to ``epochs_per_stage`` (the callback's decision is part of the run; start a
new workdir to train it longer). A run a callback ended goes on with the next stage on a rerun.

Example:
    >>> layerwise.fit(network, train, validation_data=val,
    ...               callbacks=[keras.callbacks.EarlyStopping(patience=2), keras.callbacks.CSVLogger("log.csv")])
"""

from __future__ import annotations

from typing import Any, Iterable

import keras

STAGE_SCOPED = (keras.callbacks.EarlyStopping,)
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
# Keras's monitoring callbacks learn whether a metric goes up from the model's compiled metrics;
# our training models compile none, so the direction of the accuracies in ``logs`` is set here.
MONITORING = (keras.callbacks.EarlyStopping, keras.callbacks.ModelCheckpoint, keras.callbacks.ReduceLROnPlateau)
MAXIMISED = ("accuracy", "val_accuracy", "test_accuracy")
# Callbacks whose ``best`` a restart clears (Keras itself does so in ``on_train_begin`` from 3.15).
RESET_BEST = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau)


def _set_direction(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    """``mode="max"`` for a monitoring callback left at ``"auto"`` on one of our accuracies."""
    if isinstance(callback, MONITORING) and callback.mode == "auto" and callback.monitor in MAXIMISED:
        callback.mode = "max"
    return callback


class StageCallback(keras.callbacks.Callback):
    """A Keras callback that is also told when a stage begins and ends."""

    def on_stage_begin(self, stage: int, logs: dict[str, Any] | None = None) -> None:
        """Called before stage ``stage`` trains (or is loaded from a finished run)."""

    def on_stage_end(self, stage: int, logs: dict[str, Any] | None = None) -> None:
        """Called when stage ``stage`` is finished; ``logs`` is its record (accuracies, params, ...)."""


class PerStage(StageCallback):
    """``callback`` restarted at every stage: its ``on_train_begin`` runs when a stage begins, its
    ``on_train_end`` when the stage's epochs are done (before the stage is evaluated and saved),
    and its ``stop_training`` ends the stage, not the run."""

    def __init__(self, callback: keras.callbacks.Callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model) -> None:
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params) -> None:
        super().set_params(params)
        self.callback.set_params(params)

    def on_stage_begin(self, stage, logs=None):
        if isinstance(self.callback, RESET_BEST):
            # A fresh instance's best value, as Keras >= 3.15 sets in ``on_train_begin``
            # (keras-team/keras#22967, "Reset `self.best` in EarlyStopping/ReduceLROnPlateau
            # between fit calls"); older Keras kept the previous stage's best, so a stage whose
            # loss starts above the last one's best stopped after ``patience`` epochs.
            self.callback.best = getattr(self.callback, "baseline", None)
        self.callback.on_train_begin(logs)

    def end_stage_training(self, logs=None) -> None:
        """The stage's epochs are done (``EarlyStopping`` restores its best weights here)."""
        self.callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.callback.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        self.callback.on_train_batch_begin(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.callback.on_train_batch_end(batch, logs)


def per_stage(callback: keras.callbacks.Callback) -> PerStage:
    """``callback`` restarted at every stage (see :class:`PerStage`)."""
    return callback if isinstance(callback, PerStage) else PerStage(callback)


def _overrides(callback, name: str) -> bool:
    target = callback.callback if isinstance(callback, PerStage) else callback
    return getattr(type(target), name) is not getattr(keras.callbacks.Callback, name)


class RunCallbacks:
    """Calls a run's callbacks in the order above and says when one asks to stop.

    Args:
        callbacks: Keras callbacks (``EarlyStopping`` instances become per-stage).
        params: ``set_params`` for every callback (``epochs``: of the whole run, ``steps``: per
            epoch, ``verbose``).
    """

    def __init__(self, callbacks: Iterable[keras.callbacks.Callback] | None, params: dict[str, Any]):
        self.callbacks = [
            per_stage(c) if isinstance(c, STAGE_SCOPED) else c for c in map(_set_direction, callbacks or ())
        ]
        for callback in self.callbacks:
            callback.set_params(params)
        self.batch_hooks = any(_overrides(c, name) for c in self.callbacks for name in BATCH_HOOKS)
        self.model: keras.Model | None = None
        self.started = False  # on_train_begin was called

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def _call(self, hook: str, *args) -> str | None:
        """Calls ``hook`` on every callback defining it; returns ``"stage"``/``"run"`` when one set
        ``model.stop_training`` (per-stage callbacks end the stage), else ``None``."""
        stop = None
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is None:
                continue
            method(*args)
            if self.model is not None and self.model.stop_training:
                self.model.stop_training = False
                scope = "stage" if isinstance(callback, PerStage) else "run"
                stop = "run" if "run" in (stop, scope) else scope
        return stop

    def train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.started:
            self._call("on_train_end", logs or {})

    def stage_begin(self, stage: int, model: keras.Model) -> None:
        """Points every callback at ``model`` (the stage's training model), calls
        ``on_train_begin`` before the first stage (Keras sets the model first too) and
        ``on_stage_begin``."""
        self.model = model
        model.stop_training = False
        for callback in self.callbacks:
            callback.set_model(model)
        if not self.started:
            self.started = True
            self._call("on_train_begin", {})
        self._call("on_stage_begin", stage, {"stage": stage})

    def stage_training_end(self, stage: int) -> int | None:
        """A stage's epochs are done: per-stage callbacks end their training.

        Returns:
            The run-wide epoch whose weights a per-stage ``EarlyStopping(restore_best_weights=True)``
            put back, or ``None`` (the stage keeps its last epoch's weights).
        """
        restored = None
        for callback in self.callbacks:
            if isinstance(callback, PerStage):
                callback.end_stage_training({"stage": stage})
                inner = callback.callback
                if (isinstance(inner, keras.callbacks.EarlyStopping) and inner.restore_best_weights
                        and inner.best_weights is not None):
                    restored = inner.best_epoch
        return restored

    def stage_end(self, stage: int, record: dict[str, Any]) -> None:
        self._call("on_stage_end", stage, dict(record))

    def epoch_begin(self, epoch: int, logs: dict[str, Any]) -> str | None:
        return self._call("on_epoch_begin", epoch, logs)

    def epoch_end(self, epoch: int, logs: dict[str, Any]) -> str | None:
        return self._call("on_epoch_end", epoch, logs)

    def batch_begin(self, batch: int) -> str | None:
        return self._call("on_train_batch_begin", batch, {})

    def batch_end(self, batch: int, logs: dict[str, Any]) -> str | None:
        return self._call("on_train_batch_end", batch, logs)
