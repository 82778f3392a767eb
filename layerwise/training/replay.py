"""Asynchronous decoupled greedy learning: stages at their own pace, joined by replay buffers.

Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs", ICML 2020, Sec. 3.2:
stage j + 1 does not wait for stage j; it reads its input from a bounded buffer of stage j's past
outputs, so a slow stage does not hold up the others, and the paper studies the buffer size
against accuracy. On one device this is simulated deterministically (seeded). Every training
batch, stage 0 takes one step on it and writes its (detached) output, with the labels and the
images, into buffer 0 (a ring of the last ``N`` batches); then the other stages step, each on a
batch read from buffer j - 1 (:meth:`ReplayBuffer.sample`), writing its output into buffer j.
Which stage steps when (``schedule``):

- ``"random"`` (the default): DGL's asynchronous runs (``train_model`` in
  ``buffer_experiments/cifar_buffer.py`` of ``eugenium/DGL``) pick one worker at random per
  iteration, the slowed layer with a lower probability (``proba[layer_noise] -= noise``). Here
  stage j is drawn with probability proportional to its ratio ``r_j`` (stage 0's taken as 1) until
  stage 0 comes up again, which takes the next batch: stage j steps ``r_j`` times per batch on
  average, at random moments (:func:`random_workers`). Their warm-up (each layer twice in turn at
  the start and after every learning-rate drop) is not simulated: a stage whose buffer is still
  empty skips its draw.
- ``"rounds"``: each stage j >= 1, in order, takes ``floor((t + 1) r_j) - floor(t r_j)`` steps in
  round ``t`` (``r_j``: 1 every round, 2 twice, 0.5 every other round) (:func:`fixed_rounds`).
  A stage whose input buffer is still empty (a slower stage before it has not stepped yet, e.g.
  ratios ``1, 0.5, 1`` in round 0) waits: it takes no steps in that round.

Which batch (``policy``): ``"priority_lifo"`` (the default), the least-used batch of the buffer and
the freshest among those, as DGL's ``Buffer.get_sample`` with its default ``priority_lifo``
(the same file): every slot counts the times it was served, reset when it is overwritten. (Their
code compares slot indices with the write pointer using ``>``, so once the ring is full the slot
*at* the pointer, the oldest, wins a tie; this follows their comment's intent, "use the freshest
one among them".) ``"uniform"``: drawn uniformly from the filled slots with a stateless generator
keyed on the run seed, the stage and its step count. Every buffer counts what it served
(:meth:`ReplayBuffer.statistics`: the mean age of a served batch, the fraction of batches ever
served, reads per write), which the run records for the stage reading it.

With ``N = 1``, every ratio 1 and ``rounds``, stage j + 1 always reads what stage j has just
computed: the synchronous algorithm (``layerwise.training.steps.make_decoupled_step``), except that
a non-finite loss skips only its own stage's update. The buffers, the round, the draws and the
stages' step counts are variables, checkpointed with the epochs, so an interrupted run resumes
exactly.

Example:
    >>> step, state = make_async_decoupled_step(
    ...     models, optimizers, [None] * 3, stage_outputs=[s.output for s in network.stages], buffer_size=4,
    ...     ratios=[1, 1, 0.5], seed=0, batch_size=64, image_shape=(28, 28, 1), global_batch_size=64)
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf

from layerwise.data.base import derive_seed
from layerwise.errors import ConfigError
from layerwise.config import REPLAY_POLICIES, REPLAY_SCHEDULES
from layerwise.training.local_losses import LOGITS, LocalLoss
from layerwise.training.steps import (
    all_finite, as_outputs, assign_all, correct_count, objective_loss, reduced, statistics_of, update_if,
)


class ReplayBuffer:
    """The last ``size`` batches a stage wrote: its outputs, their labels and their images.

    Args:
        output_spec: the stage's output structure (``keras.KerasTensor``s; batch dimension first).
        size: batches kept (N).
        batch_size: examples per batch.
        image_shape: ``(H, W, C)`` of the network's input, or ``None`` when no loss reads images.
        name: variable-name prefix.
    """

    def __init__(self, output_spec, size: int, batch_size: int, image_shape: Sequence[int] | None, name: str,
                 policy: str = "priority_lifo"):
        if policy not in REPLAY_POLICIES:
            raise ConfigError(f"replay policy must be one of {', '.join(REPLAY_POLICIES)}, got {policy!r}")
        self.size = size
        self.policy = policy
        self.structure = output_spec
        self.features = [
            tf.Variable(tf.zeros([size, batch_size, *t.shape[1:]], t.dtype), trainable=False, name=f"{name}_features_{i}")
            for i, t in enumerate(tf.nest.flatten(output_spec))
        ]
        self.labels = tf.Variable(tf.zeros([size, batch_size], tf.int32), trainable=False, name=f"{name}_labels")
        self.images = None if image_shape is None else tf.Variable(
            tf.zeros([size, batch_size, *image_shape], tf.float32), trainable=False, name=f"{name}_images")
        self.writes = tf.Variable(tf.constant(0, tf.int64), trainable=False, name=f"{name}_writes")
        self.uses = tf.Variable(tf.zeros([size], tf.int64), trainable=False, name=f"{name}_uses")
        # what was served: batches, their ages summed (writes since theirs), batches served at least once
        self.served = tf.Variable(tf.constant(0, tf.int64), trainable=False, name=f"{name}_served")
        self.age_total = tf.Variable(tf.constant(0, tf.int64), trainable=False, name=f"{name}_age_total")
        self.served_once = tf.Variable(tf.constant(0, tf.int64), trainable=False, name=f"{name}_served_once")

    @property
    def variables(self) -> list[tf.Variable]:
        return (self.features + [self.labels] + ([self.images] if self.images is not None else [])
                + [self.writes, self.uses, self.served, self.age_total, self.served_once])

    def statistics(self) -> dict[str, float | None]:
        """``replay_mean_age``: the mean number of batches written after a served one before it was
        served (0: the freshest); ``replay_served_fraction``: the written batches served at least
        once; ``replay_reads_per_write``: batches served per batch written. ``None`` before any."""
        served, writes = int(self.served.numpy()), int(self.writes.numpy())
        return {
            "replay_mean_age": float(self.age_total.numpy()) / served if served else None,
            "replay_served_fraction": float(self.served_once.numpy()) / writes if writes else None,
            "replay_reads_per_write": served / writes if writes else None,
        }

    def push(self, output, labels, images) -> None:
        """Writes one batch into the oldest slot."""
        slot = self.writes % self.size
        for variable, value in zip(self.features, tf.nest.flatten(output)):
            variable.scatter_nd_update([[slot]], value[None])
        self.labels.scatter_nd_update([[slot]], tf.cast(labels, tf.int32)[None])
        if self.images is not None:
            self.images.scatter_nd_update([[slot]], tf.cast(images, tf.float32)[None])
        self.uses.scatter_nd_update([[slot]], tf.zeros([1], tf.int64))
        self.writes.assign_add(1)

    def sample(self, seed) -> tuple:
        """A batch of the filled slots, by :attr:`policy` (the module doc; ``seed``, shape [2], keys
        the uniform draw); the buffer must hold at least one batch. Counts the slot's use."""
        filled = tf.minimum(self.writes, self.size)
        if self.policy == "uniform":
            slot = tf.random.stateless_uniform([], seed=seed, minval=0, maxval=filled, dtype=tf.int64)
        else:  # the least used, then the freshest: age 0 is the last write
            slots = tf.range(self.size, dtype=tf.int64)
            age = tf.math.floormod(self.writes - 1 - slots, self.size)
            priority = tf.where(slots < filled, self.uses * self.size + age, tf.int64.max)
            slot = tf.argmin(priority, output_type=tf.int64)
        self.served.assign_add(1)
        self.age_total.assign_add(tf.math.floormod(self.writes - 1 - slot, self.size))
        self.served_once.assign_add(tf.cast(tf.equal(tf.gather(self.uses, slot), 0), tf.int64))
        self.uses.scatter_nd_add([[slot]], tf.ones([1], tf.int64))
        output = tf.nest.pack_sequence_as(self.structure, [tf.gather(v, slot) for v in self.features])
        images = tf.gather(self.images, slot) if self.images is not None else None
        return output, tf.gather(self.labels, slot), images


