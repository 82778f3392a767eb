"""Keras callbacks in layerwise training: the run is one ``fit``, each stage a phase of it.

What a callback sees (``keras.callbacks.Callback``, unchanged), in the order ``keras.Model.fit``
calls it (https://keras.io/guides/writing_your_own_callbacks/):

- ``on_train_begin`` / ``on_train_end``: once per run (``layerwise.fit``);
- ``on_epoch_begin(epoch, logs)`` / ``on_epoch_end(epoch, logs)``: for every epoch of every stage.
  ``epoch`` counts across the run (stage j's epochs follow stage j - 1's: ``j * epochs_per_stage + e``
  when every stage trains as many), so ``CSVLogger`` writes one table and ``TensorBoard`` draws one
  curve per metric; ``logs`` holds ``loss``, ``accuracy``, ``val_loss`` / ``val_accuracy`` (with a
  validation split), ``test_accuracy`` (with a test split), ``lr``, ``stage`` and ``stage_epoch``;
- ``on_train_batch_begin(batch)`` / ``on_train_batch_end(batch, logs)``: always, once per device
  call, as ``Model.fit`` calls them once per ``steps_per_execution`` steps: every batch when some
  callback defines a batch hook (a ``LambdaCallback`` given one too), else once per epoch (the
  device runs the whole epoch in one call). ``logs``: the epoch's running ``loss`` and
  ``accuracy`` so far, as Keras's metrics report them; ``loss`` is NaN after a batch whose loss
  was not finite (``on_nan="skip"`` skipped it), so ``TerminateOnNaN`` ends the run;
- ``on_test_begin`` / ``on_test_batch_begin`` / ``on_test_batch_end`` / ``on_test_end``: around
  every epoch's pass over the validation data, with its running ``loss`` and ``accuracy``;
- ``self.model``: the current stage's training model (stage + head, its ``optimizer`` set); a
  ``ModelCheckpoint`` gets the stage's image classifier instead (see below);
- ``on_stage_begin(stage, logs)`` / ``on_stage_end(stage, logs)``, on callbacks that define them
  (:class:`StageCallback` declares both); ``on_stage_end`` gets the stage's record.

Per stage, where that is the meaning (:func:`per_stage` makes any callback so): every stage is a
new problem with a fresh head and optimizer, so ``EarlyStopping``, ``ReduceLROnPlateau`` and
``ModelCheckpoint`` restart at every stage: their ``best`` starts again, ``on_train_begin`` runs
at the stage's start and ``on_train_end`` at its end (``restore_best_weights`` restores the
stage's best epoch), and their ``stop_training`` ends the stage, not the run. ``ModelCheckpoint``
saves the stage's classifier (images -> class probabilities, the frozen stages before it and its
head; ``.keras`` files of standard Keras layers, loadable with Keras alone), ``{stage}`` in its
file path is the stage's index and ``save_best_only`` keeps the best epoch of each stage.

Stopping: ``model.stop_training = True`` set by a per-stage callback ends the current stage (the
run goes on with the next one); set by any other callback it ends the run, as in ``Model.fit``.

The learning rate: ``ReduceLROnPlateau`` and ``LearningRateScheduler`` set the optimizer's
learning rate, so they need one that is a number during each stage: ``lr_schedule="constant"``
(or an ``optimizer=`` with a float learning rate); with a schedule that changes it already (the
default ``step`` decay) they are refused before training, as Keras refuses to set the learning
rate of an optimizer built on a ``LearningRateSchedule``. ``LearningRateScheduler``'s
``schedule(epoch, lr)`` gets the run-wide epoch (``epoch % epochs_per_stage`` is the stage's
when the stages are equally long).

``BackupAndRestore`` is refused: a run with a ``workdir`` checkpoints every epoch and resumes
where it stopped when ``fit`` is called again with the same arguments.

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

from layerwise.errors import ConfigError
from layerwise.nn.portable import saved_classifier

STAGE_SCOPED = (keras.callbacks.EarlyStopping, keras.callbacks.ReduceLROnPlateau, keras.callbacks.ModelCheckpoint)
LR_SETTERS = (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)
BATCH_HOOKS = ("on_train_batch_begin", "on_train_batch_end", "on_batch_begin", "on_batch_end")
# Keras's monitoring callbacks learn whether a metric goes up from the model's compiled metrics;
# our training models compile none, so the direction of the accuracies in ``logs`` is set here.
MONITORING = (keras.callbacks.EarlyStopping, keras.callbacks.ModelCheckpoint, keras.callbacks.ReduceLROnPlateau)
MAXIMISED = ("accuracy", "val_accuracy", "test_accuracy")


def _set_direction(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    """``mode="max"`` for a monitoring callback left at ``"auto"`` on one of our accuracies."""
    if isinstance(callback, MONITORING) and callback.mode == "auto" and callback.monitor in MAXIMISED:
        callback.mode = "max"
    return callback


def _refuse_unsupported(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    if isinstance(callback, keras.callbacks.BackupAndRestore):
        raise ConfigError(
            "BackupAndRestore is not needed: give fit a workdir instead; every epoch is checkpointed there and "
            "calling fit again with the same arguments resumes where the run stopped"
        )
    return callback


class StageCallback(keras.callbacks.Callback):
    """A Keras callback that is also told when a stage begins and ends."""

    def on_stage_begin(self, stage: int, logs: dict[str, Any] | None = None) -> None:
        """Called before stage ``stage`` trains (or is loaded from a finished run)."""

    def on_stage_end(self, stage: int, logs: dict[str, Any] | None = None) -> None:
        """Called when stage ``stage`` is finished; ``logs`` is its record (accuracies, params, ...)."""


class PerStage(StageCallback):
    """``callback`` restarted at every stage: its ``best`` (if it keeps one) starts again from its
    initial value, its ``on_train_begin`` runs when a stage begins, its ``on_train_end`` when the
    stage's epochs are done (before the stage is evaluated and saved), and its ``stop_training``
    ends the stage, not the run."""

    def __init__(self, callback: keras.callbacks.Callback):
        super().__init__()
        self.callback = callback
        # Keras >= 3.15 resets EarlyStopping's and ReduceLROnPlateau's best in on_train_begin
        # (keras-team/keras#22967); ModelCheckpoint's (initial_value_threshold) is reset here.
        self.initial_best = getattr(callback, "best", None)

    def set_model(self, model) -> None:
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params) -> None:
        super().set_params(params)
        self.callback.set_params(params)

    def on_stage_begin(self, stage, logs=None):
        if hasattr(self.callback, "best"):
            self.callback.best = self.initial_best
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

    def on_test_begin(self, logs=None):
        self.callback.on_test_begin(logs)

    def on_test_end(self, logs=None):
        self.callback.on_test_end(logs)

    def on_test_batch_begin(self, batch, logs=None):
        self.callback.on_test_batch_begin(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        self.callback.on_test_batch_end(batch, logs)


def per_stage(callback: keras.callbacks.Callback) -> PerStage:
    """``callback`` restarted at every stage (see :class:`PerStage`)."""
    return callback if isinstance(callback, PerStage) else PerStage(callback)


class SavedClassifier:
    """What a ``ModelCheckpoint`` saves: the stage's classifier (images -> logits) as images ->
    class probabilities of standard Keras layers, compiled
    (:func:`layerwise.nn.portable.saved_classifier`), built from the trained weights at
    every save. Anything else is the classifier's own."""

    def __init__(self, classifier: keras.Model):
        self.classifier = classifier

    def save(self, filepath, overwrite: bool = True, **kwargs) -> None:
        saved_classifier(self.classifier).save(filepath, overwrite=overwrite, **kwargs)

    def save_weights(self, filepath, overwrite: bool = True, **kwargs) -> None:
        saved_classifier(self.classifier).save_weights(filepath, overwrite=overwrite, **kwargs)

    def __getattr__(self, name):
        return getattr(self.classifier, name)


