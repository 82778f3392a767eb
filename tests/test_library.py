"""The library itself (not through apps): split_model, fit in every mode on a user's own model and
tf.data pipeline, Keras callbacks, .keras round trips, resume through fit(workdir=...)."""

import glob
import itertools
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import layerwise
from layerwise.errors import WorkdirMismatchError
from conftest import digit_arrays

SPLIT_AT = ["relu1", "relu2"]


def user_model(seed: int = 0, dropout: float = 0.0) -> keras.Model:
    """A small functional model with a residual block, ending in a softmax classifier; ``dropout``:
    with a Dropout layer in the residual branch and one before the classifier."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    # momentum 0.9 (PyTorch's 0.1): Keras's 0.99 leaves the moving statistics far from the data
    # after the few dozen steps of these tests, and the decoupled stages, trained on the
    # batch-statistics output of stage 0, would then be evaluated on very different features
    x = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    branch = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(x)
    if dropout:
        branch = keras.layers.Dropout(dropout, name="branch_dropout")(branch)
    x = keras.layers.Add(name="add")([x, branch])
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:1500], y[:1500], x[1500:], y[1500:]


def pipelines(digits, batch=64):
    x, y, xv, yv = digits
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(128)
    return train, val


# ------------------------------------------------------------------------------ split_model
@pytest.mark.parametrize("application, stages", [
    (keras.applications.ResNet50, 4), (keras.applications.MobileNetV2, 3), (keras.applications.EfficientNetB0, 3),
])
def test_split_keras_applications_compose_to_the_original(application, stages):
    model = application(weights=None, input_shape=(32, 32, 3), classes=10)
    network = layerwise.split_model(model, stages)
    assert network.num_stages == stages and network.num_classes == 10
    assert len(network.options["split_at"]) == stages - 1
    images = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    composed = network.compose(head=network.final_head(network.output_shape(stages - 1), 10))
    np.testing.assert_allclose(keras.ops.softmax(composed(images)), model(images), atol=1e-6)
    # the stages share the model's weights: no copy, nothing lost
    ids = {id(v) for s in network.stages for v in s.weights} | {id(v) for v in composed.weights}
    assert ids == {id(v) for v in model.weights}


def test_a_cut_through_a_residual_connection_names_the_nearest_valid_cuts():
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    with pytest.raises(layerwise.ConfigError, match=r"conv2_block1_1_conv.*more than one tensor.*'pool1_pool' or 'conv2_block1_out'"):
        layerwise.split_model(model, ["conv2_block1_1_conv"])
    network = layerwise.split_model(model, ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out"])
    assert network.num_stages == 4 and network.output_shape(1) == (4, 4, 512)


def test_split_a_user_model_at_layer_names():
    model = user_model()
    network = layerwise.split_model(model, SPLIT_AT)
    assert [network.output_shape(j) for j in range(3)] == [(8, 8, 8), (4, 4, 16), (4, 4, 16)]
    assert [len(s.layers) for s in network.stages] == [4, 3, 4]  # with their input layers
    with pytest.raises(layerwise.ConfigError, match="'conv3'.*nearest valid cuts are 'relu2'$"):
        layerwise.split_model(model, ["conv3"])
    with pytest.raises(layerwise.ConfigError, match="cannot cut after 'relu3'"):
        layerwise.split_model(model, ["relu3"])
    with pytest.raises(layerwise.ConfigError, match="no layer 'nope'"):
        layerwise.split_model(model, ["nope"])
    with pytest.raises(layerwise.ConfigError, match="at most 4 stages"):
        layerwise.split_model(model, 9)
    body = keras.Model(model.inputs, model.get_layer("relu3").output)
    with pytest.raises(layerwise.ConfigError, match="num_classes"):
        layerwise.split_model(body, 2)
    assert layerwise.split_model(body, 2, num_classes=10).final_head is None


def chain_model() -> keras.Model:
    """Convs of very different costs, one of them in a residual branch, then a classifier."""
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv_a")(inputs)
    x = keras.layers.ReLU(name="relu_a")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv_b")(x)
    x = keras.layers.ReLU(name="relu_b")(x)
    branch = keras.layers.Conv2D(8, 3, padding="same", name="conv_c")(x)
    x = keras.layers.Add(name="add_c")([x, branch])
    x = keras.layers.ReLU(name="relu_c")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv_d")(x)
    x = keras.layers.ReLU(name="relu_d")(x)
    x = keras.layers.Conv2D(16, 1, name="conv_e")(x)
    x = keras.layers.ReLU(name="relu_e")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv_f")(x)
    x = keras.layers.ReLU(name="relu_f")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="predictions")(x))


# chain_model's stage layers in order with their forward FLOPs by hand (2 x output positions x
# kernel entries; activations and additions cost nothing), and the layers after which one tensor
# crosses (not conv_c: the residual's input is alive beside it; relu_f ends the last stage)
CHAIN_FLOPS = {
    "conv_a": 2 * 64 * 9 * 1 * 4, "relu_a": 0, "conv_b": 2 * 64 * 9 * 4 * 8, "relu_b": 0,
    "conv_c": 2 * 64 * 9 * 8 * 8, "add_c": 0, "relu_c": 0, "conv_d": 2 * 16 * 9 * 8 * 16, "relu_d": 0,
    "conv_e": 2 * 16 * 16 * 16, "relu_e": 0, "conv_f": 2 * 16 * 9 * 16 * 16, "relu_f": 0,
}
CHAIN_CUTS = ["conv_a", "relu_a", "conv_b", "relu_b", "add_c", "relu_c", "conv_d", "relu_d", "conv_e", "relu_e",
              "conv_f"]


def test_split_into_k_stages_picks_the_cuts_that_minimise_the_largest_stage():
    names = list(CHAIN_FLOPS)
    done = dict(zip(names, np.cumsum(list(CHAIN_FLOPS.values()))))  # FLOPs up to and including a layer
    total = done[names[-1]]

    def largest(cuts):
        bounds = [0] + [done[c] for c in cuts] + [total]
        return max(b - a for a, b in zip(bounds[:-1], bounds[1:]))

    model = chain_model()
    for k in (2, 3, 4, 5):
        picked = layerwise.split_model(model, k).options["split_at"]
        options = list(itertools.combinations(CHAIN_CUTS, k - 1))
        best = min(largest(c) for c in options)
        optimal = {c for c in options if largest(c) == best}
        assert tuple(picked) in optimal, (k, picked, best)
        # of cuts with the same FLOPs before them, the last: after the block's activation
        assert all(c == [n for n in CHAIN_CUTS if done[n] == done[c]][-1] for c in picked), (k, picked)
        if len({tuple(done[n] for n in c) for c in optimal}) == 1:  # one balanced partition: exactly it
            assert picked == [[n for n in CHAIN_CUTS if done[n] == done[c]][-1] for c in min(optimal)], k
    # the partitions above, by hand: 2 stages halve at the residual block, 3 and 4 isolate conv_c and conv_f
    assert [layerwise.split_model(model, k).options["split_at"] for k in (2, 3, 4)] == [
        ["relu_c"], ["relu_b", "relu_d"], ["relu_b", "relu_c", "relu_e"]]


@pytest.mark.parametrize("softmax", [keras.layers.Softmax, lambda name: keras.layers.Activation("softmax", name=name)],
                         ids=["Softmax", "Activation"])
def test_a_separate_softmax_layer_is_left_out_of_the_final_head(softmax):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    logits = keras.layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, softmax(name="probabilities")(logits))
    network = layerwise.split_model(model, ["relu1"])
    head = network.final_head(network.output_shape(1), 10)
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    expected = keras.Model(inputs, logits)(images)  # the model without its softmax layer
    np.testing.assert_allclose(head(network.stages[1](network.stages[0](images))), expected, atol=1e-6)
    np.testing.assert_allclose(keras.ops.softmax(expected), model(images), atol=1e-6)


# ------------------------------------------------------------------------------ fit
@pytest.mark.parametrize("mode", ["layerwise", "end_to_end", "decoupled"])
def test_fit_a_user_model_on_a_user_pipeline_in_every_mode(digits, mode, quiet_log):
    model = user_model()
    train, val = pipelines(digits)
    result = layerwise.fit(layerwise.split_model(model, SPLIT_AT), train, validation=val, test=val, mode=mode,
                           epochs_per_stage=2, head=layerwise.AuxHead(k=1), lr=0.1, verbose=0, log=quiet_log)
    stages = [r for r in result.records if r["event"] == "stage"]
    assert len(stages) == (1 if mode == "end_to_end" else 3)
    # decoupled trains every stage in each of its 2 passes; the others train 6 epochs
    assert stages[-1]["test_accuracy"] > (0.3 if mode == "decoupled" else 0.6), stages
    epochs = result.epochs
    assert len(epochs) == {"layerwise": 6, "end_to_end": 6, "decoupled": 2}[mode]
    # the user's model is the trained network: its softmax outputs are the last classifier's
    _, _, xv, _ = digits
    np.testing.assert_allclose(model.predict(xv[:16], verbose=0), result.classifiers[-1].predict(xv[:16], verbose=0),
                               atol=1e-5)


def test_fit_takes_arrays_and_refuses_what_it_cannot_use(digits, quiet_log):
    x, y, xv, yv = digits
    network = layerwise.split_model(user_model(), SPLIT_AT)
    result = layerwise.fit(network, (x, y), test=(xv, yv), epochs_per_stage=2, batch_size=64, lr=0.1,
                           head=layerwise.AuxHead(k=1), verbose=0, log=quiet_log)
    assert [r["stage"] for r in result.records] == [0, 1, 2] and result.records[-1]["test_accuracy"] > 0.6
    with pytest.raises(layerwise.ConfigError, match="split a Keras model first"):
        layerwise.fit(user_model(), (x, y))
    with pytest.raises(layerwise.ConfigError, match="unknown fit option.*learning_rate"):
        layerwise.fit(network, (x, y), learning_rate=0.1)
    with pytest.raises(layerwise.ConfigError, match="batch it"):
        layerwise.fit(network, tf.data.Dataset.from_tensor_slices((x, y)))
    with pytest.raises(layerwise.ConfigError, match="keep_best picks epochs on a validation split"):
        layerwise.fit(network, (x, y), keep_best=True)


# k=2 heads on 4 x 4 x 16 features, their parameters by hand: a bias-free 3x3 conv to 12 channels
# (BatchNorm after it: 4 vectors), the spatial average, BatchNorm before the linear layer to 10 classes
@pytest.mark.parametrize("head, params", [
    # averaged to 2x2: 4 x 12 features
    (layerwise.AuxHead(k=2, width=12), 9 * 16 * 12 + 4 * 12 + 4 * 48 + (48 * 10 + 10)),
    # what the configuration has no field for: averaged to 1x1, a hidden layer of 16 with dropout
    (layerwise.AuxHead(k=2, width=12, pooled_size=1, hidden_units=(16,), dropout=0.25),
     9 * 16 * 12 + 4 * 12 + (12 * 16 + 16) + 4 * 16 + (16 * 10 + 10)),
], ids=["config", "own"])
def test_fit_trains_the_aux_heads_asked_for(digits, quiet_log, head, params):
    x, y, _, _ = digits
    network = layerwise.split_model(user_model(), ["relu2"])  # stage 0's features: 4 x 4 x 16
    result = layerwise.fit(network, (x[:64], y[:64]), epochs_per_stage=1, batch_size=32, head=head, verbose=0,
                           log=quiet_log)
    trained = result.heads[0]  # the last stage uses the model's own classifier
    kernels = [v.shape for v in trained.weights if v.path.endswith("kernel") and len(v.shape) == 4]
    assert kernels == [(3, 3, 16, 12)]
    assert trained.count_params() == params
    assert sum(isinstance(layer, keras.layers.Dropout) for layer in trained.layers) == (2 if head.dropout else 0)
    assert result.config.heads.width == 12  # the run's fingerprint (config.json) says so too


class Recorder(layerwise.StageCallback):
    """Every call, in order, with the parts of its logs a test checks."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin",))

    def on_stage_begin(self, stage, logs=None):
        self.calls.append(("stage_begin", stage))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, logs["stage"], logs["stage_epoch"]))

    def on_train_batch_end(self, batch, logs=None):
        assert np.isfinite(logs["loss"]) and 0 <= logs["accuracy"] <= 1
        self.calls.append(("batch_end", batch))

    def on_epoch_end(self, epoch, logs=None):
        assert self.model.optimizer.iterations.numpy() > 0  # the stage's training model
        self.calls.append(("epoch_end", epoch, logs["stage"], logs["stage_epoch"], sorted(logs)))

    def on_stage_end(self, stage, logs=None):
        self.calls.append(("stage_end", stage, logs["event"], logs["test_accuracy"] is not None))

    def on_train_end(self, logs=None):
        self.calls.append(("train_end",))


