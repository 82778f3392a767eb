"""Issue 22, files and threads: every ``.keras`` the project writes or a ``Result`` saves loads in a
fresh process with Keras alone (and after ``import layerwise``); a workdir admits one ``fit`` at a
time, also between threads of one process, and atomic writes of one file by two threads never
collide."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import textwrap
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf

import layerwise
from layerwise.errors import WorkdirBusyError
from layerwise.files import atomic_write_bytes
from layerwise.run.lock import workdir_lock
from layerwise.nn.downsampling import SpaceToDepth
from layerwise.nn.layers import BlockAveragePooling2D, FusedBatchNormalization
from layerwise.nn.network import primary
from layerwise.nn.portable import standard_layers
from layerwise.training.problems import ensemble_weights
from layerwise.nn.training_layers import DenseLogits, StopGradient
from conftest import digit_arrays


@pytest.fixture(scope="module")
def digits():
    x, y = digit_arrays()
    return x[:256], y[:256], x[1500:1564]


def user_model() -> keras.Model:
    """A functional model with a BatchNorm layer, ending in a softmax Dense (split: DenseLogits)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.5, name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="user_cnn")


def class_names(config) -> set[str]:
    """Every ``module.class_name`` in a serialised Keras config."""
    found = set()
    if isinstance(config, dict):
        if "class_name" in config and "module" in config:
            found.add(f"{config['module']}.{config['class_name']}")
        for value in config.values():
            found |= class_names(value)
    elif isinstance(config, (list, tuple)):
        for value in config:
            found |= class_names(value)
    return found


def fast_probabilities(result, j: int, x) -> np.ndarray:
    """Stage j's probabilities computed by the trained network and head themselves (our layers)."""
    logits = result.heads[j](primary(result.network.run(tf.constant(x), 0, j + 1, training=False)), training=False)
    return tf.nn.softmax(tf.cast(logits, tf.float32)).numpy()


# ------------------------------------------------------------------------------ A. saved files load
def test_standard_layers_computes_the_same_with_keras_layers_only():
    keras.utils.set_random_seed(1)
    inner_in = keras.Input((8, 8, 4))
    y = FusedBatchNormalization(momentum=0.5, name="fbn")(inner_in)
    y = SpaceToDepth(2, name="s2d")(y)
    inner = keras.Model(inner_in, y, name="stage")
    images = keras.Input((8, 8, 4), name="images")
    x = inner(images)
    x = StopGradient(name="detached")(x)
    x = BlockAveragePooling2D((2, 1), name="block")(x)
    x = keras.layers.Flatten(name="flat")(x)
    dense = keras.layers.Dense(5, activation="softmax", name="dense")
    dense.build((None, 32))
    x = DenseLogits(dense, name="logits")(x)
    model = keras.Model(images, x, name="fast")
    bn = inner.get_layer("fbn")
    bn.set_weights([np.random.uniform(0.5, 2, 4), np.random.normal(size=4), np.random.normal(size=4),
                    np.random.uniform(0.5, 2, 4)])
    data = np.random.normal(size=(3, 8, 8, 4)).astype("float32")

    portable = standard_layers(model)

    names = class_names(json.loads(portable.to_json()))
    assert not [n for n in names if not n.startswith("keras")], names
    assert "keras.layers.BatchNormalization" in names and "keras.layers.AveragePooling2D" in names
    np.testing.assert_allclose(portable.predict(data, verbose=0), model.predict(data, verbose=0), atol=1e-6)
    assert portable.get_layer("flat") is model.get_layer("flat")  # other layers are shared, not copied
    plain = keras.Model(images, keras.layers.ReLU()(images))
    assert standard_layers(plain) is plain


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    {preamble}
    import keras
    expected = json.load(open("expected.json"))
    for path, values in expected.items():
        model = keras.saving.load_model(path)
        x = np.load("x.npy")
        out = np.asarray(model.predict(x, verbose=0), "float64")
        if path.endswith("model.keras"):  # an export: logits
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        assert np.abs(out - np.asarray(values)).max() < 1e-6, (path, np.abs(out - np.asarray(values)).max())
    print("loaded", len(expected), "layerwise" in sys.modules, "models" in sys.modules)
