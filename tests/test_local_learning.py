"""The local-learning family on tiny problems: local losses in every mode, served stages without
training-only layers, restore, K local modules, the asynchronous decoupled mode, cutout."""

import itertools
import json
import math
from fractions import Fraction

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import async_dense_stages, tiny_config
from test_local_losses import np_bce_reconstruction, np_sim_loss, np_supcon

import layerwise
from apps.module_memory import markdown, run_case
from apps.runner import build_network, resolve, run_training
from layerwise.nn.flops import count_flops
from layerwise.analysis.memory import largest_peak
from layerwise.data import load_dataset
from layerwise.data.augment import augment_image, cutout
from layerwise.errors import ConfigError
from layerwise.restore import restore_run
from layerwise.run.workdir import open_run
from layerwise.training.steps import make_local_decoupled_step
from layerwise.training.stage_groups import balanced_groups, group_stages
from layerwise.training.problems import DECOUPLED, Problem, decoupled_models, stage_name
from layerwise.training.replay import ReplayBuffer, steps_in_round
from layerwise.training.steps import make_decoupled_step
from layerwise.training.trainer import GreedyTrainer
from models import build_model

TRAINING_ONLY = ("decoder", "sim_conv", "projection", "local_")


def _data(num_train: int = 64):
    """Random 8x8 images (no signal): the plumbing, in a few steps per epoch."""
    return load_dataset("synthetic", image_shape=(8, 8, 1), num_train=num_train, num_test=32)


def _config(**changes):
    return resolve(tiny_config(**{"dataset": "synthetic", "batch_size": 16, **changes}))


class Recording(GreedyTrainer):
    """Keeps what it would export (no SavedModels: their writing is tested elsewhere)."""

    def export(self, suffix, classifier):
        self.exported = {**getattr(self, "exported", {}), suffix: classifier}


def _trainer(config, data=None, workdir=None) -> Recording:
    data = data or _data()
    return Recording(build_network(config, data), data, config, workdir, verbose=0, log=lambda m: None)


def _weights(trainer) -> list[np.ndarray]:
    return [v.numpy() for s in trainer.network.stages for v in s.variables] + [
        v.numpy() for j in sorted(trainer.heads) for v in trainer.heads[j].variables]


def _layer_names(model: keras.Model) -> list[str]:
    names = []
    for layer in model.layers:
        names.append(layer.name)
        if isinstance(layer, keras.Model):
            names += _layer_names(layer)
    return names


# ----------------------------------------------------------------------------- served stages, restore
@pytest.mark.parametrize("mode, loss", [("layerwise", "infopro"), ("decoupled", "predsim"), ("end_to_end", "sim")])
def test_local_runs_serve_the_classification_head_alone_and_restore(tmp_path, mode, loss):
    """The exported classifiers are images -> the head's logits, without decoders or similarity
    convs; a finished run rebuilds with every variable (extras included) and its recorded accuracy."""
    config, data, workdir = _config(mode=mode, local_loss=loss), _data(), str(tmp_path / "run")
    trainer = _trainer(config, data, workdir)
    with open_run(workdir, config):
        records = trainer.run()
    assert sorted(trainer.exported) == [r["problem"] for r in records]
    for classifier in trainer.exported.values():
        assert not [n for n in _layer_names(classifier) if any(t in n for t in TRAINING_ONLY)], mode
        assert classifier.output.shape[-1] == 10
    run = restore_run(workdir, lambda c, d: build_network(c, d), lambda c: data)
    images = np.concatenate([x.numpy() for x, _ in data.eval_batches("test", 512)])
    for record, classifier in zip(run.records, run.classifiers):
        assert not [n for n in _layer_names(classifier) if any(t in n for t in TRAINING_ONLY)], mode
        accuracy = np.mean(np.argmax(classifier.predict(images, verbose=0), -1) == data.labels("test"))
        assert accuracy == pytest.approx(record["test_accuracy"], abs=1e-9)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["local"]["loss"] == loss


