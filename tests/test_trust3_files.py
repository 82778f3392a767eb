"""Issue #25, "Trust, third round", point 4 and 6: files and readers that used to crash or
mislead, each now one line (``DatasetUnavailableError``, ``CorruptCheckpointError``,
``ConfigError``, ``ServingInputError``; exit 2 from the apps) before any work.

Each hostile file is one row of a table; everything is real files, real Keras and TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_cli, tiny_config

from apps.runner import build_network, resolve, run_training
from layerwise.data import load_dataset
from layerwise.errors import ConfigError, CorruptCheckpointError, DatasetUnavailableError, ServingInputError
from layerwise.run.checkpoints import load_arrays, save_arrays
from layerwise.export import export_run
from layerwise.serving import clients as serving
from layerwise.serving.inputs import InputSpec, prepare_inputs

# ------------------------------------------------------------------ image_folder
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png(path: Path, value: int) -> None:
    import keras

    path.parent.mkdir(parents=True, exist_ok=True)
    keras.utils.save_img(str(path), np.full((6, 6, 3), value, np.uint8), scale=False)


def _classes(root: Path, names=("cat", "dog"), per_class: int = 5) -> None:
    for c, name in enumerate(names):
        for i in range(per_class):
            _png(root / name / f"{i}.png", 40 + 100 * c)


def _text_named_png(root: Path) -> str:
    _classes(root)
    (root / "dog" / "notes.png").write_text("these are my dog photos\n")
    return "dog/notes.png"


def _corrupt_png(root: Path) -> str:
    _classes(root)
    good = (root / "cat" / "0.png").read_bytes()
    (root / "cat" / "2.png").write_bytes(good[:8] + bytes(range(256)) * 2)  # a PNG signature, then junk
    return "cat/2.png"


def _truncated_png(root: Path) -> str:
    _classes(root)
    good = (root / "dog" / "1.png").read_bytes()
    (root / "dog" / "1.png").write_bytes(good[: len(good) // 2])
    return "dog/1.png"


def _empty_class(root: Path) -> str:
    _classes(root)
    (root / "empty").mkdir()
    (root / "empty" / "readme.txt").write_text("nothing here")
    return "empty"


def _dangling_class_link(root: Path) -> str:
    _classes(root)
    os.symlink(root.parent / "moved_away", root / "bird")
    return "bird"


def _test_class_absent_from_train(root: Path) -> str:
    _classes(root / "train")
    _classes(root / "test", names=("cat", "dog", "zebra"), per_class=2)
    return "only in test: zebra"


def _train_class_absent_from_test(root: Path) -> str:
    _classes(root / "train", names=("cat", "dog", "zebra"))
    _classes(root / "test", per_class=2)
    return "only in train: zebra"


BAD_FOLDERS = {
    # case: (make the folder -> the text the one line must hold, what else it must say)
    "a text file named .png": (_text_named_png, "is not an image"),
    "a PNG signature followed by junk": (_corrupt_png, "cannot be decoded"),
    "a truncated PNG": (_truncated_png, "cannot be decoded"),
    "an empty class folder": (_empty_class, "holds no images"),
    "a class folder that links to nothing": (_dangling_class_link, "does not exist"),
    "a test class absent from train": (_test_class_absent_from_train, "different class folders"),
    "a train class absent from test": (_train_class_absent_from_test, "different class folders"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_bad_image_folder_is_one_line_naming_the_path(case, tmp_path):
    make, says = BAD_FOLDERS[case]
    root = tmp_path / "images"
    root.mkdir()
    named = make(root)
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset("image_folder", data_dir=str(root), image_size=8, augment="none")
    message = str(caught.value)
    assert "\n" not in message and says in message and named in message, message


def test_a_symlinked_class_folder_is_read_like_a_folder_and_other_files_are_not_read(tmp_path):
    root = tmp_path / "images"
    _classes(root)
    _classes(tmp_path / "elsewhere", names=("bird",))
    os.symlink(tmp_path / "elsewhere" / "bird", root / "bird")
    (root / "cat" / "notes.txt").write_text("not an image, not read")
    data = load_dataset("image_folder", data_dir=str(root), image_size=8, augment="none")
    assert data.num_classes == 3
    x, y = data.arrays("train")
    x_test, y_test = data.arrays("test")
    assert np.bincount(np.concatenate([y, y_test])).tolist() == [5, 5, 5]  # bird (class 0) has its 5 images
    assert np.all(np.concatenate([x, x_test])[np.concatenate([y, y_test]) == 0] == 40)


def test_the_train_app_says_a_corrupt_png_in_one_line_with_exit_2(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    _corrupt_png(root)
    workdir = tmp_path / "run"
    result = run_cli("apps.train", "--dataset", "image_folder", "--data_dir", str(root), "--workdir", str(workdir),
                     "--epochs_per_stage", "1", "--num_stages", "1", "--width", "8", timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines[-1].startswith("error: image_folder: ") and "cat/2.png" in lines[-1], lines
    assert "Traceback" not in result.stderr
    assert not workdir.exists() or not any(workdir.rglob("*.npz"))  # nothing trained


# ------------------------------------------------------------------ final.npz with impossible values
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A finished 2-stage run of the tiny digits configuration (a few seconds)."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    run_training(resolve(tiny_config()), str(workdir), verbose=0, log=lambda _: None)
    return workdir


def _with_negative_variance(final: Path) -> str:
    arrays, meta = load_arrays(str(final))
    key = next(k for k in arrays if k.endswith("/moving_variance"))
    arrays[key] = arrays[key].copy()
    arrays[key][0] = -0.5  # finite, and exp/sqrt(-0.5 + 1e-3) is NaN in inference
    save_arrays(str(final), arrays, meta)
    return key


def test_a_negative_batchnorm_variance_is_a_corrupt_checkpoint_set_aside_and_retrained(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir)
    final = workdir / "checkpoints" / "stage_01" / "final.npz"
    key = _with_negative_variance(final)
    with pytest.raises(CorruptCheckpointError, match="values no training writes") as caught:
        load_arrays(str(final), finite=True)
    assert key in str(caught.value) and "negative" in str(caught.value)
    with pytest.raises(CorruptCheckpointError, match="negative"):  # export never serves it (NaN probabilities)
        export_run(str(workdir), build_network, str(tmp_path / "srv"), log=lambda _: None)
    assert not (tmp_path / "srv").exists() or not any((tmp_path / "srv").rglob("saved_model.pb"))
    messages = []
    records = run_training(resolve(tiny_config()), str(workdir), verbose=0, log=messages.append)
    assert any("values no training writes" in m and "retraining stage_01" in m for m in messages), messages
    assert (final.parent / "final.npz.corrupt").exists()
    arrays, _ = load_arrays(str(final), finite=True)  # the retrained stage is sound
    assert np.all(arrays[key] >= 0) and np.all(np.isfinite(records[-1]["test_accuracy"]))


def _with_overflowing_kernels(final: Path) -> None:
    arrays, meta = load_arrays(str(final))
    for key in arrays:
        if key.endswith("/kernel"):
            arrays[key] = arrays[key] * np.float32(1e30)  # finite, and 1e30 * 1e30 is not
    assert not [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.all(np.isfinite(v))]
    save_arrays(str(final), arrays, meta)


def test_finite_weights_with_non_finite_outputs_are_a_corrupt_checkpoint_set_aside_and_retrained(
        trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir)
    final = workdir / "checkpoints" / "stage_01" / "final.npz"
    _with_overflowing_kernels(final)
    load_arrays(str(final), finite=True)  # every value is finite: only the outputs tell
    with pytest.raises(CorruptCheckpointError, match="whose outputs are NaN or infinite"):
        export_run(str(workdir), build_network, str(tmp_path / "srv"), log=lambda _: None)
    messages = []
    run_training(resolve(tiny_config()), str(workdir), verbose=0, log=messages.append)
    assert any("whose outputs are NaN or infinite" in m and "retraining stage_01" in m for m in messages), messages
    assert (final.parent / "final.npz.corrupt").exists()
    retrained, _ = load_arrays(str(final), finite=True)
    original, _ = load_arrays(str(trained_run / "checkpoints" / "stage_01" / "final.npz"))
    for key in original:  # retrained from the initial weights, not from the bad ones: the same stage again
        np.testing.assert_allclose(retrained[key], original[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_a_zero_or_positive_variance_is_sound(tmp_path):
    path = str(tmp_path / "final.npz")
    save_arrays(path, {"model/bn/moving_variance": np.array([0.0, -0.0, 3.0], np.float32)}, {})
    load_arrays(path, finite=True)


# ------------------------------------------------------------------ config.json missing a field
def _drop_top(name):
    def drop(config: dict) -> None:
        del config[name]
    return drop


def _drop_grouped(group, name):
    def drop(config: dict) -> None:
        del config[group][name]
    return drop


MISSING_FIELDS = {
    # case: (edit of the stored config.json, the flat name the refusal must give)
    "seed deleted": (_drop_top("seed"), "seed"),
    "lr deleted from its group": (_drop_grouped("optim", "lr"), "lr"),
    "the whole heads group deleted": (_drop_top("heads"), "aux_conv_layers"),
}


def _run_without(trained_run, tmp_path, case) -> tuple[Path, str, dict]:
    edit, field = MISSING_FIELDS[case]
    workdir = tmp_path / "run"
    shutil.copytree(trained_run, workdir)
    path = workdir / "config.json"
    config = json.loads(path.read_text())
    edit(config)
    path.write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()}
    return workdir, field, before


@pytest.mark.parametrize("case", list(MISSING_FIELDS))
@pytest.mark.parametrize("action", ["resume", "export"])
def test_a_config_json_missing_a_field_is_refused_naming_it_never_defaulted(trained_run, tmp_path, case, action):
    workdir, field, before = _run_without(trained_run, tmp_path, case)
    with pytest.raises(ConfigError) as caught:
        if action == "resume":
            run_training(resolve(tiny_config()), str(workdir), verbose=0, log=lambda _: None)
        else:
            export_run(str(workdir), build_network, str(tmp_path / "srv"), log=lambda _: None)
    message = str(caught.value)
    assert "\n" not in message and "lacks" in message and f"{field} (default" in message, message
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before  # nothing written
    assert not (tmp_path / "srv").exists()


@pytest.mark.slow  # two app processes: about 10 s
def test_the_apps_refuse_a_config_json_missing_seed_in_one_line_with_exit_2(trained_run, tmp_path):
    workdir, _, before = _run_without(trained_run, tmp_path, "seed deleted")
    for app, args in (("apps.train", ["--config", str(workdir / "config.json"), "--workdir", str(workdir)]),
                      ("apps.export", [str(workdir), "--export_dir", str(tmp_path / "srv")])):
        result = run_cli(app, *args, timeout=300)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert lines[-1].startswith("error: ") and "lacks 1 field(s): seed (default" in lines[-1], lines
    assert {p: p.read_bytes() for p in workdir.rglob("*") if p.is_file()} == before


# ------------------------------------------------------------------ a damaged SavedModel to apps.predict
def _delete_variables(version: Path) -> str:
    shutil.rmtree(version / "variables")
    return "variables/variables.index is missing"


def _truncate_saved_model_pb(version: Path) -> str:
    pb = version / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[:-97])
    return "damaged SavedModel"


def _truncate_variables_data(version: Path) -> str:
    (data,) = (version / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:16])
    return "damaged SavedModel"


def _empty_saved_model_pb(version: Path) -> str:
    (version / "saved_model.pb").write_bytes(b"")
    return "damaged SavedModel"


DAMAGED_SAVED_MODELS = {
    "variables/ deleted": _delete_variables,
    "saved_model.pb truncated": _truncate_saved_model_pb,
    "variables data truncated": _truncate_variables_data,
    "saved_model.pb empty": _empty_saved_model_pb,
}


def _a_servable_version(trained_run, tmp_path) -> Path:
    (first,) = sorted(trained_run.glob("export/*stage_00/1/saved_model.pb"))[:1]
    version = tmp_path / "servable" / "1"
    shutil.copytree(first.parent, version)
    return version


@pytest.mark.parametrize("case", list(DAMAGED_SAVED_MODELS))
def test_a_damaged_saved_model_is_one_serving_input_error_line(trained_run, tmp_path, case):
    version = _a_servable_version(trained_run, tmp_path)
    says = DAMAGED_SAVED_MODELS[case](version)
    with pytest.raises(ServingInputError) as caught:
        serving.LocalModel(str(version.parent))
    message = str(caught.value)
    assert "\n" not in message and says in message and str(version) in message and "export it again" in message


def test_apps_predict_on_a_saved_model_without_variables_is_one_line_with_exit_2(trained_run, tmp_path):
    version = _a_servable_version(trained_run, tmp_path)
    _delete_variables(version)
    images = tmp_path / "batch.npy"
    np.save(images, np.zeros((2, 8, 8, 1), np.uint8))
    result = run_cli("apps.predict", "--model_dir", str(version), "--npy", str(images), timeout=300)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert lines[-1].startswith("error: ") and "variables/variables.index is missing" in lines[-1], lines


# ------------------------------------------------------------------ images the clients refuse before sending
FLOAT_SPEC = {"serving_float": {"images": InputSpec("images", "float32", (None, 8, 8, 1))}}
UINT8_SPEC = {"serving_default": {"images": InputSpec("images", "uint8", (None, 8, 8, 1))}}
ONE = np.zeros((8, 8, 1))

BAD_IMAGES = {
    # case: (signature, images, what the one line says)
    "float64 1e300: finite, but infinite in float32": ("serving_float", np.full((2, 8, 8, 1), 1e300), "too large for float32"),
    "float64 -1e39 in one pixel": ("serving_float", np.where(np.arange(128).reshape(2, 8, 8, 1) == 5, -1e39, 0.5),
                                   "too large for float32"),
    "float64 NaN": ("serving_float", np.full((1, 8, 8, 1), np.nan), "NaN or infinite"),
    "a ragged list of images (float)": ("serving_float", [ONE, np.zeros((9, 9, 1))], "ragged list"),
    "a ragged list of images (uint8)": ("serving_default", [ONE.astype(np.uint8), np.zeros((8, 7, 1), np.uint8)],
                                        "ragged list"),
    "a ragged nested list": ("serving_default", [[[0]] * 8] * 7 + [[[0]] * 6], "ragged list"),
    "a list holding None": ("serving_default", [ONE, None], "ragged list"),
    "strings": ("serving_default", np.full((1, 8, 8, 1), "7"), "numeric pixels"),
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_images_a_client_cannot_send_are_one_serving_input_error_line(case):
    signature, images, says = BAD_IMAGES[case]
    specs = FLOAT_SPEC if signature == "serving_float" else UINT8_SPEC
    with pytest.raises(ServingInputError) as caught:
        prepare_inputs(specs, images, signature, None)
    assert says in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_large_but_representable_floats_pass_as_float32():
    _, inputs = prepare_inputs(FLOAT_SPEC, np.full((1, 8, 8, 1), 3e38), "serving_float", None)
    assert inputs["images"].dtype == np.float32 and np.all(np.isfinite(inputs["images"]))


def test_the_local_client_refuses_1e300_before_the_graph_sees_it(trained_run, tmp_path):
    version = _a_servable_version(trained_run, tmp_path)
    model = serving.LocalModel(str(version))
    with pytest.raises(ServingInputError, match="too large for float32"):
        model.predict(np.full((2, 8, 8, 1), 1e300), "serving_float")
    with pytest.raises(ServingInputError, match="ragged list"):
        model.predict([np.zeros((8, 8, 1), np.uint8), np.zeros((9, 9, 1), np.uint8)])
    assert model.predict(np.full((2, 8, 8, 1), 0.5), "serving_float")["probabilities"].shape[0] == 2


# ------------------------------------------------------------------ a stage a callback stopped
class StopRunAfterFirstEpoch(keras.callbacks.Callback):
    """Sets ``model.stop_training`` after the run's first epoch (a callback that is not per-stage)."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.model.stop_training = True


def test_a_stage_a_callback_stopped_is_final_says_so_and_a_rerun_keeps_it(tmp_path):
    workdir = str(tmp_path / "run")
    config = resolve(tiny_config(epochs_per_stage=2))
    first = run_training(config, workdir, verbose=0, log=lambda _: None, callbacks=[StopRunAfterFirstEpoch()])
    assert [(r["stage"], r["epochs"], r["stopped_early"]) for r in first] == [(0, 1, True)]
    messages = []
    again = run_training(config, workdir, verbose=0, log=messages.append)
    assert any("stage_00: finished earlier" in m for m in messages), messages  # loaded, not trained on
    assert [(r["stage"], r["epochs"], r["stopped_early"]) for r in again] == [(0, 1, True), (1, 2, False)]
