"""Precision is decided once per run (``layerwise.precision.settle_precision``) and means the
same on the CLI and in ``layerwise.fit``: the whole network and the heads compute in it."""

import ast
import pathlib

import keras
import pytest

from conftest import REPO, digit_arrays, tiny_config

import layerwise
from apps.runner import build_network, resolve, run_training
from layerwise.precision import adopt_policy, resolve_precision, settle_precision
from layerwise.run.loading import load_data
from models import build_model


def _policies(network) -> list[tuple[str, str]]:
    """``(layer, dtype policy)`` of every stage model and its layers, input layers left out."""
    return [(f"{j}/{layer.name}", layer.dtype_policy.name) for j, stage in enumerate(network.stages)
            for layer in [stage, *stage.layers] if not isinstance(layer, keras.layers.InputLayer)]


@pytest.mark.parametrize("precision", ["auto", "mixed_bfloat16"])
def test_the_cli_and_fit_give_the_network_the_same_dtype_policies(precision):
    config = tiny_config(precision=precision, epochs_per_stage=1)
    settled = resolve(config)  # the CLI: decided, then the zoo network is built under it
    data = load_data(settled, False, False)
    cli_network = build_network(settled, data)
    expected = resolve_precision(precision)[0]
    assert {policy for _, policy in _policies(cli_network)} == {expected}

    network = build_model(config.model, data.image_shape, data.num_classes, **settled.model_options)  # a user's
    x, y = digit_arrays()
    messages = []
    result = layerwise.fit(network, x[:64], y[:64], config=config, verbose=0, log=messages.append)
    assert result.config.precision == expected
    assert _policies(result.network) == _policies(cli_network)
    decided = [m for m in messages if m.startswith("precision:")]
    assert decided == ([f"precision: auto -> {expected} ({resolve_precision('auto')[1]})"]
                       if precision == "auto" else [])


def test_the_cli_says_once_which_policy_auto_chose():
    messages = []
    run_training(tiny_config(precision="auto"), None, verbose=0, log=messages.append, download=False)
    policy, why = resolve_precision("auto")
    assert [m for m in messages if m.startswith("precision:")] == [f"precision: auto -> {policy} ({why})"]


def test_a_layer_built_in_another_policy_keeps_it_and_float32_changes_nothing():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, dtype="mixed_float16", name="half")(
        keras.layers.Dense(3, name="plain")(inputs)))
    adopt_policy([model], "float32")
    assert model.get_layer("plain").dtype_policy.name == "float32"
    adopt_policy([model], "mixed_bfloat16")
    assert model.get_layer("plain").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("half").dtype_policy.name == "mixed_float16"


def test_settle_precision_decides_auto_only_and_says_why():
    config = tiny_config(precision="float32")
    assert settle_precision(config) == (config, "")
    settled, line = settle_precision(tiny_config(precision="auto"))
    policy, why = resolve_precision("auto")
    assert settled.precision == policy and line == f"precision: auto -> {policy} ({why})"


def test_resolve_precision_is_called_in_one_place():
    """Every path decides through ``settle_precision``: nothing else calls ``resolve_precision``."""
    callers = set()
    for package in ("layerwise", "apps", "models"):
        for path in pathlib.Path(REPO, package).rglob("*.py"):
            functions = [f for f in ast.walk(ast.parse(path.read_text())) if isinstance(f, ast.FunctionDef)]
            calls = {(f.name, node) for f in functions for node in ast.walk(f) if isinstance(node, ast.Call)}
            callers |= {f"{path.relative_to(REPO)}::{name}" for name, call in calls
                        if ast.unparse(call.func).split(".")[-1] == "resolve_precision"}
    assert callers == {"layerwise/precision.py::settle_precision"}


def test_precision_is_on_the_ground_floor():
    """``layerwise.precision`` imports TensorFlow, Keras, the standard library and nothing of the project above
    ``layerwise.errors``: every floor may use it."""
    tree = ast.parse(pathlib.Path(REPO, "layerwise", "precision.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    project = {name for name in imported if name.split(".")[0] in ("layerwise", "apps", "models")}
    assert project <= {"layerwise.errors"} and "tensorflow" in imported and "keras" in imported