def test_callbacks_see_every_stage_epoch_and_batch_in_order(digits, tmp_path, quiet_log):
    train, val = pipelines(digits, batch=500)  # 3 batches per epoch
    recorder = Recorder()
    csv = tmp_path / "log.csv"
    callbacks = [recorder, keras.callbacks.CSVLogger(str(csv)), keras.callbacks.TensorBoard(str(tmp_path / "tb"))]
    layerwise.fit(layerwise.split_model(user_model(), SPLIT_AT), train, validation=val, test=val,
                  epochs_per_stage=2, callbacks=callbacks, verbose=0, log=quiet_log)
    keys = ["accuracy", "loss", "lr", "stage", "stage_epoch", "test_accuracy", "val_accuracy", "val_loss"]
    expected = [("train_begin",)]
    for stage in range(3):
        expected.append(("stage_begin", stage))
        for e in range(2):
            epoch = 2 * stage + e
            expected += [("epoch_begin", epoch, stage, e)] + [("batch_end", b) for b in range(3)]
            expected.append(("epoch_end", epoch, stage, e, keys))
        expected.append(("stage_end", stage, "stage", True))
    expected.append(("train_end",))
    assert recorder.calls == expected
    rows = csv.read_text().splitlines()
    assert rows[0].split(",")[0] == "epoch" and [r.split(",")[0] for r in rows[1:]] == [str(e) for e in range(6)]
    assert glob.glob(str(tmp_path / "tb" / "train" / "events.out.tfevents.*"))