def _inner(callback: keras.callbacks.Callback) -> keras.callbacks.Callback:
    return callback.callback if isinstance(callback, PerStage) else callback


def _overrides(callback, name: str) -> bool:
    """``callback`` defines hook ``name``: its class overrides it, or it was set on the instance
    (as ``keras.callbacks.LambdaCallback`` sets the functions it is given)."""
    target = _inner(callback)
    return name in vars(target) or getattr(type(target), name) is not getattr(keras.callbacks.Callback, name)


class RunCallbacks:
    """Calls a run's callbacks in the order above and says when one asks to stop.

    Args:
        callbacks: Keras callbacks (``EarlyStopping``, ``ReduceLROnPlateau`` and
            ``ModelCheckpoint`` become per-stage; ``BackupAndRestore`` is refused).
        params: ``set_params`` for every callback (``epochs``: of the whole run, ``steps``: per
            epoch, ``verbose``).

    Raises:
        ConfigError: a ``BackupAndRestore`` callback (a ``workdir`` does its job).
    """

    def __init__(self, callbacks: Iterable[keras.callbacks.Callback] | None, params: dict[str, Any]):
        self.callbacks = [
            per_stage(c) if isinstance(c, STAGE_SCOPED) else c
            for c in map(_set_direction, map(_refuse_unsupported, callbacks or ()))
        ]
        for callback in self.callbacks:
            callback.set_params(params)
        self.batch_hooks = any(_overrides(c, name) for c in self.callbacks for name in BATCH_HOOKS)
        self.model: keras.Model | None = None
        self.started = False  # on_train_begin was called

    def __bool__(self) -> bool:
        return bool(self.callbacks)

    def learning_rate_setter(self) -> keras.callbacks.Callback | None:
        """The first callback that sets the optimizer's learning rate (``ReduceLROnPlateau``,
        ``LearningRateScheduler``), or ``None``."""
        return next((_inner(c) for c in self.callbacks if isinstance(_inner(c), LR_SETTERS)), None)

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

    def stage_begin(self, stage: int, model: keras.Model, classifier: keras.Model | None = None) -> None:
        """Points every callback at ``model`` (the stage's training model; a ``ModelCheckpoint``
        at ``classifier``, the stage's images -> logits model, when given), calls
        ``on_train_begin`` before the first stage (Keras sets the model first too) and
        ``on_stage_begin``."""
        self.model = model
        model.stop_training = False
        for callback in self.callbacks:
            saves = isinstance(_inner(callback), keras.callbacks.ModelCheckpoint) and classifier is not None
            callback.set_model(model)
            if saves:
                _inner(callback).set_model(SavedClassifier(classifier))
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

    def test_begin(self) -> None:
        self._call("on_test_begin", {})

    def test_batch_begin(self, batch: int) -> None:
        self._call("on_test_batch_begin", batch, {})

    def test_batch_end(self, batch: int, logs: dict[str, Any]) -> None:
        self._call("on_test_batch_end", batch, logs)

    def test_end(self, logs: dict[str, Any]) -> None:
        self._call("on_test_end", logs)