def test_local_loss_changes_training_and_pred_is_the_default_step():
    """``pred`` builds the paper's problem (no objective: the unchanged step); the others train
    their extras, and sim's head learns on detached features (the stage's gradient is sim's alone)."""
    pred = _trainer(_config())
    assert pred.stage_problem(0).objective is None and pred.stage_problem(1).logits_model is None
    sim = _trainer(_config(local_loss="sim"))
    problem = sim.stage_problem(0)
    assert problem.objective.name == "sim" and set(problem.trainable.output) == {"logits", "similarity"}
    x, y = next(iter(sim.data.train_batches(16, 0, 0)))
    with tf.GradientTape() as tape:
        outputs = problem.trainable(x, training=True)
        ce = keras.losses.sparse_categorical_crossentropy(y, outputs["logits"], from_logits=True)
    grads = tape.gradient(ce, sim.network.stages[0].trainable_variables)
    assert all(g is None or not np.any(g.numpy()) for g in grads)  # no CE gradient reaches the stage
    e2e = _trainer(_config(mode="end_to_end", local_loss="infopro")).end_to_end_problem()
    assert set(e2e.trainable.output) == {"logits", "stage_00/logits", "stage_00/reconstruction"}


def test_fit_takes_a_local_loss_object_and_local_modules():
    x, y = load_dataset("digits").arrays("train")
    network = build_model("layerwise_cnn", (8, 8, 1), 10, num_stages=3, width=8, downsample_at=[1])
    loss = layerwise.InfoPro(recon_weight=1.0, class_term="contrast")
    result = layerwise.fit(network, (x[:64] / 16.0, y[:64]), mode="decoupled", local_loss=loss, local_modules=2,
                           epochs_per_stage=1, batch_size=32, verbose=0)
    assert result.network.num_stages == 2 and len(result.classifiers) == 2
    assert result.classifiers[0].output.shape[-1] == 10
    with pytest.raises(ConfigError, match="local_loss"):
        layerwise.fit(network, (x[:64], y[:64]), local_loss=3, verbose=0)



class FirstBatch(keras.callbacks.Callback):
    """Stage 0's training outputs on the run's first batch (before its step) and the loss that step
    reports; then ends the run."""

    def __init__(self, images):
        super().__init__()
        self.images, self.outputs, self.loss = images, None, None

    def on_train_batch_begin(self, batch, logs=None):
        if self.outputs is None:
            self.outputs = {k: v.numpy().astype(np.float64) for k, v in self.model(self.images, training=True).items()}

    def on_train_batch_end(self, batch, logs=None):
        self.loss = logs["loss"]
        self.model.stop_training = True


def _first_batch(local_loss, **options):
    """``layerwise.fit`` of a 2-stage CNN on 32-image digit batches (no weight decay): stage 0's first batch."""
    x, y = load_dataset("digits").arrays("train")
    x, y = (x[:64] / 16.0).astype(np.float32), y[:64]
    network = build_model("layerwise_cnn", (8, 8, 1), 10, num_stages=2, width=8, downsample_at=[1])
    batch = FirstBatch(x[:32])
    layerwise.fit(network, tf.data.Dataset.from_tensor_slices((x, y)).batch(32), local_loss=local_loss,
                  head=layerwise.AuxHead(k=1), epochs_per_stage=1, weight_decay=0.0, callbacks=[batch], verbose=0,
                  log=lambda m: None, **options)
    return batch.outputs, batch.loss, x[:32], y[:32]


def _np_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(labels)), labels]))


@pytest.mark.parametrize("local_loss, options", [
    (layerwise.PredSim(beta=0.25), {}), ("predsim", {"predsim_beta": 0.25}),
], ids=["object", "config_field"])
def test_a_non_default_predsim_beta_weighs_the_loss_fit_minimises(local_loss, options):
    outputs, loss, _, y = _first_batch(local_loss, **options)
    ce = _np_cross_entropy(outputs["logits"], y)
    sim = np_sim_loss(outputs["similarity"], y, 10)
    assert loss == pytest.approx(0.75 * ce + 0.25 * sim, rel=1e-5)
    assert loss != pytest.approx(0.01 * ce + 0.99 * sim, rel=1e-3)  # the default beta weighs differently


def test_infopros_weights_and_contrastive_temperature_reach_the_loss_fit_minimises():
    loss_object = layerwise.InfoPro(recon_weight=2.0, class_weight=0.75, class_term="contrast", temperature=0.5)
    outputs, loss, images, y = _first_batch(loss_object)
    bce = float(np.mean(np_bce_reconstruction(outputs["reconstruction"], images)))
    ce = _np_cross_entropy(outputs["logits"], y)
    by_hand = {t: 2.0 * bce + 0.75 * float(np.mean(np_supcon(outputs["projection"], y, t))) + ce for t in (0.5, 0.07)}
    assert loss == pytest.approx(by_hand[0.5], rel=1e-5)
    assert loss != pytest.approx(by_hand[0.07], rel=1e-3)  # the default temperature gives another loss