def steps_in_round(ratio: float, t: tf.Tensor) -> tf.Tensor:
    """``floor((t + 1) r) - floor(t r)``: a stage's steps in round ``t`` at ``r`` steps per round."""
    t = tf.cast(t, tf.float64)
    return tf.cast(tf.floor((t + 1.0) * ratio) - tf.floor(t * ratio), tf.int32)


def worker_logits(ratios: Sequence[float]) -> tf.Tensor:
    """The log-probability of drawing each stage in the ``random`` schedule: proportional to its
    ratio, stage 0's taken as 1 (it reads the data), so stage j steps ``ratios[j]`` times per
    training batch on average. DGL draws from ``Categorical(probs=proba)`` with the slowed layer's
    weight lowered by ``--noise`` (``train_model`` in ``buffer_experiments/cifar_buffer.py``)."""
    weights = tf.constant([1.0, *ratios[1:]], tf.float64)
    return tf.math.log(weights / tf.reduce_sum(weights))[None]


def check_async(num_stages: int, ratios: Sequence[float], replicas: int, fixed_batch_size: bool) -> list[float]:
    """The step ratio of every stage (default all 1).

    Raises:
        ConfigError: ratios for another number of stages, several replicas, or batches of varying
            size (a buffer holds batches of one size).
    """
    ratios = [float(r) for r in ratios] or [1.0] * num_stages
    if len(ratios) != num_stages:
        raise ConfigError(f"stage_step_ratios has {len(ratios)} values but the network has {num_stages} stages")
    if replicas > 1:
        raise ConfigError(
            "--replay_buffer runs every stage on one device (round robin); with several replicas use the "
            "synchronous decoupled mode (--replay_buffer 0) or one device (--strategy one_device)")
    if not fixed_batch_size:
        raise ConfigError("--replay_buffer needs batches of one size: a pipeline whose last batch is smaller cannot "
                          "fill a buffer; drop the remainder (dataset.batch(..., drop_remainder=True))")
    return ratios