def test_early_stopping_ends_the_stage_not_the_run(digits, quiet_log):
    train, val = pipelines(digits)
    # no epoch after the first improves by 10: every stage stops after its second epoch
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=10.0, patience=0)
    result = layerwise.fit(layerwise.split_model(user_model(), SPLIT_AT), train, validation=val, epochs_per_stage=4,
                           callbacks=[stop], verbose=0, log=quiet_log)
    stages = [r for r in result.records if r["event"] == "stage"]
    assert [r["stage"] for r in stages] == [0, 1, 2] and [r["epochs"] for r in stages] == [2, 2, 2]
    epochs = [(r["stage"], r["epoch"]) for r in result.epochs]
    assert epochs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]



class EpochWeights(layerwise.StageCallback):
    """Every variable of the stage's training model (stage and head) after each of its epochs."""

    def __init__(self):
        super().__init__()
        self.after = {}  # (stage, stage epoch) -> {id(variable): value}

    def on_epoch_end(self, epoch, logs=None):
        self.after[logs["stage"], logs["stage_epoch"]] = {id(v): v.numpy().copy() for v in self.model.weights}


def test_early_stopping_on_val_accuracy_maximises_it_and_restores_the_stages_best_epoch(digits, quiet_log):
    train, val = pipelines(digits)
    stop = keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1, restore_best_weights=True)
    weights = EpochWeights()
    result = layerwise.fit(layerwise.split_model(user_model(), SPLIT_AT), train, validation=val, test=val,
                           epochs_per_stage=5, lr=0.2, callbacks=[stop, weights], verbose=0, log=quiet_log)
    epochs = result.epochs
    stages = [r for r in result.records if r["event"] == "stage"]
    assert [r["stage"] for r in stages] == [0, 1, 2]
    improved_later = restored_earlier = False
    for record in stages:
        j = record["stage"]
        accuracies = [r["val_accuracy"] for r in epochs if r["stage"] == j]
        # EarlyStopping by hand, accuracy maximised: stop after `patience` epochs without a new best
        best, wait, ran = 0, 0, 5
        for e, accuracy in enumerate(accuracies[1:], 1):
            if accuracy > accuracies[best]:
                best, wait = e, 0
            else:
                wait += 1
                if wait >= 1:
                    ran = e + 1
                    break
        assert len(accuracies) == ran == record["epochs"], (j, accuracies)
        improved_later |= best > 0
        restored_earlier |= best < ran - 1
        # the stage keeps its best epoch's weights (and head), also in its record
        kept = weights.after[j, best]
        for v in result.network.stages[j].weights + result.heads[j].weights:
            np.testing.assert_array_equal(v.numpy(), kept[id(v)], err_msg=f"stage {j}: {v.path}")
        assert record["test_accuracy"] == pytest.approx(accuracies[best], abs=1e-9)  # test = val here
        assert record["val_accuracy"] == accuracies[best] and record["kept_epoch"] == best
    # both directions and the restoring matter in this run: minimising would have stopped elsewhere
    assert improved_later and restored_earlier