# ----------------------------------------------------------------------------- K local modules
def test_balanced_groups_is_the_best_partition():
    costs = [5, 1, 1, 9, 2, 2, 2, 7, 1]
    for k in (1, 2, 3, 5, 9):
        starts = balanced_groups(costs, k)
        largest = lambda s: max(sum(costs[a:b]) for a, b in zip(s, list(s[1:]) + [len(costs)]))
        brute = min(largest([0, *c]) for c in itertools.combinations(range(1, len(costs)), k - 1))
        assert starts[0] == 0 and len(starts) == k and largest(starts) == brute
    with pytest.raises(ConfigError, match="1 to 9"):
        balanced_groups(costs, 10)


@pytest.mark.parametrize("depth", [32, pytest.param(110, marks=pytest.mark.slow)])
def test_cifar_resnets_as_k_local_modules(depth):
    """K modules of roughly equal FLOPs at the block boundaries, computing the network's function."""
    network = build_model(f"resnet{depth}", (8, 8, 3), 10, width=4)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    head = network.final_head(network.output_shape(network.num_stages - 1), 10)
    whole = network.compose(head=head)(x).numpy()
    for k in (2, 4, 8, 16):
        modules = group_stages(network, k)
        assert modules.num_stages == k
        np.testing.assert_allclose(modules.compose(head=head)(x).numpy(), whole, atol=1e-5)
        flops = [count_flops(m) for m in modules.stages]
        assert max(flops) <= 1.25 * sum(flops) / k or k == 16  # 16: the stem alone is the smallest module
    with pytest.raises(ConfigError, match="stage_granularity=block"):
        group_stages(build_model("resnet32", (8, 8, 3), 10, width=4, stage_granularity="group"), 8)


def _step_modules(depth: int, k: int, mode: str) -> None:
    """K-module ResNet-``depth`` with InfoPro, one training step: of the decoupled step (every
    module on the batch, InfoPro's objectives), or of the first and the last module's greedy
    problems (the ones between are built the same way). No evaluation: the runs are tested above."""
    data = load_dataset("synthetic", image_shape=(8, 8, 3), num_train=8, num_test=8)
    config = _config(model=f"resnet{depth}", model_options={"width": 2}, local_modules=k, local_loss="infopro",
                     mode=mode, batch_size=8)
    trainer = _trainer(config, data)
    network = trainer.network
    assert network.num_stages == k
    x, y = next(iter(data.train_batches(8, 0, 0)))
    if mode == "decoupled":
        heads = [trainer.build_head(j) for j in range(k)]
        objectives = [trainer.head_plan.objective(network, j) for j in range(k)]
        extras = [trainer.head_plan.extras(network, j) for j in range(k)]
        models = decoupled_models(network, heads, extras, objectives)
        optimizers = [trainer.make_optimizer(Problem(stage_name(j), j, m, None, 1)) for j, m in enumerate(models)]
        step = make_local_decoupled_step(models, optimizers, objectives, global_batch_size=8)
        assert bool(step(x, y).finite)
        return
    for j in (0, k - 1):
        problem = trainer.stage_problem(j)
        assert (problem.objective is None) == (j == k - 1)  # InfoPro's last module: cross-entropy alone
        assert bool(trainer.train_step(problem, trainer.make_optimizer(problem))(x, y).finite)


@pytest.mark.parametrize("mode", ["layerwise", "decoupled"])
def test_k_module_resnet32_trains_with_infopro(mode):
    _step_modules(32, 4, mode)


@pytest.mark.slow
@pytest.mark.parametrize("depth, k, mode", [(110, 2, "layerwise"), (110, 16, "decoupled")])
def test_k_module_resnet110_trains_greedy_and_decoupled(depth, k, mode):
    _step_modules(depth, k, mode)