def make_replay_buffers(
    objectives: Sequence[LocalLoss | None],
    stage_outputs: Sequence,
    buffer_size: int,
    batch_size: int,
    image_shape: Sequence[int],
    policy: str = "priority_lifo",
    strategy: tf.distribute.Strategy | None = None,
) -> list[ReplayBuffer]:
    """The buffer after every stage but the last (images kept where a loss reads them), made under
    the strategy's scope; arguments as :func:`make_async_decoupled_step`'s."""
    needs_images = any(o is not None and o.needs_images for o in objectives)
    with (strategy or tf.distribute.get_strategy()).scope():
        return [ReplayBuffer(stage_outputs[j], buffer_size, batch_size, image_shape if needs_images else None,
                             f"replay_{j:02d}", policy)
                for j in range(len(stage_outputs) - 1)]


def make_stage_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    objective: LocalLoss | None,
    counter: tf.Variable,
    *,
    weight_decay: float,
    global_batch_size: int | None,
    jit_compile: bool,
) -> Callable:
    """``train(x, y, images) -> (detached output, loss, correct, finite)``: one step of one stage
    (its model ``inputs -> [stage output, head outputs]``), counted in ``counter``; the update is
    skipped (BatchNorm statistics put back) at a non-finite loss."""
    variables = model.trainable_variables
    statistics = statistics_of([model])
    loss_of = objective_loss(objective, variables, weight_decay, global_batch_size)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

    def forward_backward(x, y, images):
        with tf.GradientTape() as tape:
            out, outputs = model(x, training=True)
            outputs = as_outputs(outputs)
            loss = loss_of(outputs, y, images)
            scaled_loss = optimizer.scale_loss(loss) if scaled else loss
        return out, loss, tape.gradient(scaled_loss, variables), correct_count(outputs[LOGITS], y)

    compute = tf.function(forward_backward, jit_compile=True) if jit_compile else forward_backward

    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    def train(x, y, images):
        saved = [tf.identity(v.value) for v in statistics]
        out, loss, grads, correct = compute(x, y, images)
        finite = all_finite(loss)
        update_if(finite, apply, (grads,), assign_all, (statistics, saved))
        counter.assign_add(1)
        return tf.nest.map_structure(tf.stop_gradient, out), loss, correct, finite

    return train