class StopRunAt(keras.callbacks.Callback):
    """Ends the whole run (``stop_training`` from a callback that is not per-stage)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_stop_training_from_other_callbacks_ends_the_run(digits, quiet_log):
    train, _ = pipelines(digits)
    result = layerwise.fit(layerwise.split_model(user_model(), SPLIT_AT), train, epochs_per_stage=2,
                           callbacks=[StopRunAt(2)], verbose=0, log=quiet_log)
    assert [r["stage"] for r in result.records] == [0, 1] and result.records[-1]["epochs"] == 1


def test_every_stage_classifier_and_the_ensemble_round_trip_through_keras_files(digits, tmp_path, quiet_log):
    from models import build_model

    x, y, xv, yv = digits
    keras.utils.set_random_seed(0)
    zoo = build_model("layerwise_cnn", (8, 8, 1), 10, num_stages=2, width=8, downsample_at=[1])  # space-to-depth
    for name, network in (("user", layerwise.split_model(user_model(), SPLIT_AT)), ("zoo", zoo)):
        result = layerwise.fit(network, (x, y), test=(xv, yv), epochs_per_stage=1, head=layerwise.AuxHead(k=2, width=8),
                               verbose=0, log=quiet_log)
        models = result.classifiers + [result.ensemble()]
        assert len(models) == network.num_stages + 1
        for i, model in enumerate(models):
            path = str(tmp_path / f"{name}_{i}.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
            expected = model.predict(xv, verbose=0)
            np.testing.assert_allclose(loaded.predict(xv, verbose=0), expected, atol=1e-6)
            np.testing.assert_allclose(expected.sum(-1), 1.0, atol=1e-5)
        # the ensemble is the paper's 2^j-weighted average of the stage probabilities
        stage_probs = [m.predict(xv, verbose=0) for m in result.classifiers]
        weights = np.array([2.0**j for j in range(len(stage_probs))]) / sum(2.0**j for j in range(len(stage_probs)))
        np.testing.assert_allclose(models[-1].predict(xv, verbose=0), sum(w * p for w, p in zip(weights, stage_probs)),
                                   atol=1e-6)
        accuracy = np.mean(np.argmax(result.classifiers[-1].predict(xv, verbose=0), -1) == yv)
        assert accuracy == pytest.approx(result.records[-1]["test_accuracy"], abs=1e-9)


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_fit_resumes_a_workdir_to_the_uninterrupted_numbers(digits, tmp_path, quiet_log):
    x, y, xv, yv = digits

    def run(workdir, callbacks=(), **changes):
        network = layerwise.split_model(user_model(), SPLIT_AT)
        options = {**dict(epochs_per_stage=2, batch_size=64, verbose=0, log=quiet_log), **changes}
        result = layerwise.fit(network, (x, y), test=(xv, yv), workdir=workdir, callbacks=list(callbacks), **options)
        return result, [v.numpy() for s in network.stages for v in s.weights]

    reference, expected = run(None)
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run(workdir, [InterruptAt(3)])  # during stage 1's second epoch
    messages = []
    result, weights = run(workdir, log=messages.append)
    assert any("stage_00: finished earlier" in m for m in messages)
    assert any("stage_01: resuming after epoch 1 of 2" in m for m in messages)
    for a, b in zip(weights, expected):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in result.records] == [r["test_accuracy"] for r in reference.records]
    assert sorted(os.listdir(os.path.join(workdir, "export"))) == [
        "models.config", "user_cnn_stage_00", "user_cnn_stage_01", "user_cnn_stage_02"]
    with pytest.raises(WorkdirMismatchError, match="lr: 0.05 -> 0.1"):
        run(workdir, lr=0.1)


def test_a_run_with_dropout_resumed_in_the_same_process_gives_the_uninterrupted_numbers(digits, tmp_path, quiet_log):
    # Keras numbers seed generators per process (seed_generator_<n>): the resumed model's differ
    # from the interrupted one's, yet their state must come back from the checkpoint
    x, y, xv, yv = digits

    def run(workdir, callbacks=()):
        network = layerwise.split_model(user_model(dropout=0.5), 1)  # one problem with both dropouts
        result = layerwise.fit(network, (x[:256], y[:256]), test=(xv, yv), workdir=workdir, epochs_per_stage=3,
                               batch_size=64, callbacks=list(callbacks), verbose=0, log=quiet_log)
        return result, [v.numpy() for v in network.stages[0].weights + result.heads[0].weights]

    reference, expected = run(None)
    workdir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        run(workdir, [InterruptAt(2)])  # resumed after epoch 2: the dropout masks go on from there
    result, weights = run(workdir)
    for a, b in zip(weights, expected):
        np.testing.assert_array_equal(a, b)
    assert [r["test_accuracy"] for r in result.records] == [r["test_accuracy"] for r in reference.records]