# ----------------------------------------------------------------------------- asynchronous decoupled mode
def test_replay_buffer_0_is_the_synchronous_step_bit_for_bit_and_1_the_same_algorithm():
    """--replay_buffer 0 trains exactly as a loop of make_decoupled_step (the synchronous mode) over
    the same batches; one-batch buffers with every stage stepping once per batch compute the same."""
    config = _config(mode="decoupled")
    trained = _trainer(config)
    trained.run()
    by_hand = _trainer(config)
    models = decoupled_models(by_hand.network, [by_hand.build_head(j) for j in range(2)])
    problems = [Problem(stage_name(j), j, m, None, 1) for j, m in enumerate(models)]
    step = make_decoupled_step(models, [by_hand.make_optimizer(p) for p in problems],
                               weight_decay=config.optim.weight_decay, global_batch_size=16)
    for x, y in by_hand.train_batches(Problem(DECOUPLED, 1, models[-1], None, 1), 0):
        step(x, y)
    for a, b in zip(_weights(trained), _weights(by_hand)):
        np.testing.assert_array_equal(a, b)
    one = _trainer(_config(mode="decoupled", replay_buffer=1, replay_schedule="rounds"))
    one.run()
    for a, b in zip(_weights(trained), _weights(one)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_async_runs_are_seeded_and_step_at_their_ratios():
    """A longer buffer and a last stage twice as fast: the same seed gives the same weights and
    records, every epoch's train accuracy is a fraction, and the result differs from synchronous."""
    config = _config(mode="decoupled", replay_buffer=3, stage_step_ratios=[1, 2], epochs_per_stage=2,
                     replay_schedule="rounds")
    runs = [_trainer(config) for _ in range(2)]
    records = [r.run() for r in runs]
    assert [r["test_accuracy"] for r in records[0]] == [r["test_accuracy"] for r in records[1]]
    for a, b in zip(_weights(runs[0]), _weights(runs[1])):
        np.testing.assert_array_equal(a, b)
    epochs = [r for r in runs[0].runlog.records if r["event"] == "epoch"]
    assert len(epochs) == 2 and all(0 <= r["accuracy"] <= 1 for r in epochs)
    # the last stage's optimizer (the model callbacks see) counts its updates: 2 per batch of
    # 2 epochs x 64 // 16 batches; synchronous, 1 per batch
    assert int(runs[0].callbacks.model.optimizer.iterations) == 2 * 2 * (64 // 16)
    sync = _trainer(_config(mode="decoupled", epochs_per_stage=2))
    sync.run()
    assert int(sync.callbacks.model.optimizer.iterations) == 2 * (64 // 16)
    assert not all(np.array_equal(a, b) for a, b in zip(_weights(sync), _weights(runs[0])))


def test_async_mode_checks_its_configuration():
    with pytest.raises(ConfigError, match="mode decoupled"):
        tiny_config(replay_buffer=2).validate()
    with pytest.raises(ConfigError, match="first 1"):
        tiny_config(mode="decoupled", replay_buffer=2, stage_step_ratios=[2, 1]).validate()
    with pytest.raises(ConfigError, match="2 stages"):
        _trainer(_config(mode="decoupled", replay_buffer=2, stage_step_ratios=[1, 1, 1]))


def test_replay_buffer_samples_only_the_last_n_written_batches_and_each_of_them():
    # every batch is marked with its write number (features, labels and images alike): a sample
    # says which write it came from, so an unwritten slot (zeros) or a stale one shows up
    size, batch = 3, 2
    # the uniform policy draws every filled slot (priority_lifo's order: tests/test_fidelity.py)
    buffer = ReplayBuffer(keras.KerasTensor((None, 2)), size, batch, (2, 2, 1), "traced", "uniform")
    for writes in range(1, 8):
        k = writes - 1
        buffer.push(tf.fill([batch, 2], k + 1.0), tf.fill([batch], k), tf.fill([batch, 2, 2, 1], k + 1.0))
        drawn = set()
        for s in range(24):
            features, labels, images = buffer.sample(tf.constant([s, writes], tf.int64))
            marks = {*(features.numpy().ravel() - 1), *labels.numpy().ravel(), *(images.numpy().ravel() - 1)}
            assert len(marks) == 1  # one slot: the features, labels and images of one batch
            drawn |= marks
        assert drawn == set(range(max(0, writes - size), writes)), writes  # the filled slots, all of them


def _exact_steps(ratio: Fraction, rounds: int) -> list[int]:
    """Steps per round of a stage at ``ratio`` steps per round: after t rounds it has taken floor(t r)."""
    return [math.floor((t + 1) * ratio) - math.floor(t * ratio) for t in range(rounds)]


def test_steps_in_round_follow_the_stage_step_ratio():
    assert _exact_steps(Fraction(1, 2), 4) == [0, 1, 0, 1]  # every other round, from the second
    for ratio in (Fraction(1), Fraction(2), Fraction(1, 2), Fraction(1, 3), Fraction(3, 2), Fraction(1, 4)):
        got = [int(steps_in_round(float(ratio), tf.constant(t, tf.int64))) for t in range(12)]
        assert got == _exact_steps(ratio, 12), ratio


@pytest.mark.parametrize("ratios", [[1, 2, 0.5], [1, 0.5, 1]], ids=["fast_then_slow", "slow_middle"])
def test_async_stages_take_their_ratio_of_steps_every_round(ratios):
    # each stage's optimizer counts the updates it applied; a stage waits (takes no step) while
    # the buffer it reads is still empty, as stage 2 of 1,0.5,1 in round 0
    step, optimizers, _ = async_dense_stages(ratios)
    x, y = tf.random.stateless_normal([4, 3], [1, 2]), tf.constant([0, 1, 2, 3])
    rounds = 6
    per_round = [_exact_steps(Fraction(r).limit_denominator(), rounds) for r in ratios]
    for j in range(1, len(ratios)):  # no writes before the previous stage's first step
        first_input = next(t for t, n in enumerate(per_round[j - 1]) if n)
        per_round[j] = [n if t >= first_input else 0 for t, n in enumerate(per_round[j])]
    for t in range(rounds):
        assert bool(step(x, y).finite)
        taken = [int(o.iterations) for o in optimizers]
        assert taken == [sum(steps[: t + 1]) for steps in per_round], (t, taken)


# ----------------------------------------------------------------------------- cutout
def test_cutout_is_a_seeded_half_side_square_of_the_mean_colour():
    image = tf.fill([8, 8, 3], 5.0)
    fill = np.array([1.0, 2.0, 3.0], np.float32)
    out = cutout(image, tf.constant([3, 4]), fill).numpy()
    assert np.array_equal(out, cutout(image, tf.constant([3, 4]), fill).numpy())
    cut = np.all(out == fill, axis=-1)
    rows, cols = np.flatnonzero(cut.any(1)), np.flatnonzero(cut.any(0))
    assert 2 <= len(rows) <= 4 and 2 <= len(cols) <= 4 and cut.sum() == len(rows) * len(cols)  # clipped at the border
    assert np.all(out[~cut] == 5.0)
    sizes = {int(np.all(cutout(image, tf.constant([s, 0]), fill).numpy() == fill, -1).sum()) for s in range(40)}
    assert max(sizes) == 16 and min(sizes) < 16  # 4 x 4 inside, clipped at the border
    flipped = augment_image(tf.random.uniform([8, 8, 3]), "crop_flip_cutout", tf.constant([1, 2]), fill=fill)
    assert np.any(np.all(flipped.numpy() == fill, -1))


# ----------------------------------------------------------------------------- memory per module
@pytest.mark.slow
def test_module_memory_measures_every_module_against_end_to_end():
    """apps.bench --module_memory's case: every module's step, the largest, its ratio in the table."""
    result = run_case({"size": "tiny", "k": 2})
    assert [m["module"] for m in result["modules"]] == [0, 1]
    assert result["peak_mib"] == largest_peak(m["peak_mib"] for m in result["modules"])
    e2e = dict(result, k=0, modules=[], peak_mib=4.0)
    table = markdown([e2e, dict(result, peak_mib=1.0, modules=[{"module": 0, "peak_mib": 1.0}]),
                      {"k": 4, "error": "boom"}])
    assert "| end to end | - | 4 | 1.00 |" in table and "| 2 | 1 | 1 | 0.25 |" in table and "boom" in table


def test_an_interrupted_async_run_resumes_with_its_replay_buffers(tmp_path, quiet_log):
    """The replay buffers are training state: an asynchronous run killed in its second epoch and
    resumed from the first epoch's checkpoint gives the uninterrupted run's numbers."""
    config = resolve(tiny_config(mode="decoupled", replay_buffer=2, epochs_per_stage=3))
    straight = run_training(config, str(tmp_path / "straight"), verbose=0, log=quiet_log)

    def crash_in_second_epoch(message):  # the trainer logs an epoch before checkpointing it
        if "epoch 2/3" in message:
            raise KeyboardInterrupt

    workdir = str(tmp_path / "interrupted")
    with pytest.raises(KeyboardInterrupt):
        run_training(config, workdir, verbose=1, log=crash_in_second_epoch)
    messages = []
    resumed = run_training(config, workdir, verbose=1, log=messages.append)
    assert any("resuming after epoch 1 of 3" in m for m in messages)
    assert [r["test_accuracy"] for r in resumed] == [r["test_accuracy"] for r in straight]
    assert [r["accuracy"] for r in resumed] == [r["accuracy"] for r in straight]