def make_buffered_step(j: int, train: Callable, buffers: Sequence[ReplayBuffer], seed: int,
                       counter: tf.Variable) -> Callable:
    """``step() -> (loss, correct, examples, finite)``: stage ``j >= 1`` steps once on a batch of
    buffer ``j - 1`` (``seed`` and the stage's step ``counter`` key a uniform draw) and writes its
    output into buffer ``j`` (none after the last stage)."""

    def step():
        key = tf.stack([tf.constant(seed, tf.int64), counter.read_value()])
        x, y, images = buffers[j - 1].sample(key)
        out, loss, correct, finite = train(x, y, images)
        if j < len(buffers):
            buffers[j].push(out, y, images)
        return tf.cast(loss, tf.float32), correct, tf.cast(tf.shape(y)[0], tf.float32), finite

    return step


def fixed_rounds(buffered: Sequence[Callable], buffers: Sequence[ReplayBuffer], ratios: Sequence[float],
                 round_index: tf.Variable) -> Callable:
    """``run() -> (last stage's loss sum, correct, examples, finite)`` after stage 0's step: the
    ``rounds`` schedule, each stage j >= 1 in order taking :func:`steps_in_round` steps."""

    def run():
        t = round_index.read_value()
        finite = tf.constant(True)
        for j in range(1, len(buffered) + 1):
            loss_sum, correct_sum, examples = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0)
            # nothing to read yet (a slower stage before it has not stepped): this stage waits
            steps_j = tf.where(buffers[j - 1].writes > 0, steps_in_round(ratios[j], t), 0)
            for _ in tf.range(steps_j):
                loss_j, correct_j, count_j, finite_j = buffered[j - 1]()
                loss_sum, correct_sum, examples = loss_sum + loss_j, correct_sum + correct_j, examples + count_j
                finite = tf.logical_and(finite, finite_j)
        round_index.assign_add(1)
        return loss_sum, correct_sum, examples, finite

    return run


def random_workers(buffered: Sequence[Callable], buffers: Sequence[ReplayBuffer], ratios: Sequence[float],
                   seed: int, draws: tf.Variable) -> Callable:
    """``run() -> (last stage's loss sum, correct, examples, finite)`` after stage 0's step: the
    ``random`` schedule, DGL's one randomly chosen worker per iteration (:func:`worker_logits`):
    workers are drawn (seeded, ``draws`` counting them) until stage 0 comes up again, which is the
    next training batch; a drawn stage whose input buffer is still empty does nothing."""
    logits, last = worker_logits(ratios), len(buffered)

    def draw():
        key = tf.stack([tf.constant(seed, tf.int64), draws.read_value()])
        draws.assign_add(1)
        return tf.random.stateless_categorical(logits, 1, seed=key, dtype=tf.int32)[0, 0]

    def run():
        loss_sum, correct_sum, examples, finite = tf.constant(0.0), tf.constant(0.0), tf.constant(0.0), tf.constant(True)
        drawn = draw()
        while drawn != 0:
            for j in range(1, last + 1):
                if tf.logical_and(tf.equal(drawn, j), buffers[j - 1].writes > 0):
                    loss_j, correct_j, count_j, finite_j = buffered[j - 1]()
                    finite = tf.logical_and(finite, finite_j)
                    if j == last:
                        loss_sum, correct_sum, examples = loss_sum + loss_j, correct_sum + correct_j, examples + count_j
            drawn = draw()
        return loss_sum, correct_sum, examples, finite

    return run


def schedule_variables(num_stages: int, strategy: tf.distribute.Strategy
                       ) -> tuple[tf.Variable, tf.Variable, list[tf.Variable]]:
    """The schedule's training state, made under the strategy's scope: the round (``rounds``), the
    workers drawn so far (``random``) and every stage's step count (which keys its batch draws)."""
    with strategy.scope():
        round_index = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="replay_round")
        draws = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="replay_draws")
        stage_steps = [tf.Variable(tf.constant(0, tf.int64), trainable=False, name=f"replay_steps_{j:02d}")
                       for j in range(num_stages)]
    return round_index, draws, stage_steps


