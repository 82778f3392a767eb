"""The compiled training steps, in one family: every ``step(x, y)`` a problem or a mode trains with.

- :mod:`~layerwise.training.steps.classification`: the cross-entropy steps of the paper's
  problems (``make_train_step``: one problem, its frozen prefix outside the tape;
  ``make_decoupled_step``: every stage on every batch, Belilovsky et al., ICML 2020) and
  ``make_predict_step``; the guards they share (a non-finite loss skips the update on every
  replica and puts BatchNorm's statistics back).
- :mod:`~layerwise.training.steps.local`: the same steps for local losses
  (``layerwise.training.local_losses``), and ``make_problem_step``, which picks a problem's step.
- :mod:`~layerwise.training.steps.groups`: ``make_multi_step``, several steps per device call
  (Keras's ``steps_per_execution``, https://keras.io/api/models/model_training_apis/#compile-method).

The asynchronous decoupled step reads replay buffers and lives beside them
(``layerwise.training.replay.make_async_decoupled_step``), built from the pieces exported here.

Example:
    >>> step = make_problem_step(problem.trainable, optimizer, problem.objective, frozen=problem.frozen,
    ...                          global_batch_size=128)
    >>> totals = make_multi_step(step, optimizer, stop_on_nan=True)(iter(batches), tf.constant(32))
"""

from layerwise.training.steps.classification import (
    StepResult,
    all_finite,
    assign_all,
    classification_loss,
    correct_count,
    distributed,
    guarded_decoupled_step,
    guarded_step,
    make_decoupled_step,
    make_predict_step,
    make_train_step,
    reduced,
    update_if,
)
from layerwise.training.steps.groups import Totals, learning_rate, make_multi_step
from layerwise.training.steps.local import (
    as_outputs,
    make_local_decoupled_step,
    make_local_train_step,
    make_problem_step,
    objective_loss,
    statistics_of,
)

__all__ = [
    "StepResult", "Totals", "all_finite", "as_outputs", "assign_all", "classification_loss", "correct_count",
    "distributed", "guarded_decoupled_step", "guarded_step", "learning_rate", "make_decoupled_step",
    "make_local_decoupled_step", "make_local_train_step", "make_multi_step", "make_predict_step",
    "make_problem_step", "make_train_step", "objective_loss", "reduced", "statistics_of", "update_if",
]
