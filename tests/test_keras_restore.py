"""A run restores and exports from its directory alone (issues 22 item 4, 23): ``layerwise.fit``
saves the network with the run (``network.json``), so ``restore_run(workdir)``, ``export_run(workdir)``
and ``python -m apps.export WORKDIR`` rebuild exactly what trained, a ``split_model`` network on
arrays included, in a fresh process that imports nothing from ``apps``; the uint8 serving
signature exists only where uint8 pixels are what the network saw."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.runner import build_network, resolve, run_training  # in this process only, to make a CLI run
import layerwise
from layerwise.errors import CheckpointError
from layerwise.run.network_file import NETWORK_FILE, RecordedData
from layerwise.training.local_losses import PredSim
from conftest import REPO, digit_arrays, interrupt_at_stage, run_cli, three_conv_cnn, tiny_config

SPLIT_STAGES = 3
HEAD = layerwise.AuxHead(k=1, width=8, pooled_size=1, hidden_units=(16,), dropout=0.3)


def user_model(seed: int = 0) -> keras.Model:
    """A small Keras model of the user's, ending in a softmax classifier (split_model's final head)."""
    return three_conv_cnn("restore_cnn", seed, batchnorm=True)


def fit(x, y, workdir, callbacks=()):
    return layerwise.fit(
        layerwise.split_model(user_model(), SPLIT_STAGES), x, y, workdir=workdir, head=HEAD,
        local_loss=PredSim(beta=0.5), epochs_per_stage=1, batch_size=64, precision="float32", verbose=0,
        log=lambda message: None, callbacks=list(callbacks),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The uninterrupted run in memory, and the same run interrupted at stage 1 and resumed in a workdir."""
    x, y = digit_arrays()
    x, y, probe = x[:256], y[:256], x[1500:1564]
    reference = fit(x, y, None)
    workdir = str(tmp_path_factory.mktemp("restore") / "run")
    with pytest.raises(KeyboardInterrupt):
        fit(x, y, workdir, [interrupt_at_stage(1)])
    fit(x, y, workdir)
    expected = [c.predict(probe, verbose=0) for c in reference.classifiers]
    ensemble = reference.ensemble().predict(probe, verbose=0)
    return {"workdir": workdir, "probe": probe, "expected": expected, "ensemble": ensemble}


FRESH_PROCESS = textwrap.dedent("""
    import sys
    import numpy as np
    import tensorflow as tf
    import keras
    import layerwise

    workdir, export_root, out = sys.argv[1:4]
    probe = np.load(out + ".probe.npy")
    run = layerwise.restore_run(workdir)
    restored = [np.asarray(keras.ops.softmax(c(probe, training=False))) for c in run.classifiers]
    written = layerwise.export_run(workdir, export_root=export_root, log=lambda message: None)
    served, default_dtypes = {}, {}
    for servable, path in written.items():
        loaded = tf.saved_model.load(path)
        default = loaded.signatures["serving_default"]
        default_dtypes[servable] = default.structured_input_signature[1]["images"].dtype.name
        served[servable] = default(images=tf.constant(probe))["probabilities"].numpy()
        floats = loaded.signatures["serving_float"](images=tf.constant(probe))["probabilities"].numpy()
        assert np.array_equal(floats, served[servable]), servable
    np.savez(out, *restored, problems=np.array(run.problems), **{"served/" + k: v for k, v in served.items()},
             dtypes=np.array(sorted(default_dtypes.items())))
    assert "apps" not in sys.modules and "models" not in sys.modules, sorted(m for m in sys.modules if m.startswith(("apps", "models")))
""")