def make_replica_step(train_0: Callable, buffers: Sequence[ReplayBuffer], after_stage_0: Callable,
                      batch_size: int) -> Callable:
    """``replica_step(x, y) -> (loss, correct, count, finite)``: stage 0 steps on the batch and
    writes buffer 0, then ``after_stage_0`` steps the others; the last stage's mean loss over its
    steps, its correct predictions and examples (stage 0's where it is the only one)."""

    def replica_step(x, y):
        out, loss, correct, finite = train_0(x, y, x)
        if not buffers:
            return loss, correct, tf.cast(tf.shape(y)[0], tf.float32), finite
        buffers[0].push(out, y, x)
        loss_sum, correct, examples, finite_after = after_stage_0()
        steps = tf.maximum(examples / tf.cast(batch_size, tf.float32), 1.0)
        return loss_sum / steps, correct, examples, tf.logical_and(finite, finite_after)

    return replica_step


def make_async_decoupled_step(
    models: Sequence[keras.Model],
    optimizers: Sequence[keras.optimizers.Optimizer],
    objectives: Sequence[LocalLoss | None],
    *,
    stage_outputs: Sequence,
    buffer_size: int,
    ratios: Sequence[float],
    seed: int,
    batch_size: int,
    image_shape: Sequence[int],
    global_batch_size: int | None,
    weight_decay: float = 0.0,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
    policy: str = "priority_lifo",
    schedule: str = "random",
    buffers: Sequence[ReplayBuffer] | None = None,
) -> tuple[Callable, list[tf.Variable]]:
    """Asynchronous DGL, stage 0 stepping once per training batch (see the module doc).

    Args:
        models: stage j + its head, ``inputs -> [stage output, logits or outputs]``
            (``layerwise.training.problems.decoupled_models``).
        optimizers: one per stage.
        objectives: stage j's local loss (``None``: cross-entropy).
        stage_outputs, buffer_size, batch_size, image_shape, policy: as :func:`make_replay_buffers`.
        ratios: every stage's mean steps per training batch (stage 0: 1).
        seed: the run seed (the draws of workers and batches).
        schedule: which stage steps when (:data:`REPLAY_SCHEDULES`: ``random`` or ``rounds``).
        buffers: the buffers between the stages (:func:`make_replay_buffers`), to read their
            :meth:`ReplayBuffer.statistics` after training; ``None``: made here.

    Returns:
        ``step(x, y) -> StepResult`` (the last stage's mean loss over its steps after this batch,
        its correct predictions and examples), and the state variables to checkpoint (buffers,
        round, draws, step counts).
    """
    strategy = strategy or tf.distribute.get_strategy()
    if buffer_size < 1:
        raise ConfigError(f"replay_buffer must be >= 1 for the asynchronous mode, got {buffer_size}")
    if schedule not in REPLAY_SCHEDULES:
        raise ConfigError(f"replay schedule must be one of {', '.join(REPLAY_SCHEDULES)}, got {schedule!r}")
    num_stages = len(models)
    if buffers is None:
        buffers = make_replay_buffers(objectives, stage_outputs, buffer_size, batch_size, image_shape, policy, strategy)
    round_index, draws, stage_steps = schedule_variables(num_stages, strategy)
    trains = [make_stage_step(m, o, objective, counter, weight_decay=weight_decay, global_batch_size=global_batch_size,
                              jit_compile=jit_compile)
              for m, o, objective, counter in zip(models, optimizers, objectives, stage_steps)]
    buffered = [make_buffered_step(j, trains[j], buffers, derive_seed(seed, 4, j), stage_steps[j])
                for j in range(1, num_stages)]
    after_stage_0 = (fixed_rounds(buffered, buffers, ratios, round_index) if schedule == "rounds"
                     else random_workers(buffered, buffers, ratios, derive_seed(seed, 5, 0), draws))
    replica_step = make_replica_step(trains[0], buffers, after_stage_0, batch_size)
    state = [v for b in buffers for v in b.variables] + [round_index, draws] + stage_steps
    return reduced(replica_step, strategy), state