""")


def load_in_a_fresh_process(directory, preamble: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(preamble=preamble)], cwd=directory, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_saved_classifiers_ensembles_and_exports_load_in_a_fresh_process_with_keras_alone(digits, tmp_path):
    from models import build_model

    x, y, xv = digits
    keras.utils.set_random_seed(0)
    zoo = build_model("layerwise_cnn", (8, 8, 1), 10, num_stages=2, width=8, downsample_at=[1])  # space-to-depth
    expected = {}
    for name, network, workdir in (("zoo", zoo, str(tmp_path / "run")),
                                   ("user", layerwise.split_model(user_model(), ["relu1"]), None)):
        # float32: under a mixed policy the compiled predict (fused kernels) and the eager call that
        # computes ``expected`` round differently, by ~1e-3, whichever file is loaded
        result = layerwise.fit(network, (x, y), epochs_per_stage=1, batch_size=64, verbose=0, workdir=workdir,
                               head=layerwise.AuxHead(k=2, width=8, pooled_size=2), precision="float32",
                               log=lambda m: None)
        stages = [fast_probabilities(result, j, xv) for j in sorted(result.heads)]
        for j, classifier in enumerate(result.classifiers):
            classifier.save(str(tmp_path / f"{name}_{j}.keras"))
            expected[f"{name}_{j}.keras"] = stages[j].tolist()
        result.ensemble().save(str(tmp_path / f"{name}_ensemble.keras"))
        expected[f"{name}_ensemble.keras"] = sum(w * p for w, p in zip(ensemble_weights(len(stages)), stages)).tolist()
        if workdir:
            for j, path in enumerate(sorted(glob.glob(f"{workdir}/export/*_stage_*/*/model.keras"))):
                expected[os.path.relpath(path, tmp_path)] = stages[j].tolist()
    assert sum(k.endswith("model.keras") for k in expected) == 2
    np.save(tmp_path / "x.npy", xv)
    (tmp_path / "expected.json").write_text(json.dumps(expected))

    assert load_in_a_fresh_process(tmp_path, "") == "loaded 8 False False"
    assert load_in_a_fresh_process(tmp_path, "import layerwise") == "loaded 8 True False"


# ------------------------------------------------------------------------------ B. threads
def test_a_workdir_lock_excludes_another_thread_of_the_process_and_is_reentrant_in_its_own(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    link = tmp_path / "link"
    link.symlink_to(workdir)
    inside, release, outcome = threading.Event(), threading.Event(), {}

    def holder():
        with workdir_lock(str(workdir), "training"):
            with workdir_lock(str(link), "writing the report"):  # the same thread, by another path
                inside.set()
                release.wait(30)

    thread = threading.Thread(target=holder, name="trainer-1")
    thread.start()
    try:
        assert inside.wait(30)
        for path in (workdir, link):
            with pytest.raises(WorkdirBusyError) as refused:
                with workdir_lock(str(path), "exporting"):
                    outcome["entered"] = path
            message = str(refused.value)
            assert "\n" not in message and "another thread" in message and "'trainer-1'" in message, message
            assert "training since" in message
    finally:
        release.set()
        thread.join(30)
    assert "entered" not in outcome
    with workdir_lock(str(link), "exporting"):  # released: the next holder gets in
        pass


class WaitInside(keras.callbacks.Callback):
    """Signals ``inside`` at the first epoch and waits there until ``release`` (at most 60 s)."""

    def __init__(self, inside: threading.Event, release: threading.Event):
        super().__init__()
        self.inside, self.release = inside, release

    def on_epoch_begin(self, epoch, logs=None):
        if not self.inside.is_set():
            self.inside.set()
            self.release.wait(60)


def test_a_second_fit_in_another_thread_is_refused_while_the_first_trains(digits, tmp_path):
    x, y, _ = digits
    workdir = str(tmp_path / "runs" / "t")
    inside, release, results, errors = threading.Event(), threading.Event(), [], []

    def fit(callbacks):
        keras.utils.set_random_seed(0)
        network = layerwise.split_model(user_model(), ["relu1"])  # the same configuration: it could resume
        return layerwise.fit(network, (x, y), epochs_per_stage=2, batch_size=64, verbose=0, workdir=workdir,
                             callbacks=callbacks, log=lambda m: None)

    def first():
        try:
            results.append(fit([WaitInside(inside, release)]))
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    thread = threading.Thread(target=first, name="first-fit")
    thread.start()
    try:
        assert inside.wait(120), errors
        with pytest.raises(WorkdirBusyError) as refused:
            fit([])
    finally:
        release.set()
        thread.join(120)
    message = str(refused.value)
    assert "\n" not in message and "'first-fit'" in message and "training since" in message, message
    assert not errors and len(results) == 1
    epochs = [(r["stage"], r["epoch"]) for r in (json.loads(line) for line in open(f"{workdir}/metrics.jsonl"))
              if r["event"] == "epoch"]
    assert epochs == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_two_threads_writing_one_file_atomically_never_collide(tmp_path):
    path = str(tmp_path / "state.json")
    payloads = {name: (name * 40_000).encode() for name in ("a", "b")}
    errors, start = [], threading.Barrier(2)

    def writer(name):
        start.wait()
        try:
            for _ in range(60):
                atomic_write_bytes(path, payloads[name])
        except Exception as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(name,)) for name in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors[0]
    assert open(path, "rb").read() in payloads.values()  # one writer's whole file
    assert os.listdir(tmp_path) == ["state.json"]  # no temporary file left