@pytest.mark.slow
def test_restore_and_export_in_a_fresh_process_without_apps_equal_the_uninterrupted_run(trained, tmp_path):
    """The resumed run's network.json, checkpoints and config rebuild every stage's classifier, and
    the exported SavedModels, to 1e-6 of the uninterrupted run, with the library alone (cwd outside
    the checkout, no apps, no models)."""
    workdir, probe, expected = trained["workdir"], trained["probe"], trained["expected"]
    saved = json.loads(pathlib.Path(workdir, NETWORK_FILE).read_text())
    assert saved["input"]["uint8_pixels"] is False and len(saved["stages"]) == SPLIT_STAGES
    script, out = tmp_path / "fresh.py", str(tmp_path / "outputs.npz")
    script.write_text(FRESH_PROCESS)
    np.save(out + ".probe.npy", probe)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")  # this checkout's layerwise, not the installed one
    done = subprocess.run([sys.executable, str(script), workdir, str(tmp_path / "export"), out], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = np.load(out)
    assert list(outputs["problems"]) == ["stage_00", "stage_01", "stage_02"]
    for j, want in enumerate(expected):
        np.testing.assert_allclose(outputs[f"arr_{j}"], want, atol=1e-6)
        np.testing.assert_allclose(outputs[f"served/restore_cnn_stage_{j:02d}"], want, atol=1e-6)
    np.testing.assert_allclose(outputs["served/restore_cnn_ensemble"], trained["ensemble"], atol=1e-6)
    # float images that never were uint8: every servable's serving_default takes float32
    assert {dtype for _, dtype in outputs["dtypes"]} == {"float32"}
    assert len(outputs["dtypes"]) == SPLIT_STAGES + 2  # the stages, the ensemble and the cascade


@pytest.mark.slow
def test_apps_export_exports_a_run_of_fit_on_arrays(trained, tmp_path):
    """``python -m apps.export WORKDIR`` on a split_model network trained by fit on arrays (it
    said ``unknown dataset 'arrays'``): its servables give the uninterrupted run's probabilities."""
    workdir, probe, expected = trained["workdir"], trained["probe"], trained["expected"]
    export_dir = str(tmp_path / "served")
    done = run_cli("apps.export", workdir, "--export_dir", export_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    for j, want in enumerate(expected):
        path = os.path.join(export_dir, f"restore_cnn_stage_{j:02d}", "1")
        default = tf.saved_model.load(path).signatures["serving_default"]
        got = default(images=tf.constant(probe))["probabilities"].numpy()
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.slow
def test_a_run_without_its_network_asks_for_build_network(trained, tmp_path):
    """A run written before networks were saved restores only through build_network (the old
    path, kept), and the error says so."""
    workdir = tmp_path / "old"
    for name in ("config.json", "checkpoints"):
        source = pathlib.Path(trained["workdir"], name)
        if source.is_dir():
            for f in source.rglob("final.npz"):
                target = workdir / f.relative_to(trained["workdir"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(f.read_bytes())
        else:
            workdir.mkdir(exist_ok=True)
            (workdir / name).write_bytes(source.read_bytes())
    with pytest.raises(CheckpointError, match="pass build_network"):
        layerwise.restore_run(str(workdir))
    run = layerwise.restore_run(
        str(workdir), lambda config, data: layerwise.split_model(user_model(), SPLIT_STAGES),
        lambda config: RecordedData("arrays", (8, 8, 1), 10, [0.0], [1.0], False))
    probabilities = keras.ops.softmax(run.classifiers[-1](trained["probe"], training=False))
    np.testing.assert_allclose(probabilities, trained["expected"][-1], atol=1e-6)


@pytest.mark.slow
def test_uint8_images_get_a_uint8_signature_that_casts_them(tmp_path):
    """A run of fit on uint8 arrays: serving_default takes uint8 pixels and answers what the network
    answers on them as floats (no normalisation: the run had none)."""
    x, y = digit_arrays()
    pixels = np.rint(x[:128] * 255).astype(np.uint8)
    workdir = str(tmp_path / "run")
    network = layerwise.split_model(user_model(), 2)
    result = layerwise.fit(network, pixels, y[:128], workdir=workdir, epochs_per_stage=1, batch_size=64,
                           precision="float32", verbose=0, log=lambda message: None)
    written = layerwise.export_run(workdir, export_root=str(tmp_path / "export"), log=lambda message: None)
    default = tf.saved_model.load(written["restore_cnn_stage_01"]).signatures["serving_default"]
    assert default.structured_input_signature[1]["images"].dtype == tf.uint8
    got = default(images=tf.constant(pixels[:32]))["probabilities"].numpy()
    want = result.classifiers[-1].predict(pixels[:32].astype(np.float32), verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_no_module_of_the_library_imports_apps():
    """``layerwise`` never imports ``apps`` (issue 23), not even by name through importlib or in a
    docstring example (test_structure checks import statements; this checks the text)."""
    pattern = re.compile(r"(^|\s)(from|import)\s+apps\b|import_module\(\s*[\"']apps")
    found = [f"{path.relative_to(REPO)}:{n}" for path in pathlib.Path(REPO, "layerwise").rglob("*.py")
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


@pytest.mark.slow
def test_a_zoo_run_restores_from_its_saved_network_as_from_the_zoo(tmp_path):
    """A CLI run (a zoo model on a registered dataset) saves its network too: rebuilt from
    network.json it gives the zoo-built run's outputs, and the dataset's normalisation is recorded
    (its uint8 signature normalises as training did)."""
    workdir = str(tmp_path / "zoo")
    run_training(tiny_config(), workdir, verbose=0, log=lambda message: None)
    saved = layerwise.restore_run(workdir)
    zoo = layerwise.restore_run(workdir, lambda config, data: build_network(resolve(config), data))
    np.testing.assert_array_equal(saved.data.mean, zoo.data.mean)
    np.testing.assert_array_equal(saved.data.std, zoo.data.std)
    assert saved.data.uint8_pixels and zoo.data.uint8_pixels
    images = next(iter(zoo.data.eval_batches("test", 32)))[0]
    assert len(saved.classifiers) == len(zoo.classifiers) == 2
    for a, b in zip(saved.classifiers, zoo.classifiers):
        np.testing.assert_allclose(a(images, training=False), b(images, training=False), atol=1e-6)


class Doubling(keras.layers.Layer):
    """A custom layer never registered with Keras: its config names a class Keras cannot find."""

    def call(self, inputs):
        return 2.0 * inputs


@keras.saving.register_keras_serializable(package="test_keras_restore")
class Projection(keras.layers.Layer):
    """Registered, but its config forgets ``units``: rebuilt from it, it has other weights."""

    def __init__(self, units=1, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), name="kernel")

    def call(self, inputs):
        return keras.ops.matmul(inputs, self.kernel)

    def get_config(self):
        config = super().get_config()
        config.pop("units", None)  # the mistake
        return config


@pytest.mark.parametrize("layer, why", [
    (lambda: Doubling(name="doubling"), "Doubling not registered"),
    (lambda: Projection(4, name="projection"), "rebuild other weights"),
], ids=["unregistered", "config_misses_an_argument"])
def test_a_network_keras_cannot_rebuild_trains_with_a_note_and_asks_for_build_network(tmp_path, layer, why):
    """No network.json that would not restore: the run trains, says once why its network is not
    saved and that restoring it needs build_network, and restore_run says so too."""
    x, y = digit_arrays()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    h = layer()(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    workdir, messages = str(tmp_path / "run"), []
    layerwise.fit(layerwise.split_model(model, ["conv"]), x[:64], y[:64], workdir=workdir, epochs_per_stage=1,
                  batch_size=32, head=layerwise.AuxHead(k=1), precision="float32", verbose=0, log=messages.append)
    assert not os.path.exists(os.path.join(workdir, NETWORK_FILE))
    notes = [m for m in messages if "network is not saved" in m]
    assert len(notes) == 1 and why in notes[0] and "build_network" in notes[0], messages
    with pytest.raises(CheckpointError, match="pass build_network"):
        layerwise.restore_run(workdir)
