"""oneDNN decided before TensorFlow loads (``layerwise.onednn``): on by default on x86-64 Linux,
a value the user set kept, and TensorFlow really running with what was decided."""

import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO
from layerwise.onednn import ENV, choose_onednn

X86_LINUX = dict(machine="x86_64", system="Linux")


def test_unset_on_x86_linux_turns_onednn_on_and_says_so():
    environ = {}
    choice = choose_onednn(environ, tensorflow_loaded=False, **X86_LINUX)
    assert environ == {ENV: "1"}
    assert choice.enabled is True
    assert choice.describe().startswith("oneDNN: on (layerwise's default")
    assert f"{ENV}=0 turns it off" in choice.describe()


@pytest.mark.parametrize("value, enabled", [("0", False), ("false", False), ("1", True), ("True", True)])
def test_a_value_the_user_set_is_kept(value, enabled):
    environ = {ENV: value}
    choice = choose_onednn(environ, tensorflow_loaded=False, **X86_LINUX)
    assert environ == {ENV: value}
    assert choice.enabled is enabled
    assert f"{ENV}={value} set by you" in choice.describe()


def test_nothing_is_set_once_tensorflow_is_imported_or_off_x86_linux():
    for kwargs in (dict(tensorflow_loaded=True, **X86_LINUX),
                   dict(tensorflow_loaded=False, machine="aarch64", system="Linux"),
                   dict(tensorflow_loaded=False, machine="x86_64", system="Darwin")):
        environ = {}
        choice = choose_onednn(environ, **kwargs)
        assert environ == {} and choice.enabled is None, kwargs
        assert "TensorFlow's default" in choice.describe()


PROBE = ("import layerwise, os; import tensorflow as tf; "
         "from tensorflow.python.util import _pywrap_util_port as port; "
         "from layerwise.onednn import CHOICE; "
         "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled(), CHOICE.describe())")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or platform.system() != "Linux",
                    reason="layerwise decides oneDNN on x86-64 Linux only")
@pytest.mark.parametrize("user_value, expected", [(None, "1 True oneDNN: on"), ("0", "0 False oneDNN: off")])
def test_tensorflow_runs_with_what_was_decided(user_value, expected):
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if user_value is not None:
        env[ENV] = user_value
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip().splitlines()[-1]
    assert out.startswith(expected), out


def test_bench_compare_runs_each_variant_with_its_own_environment():
    """``apps.bench --compare --onednn 0,1 --onednn_max_isa AVX2``: one run per precision and value,
    each process given its variables (the reference the ISA cap only)."""
    from apps import speed_compare  # a plain module: apps.bench's flags would clash with other apps'

    variants, environments = speed_compare.variants(["float32"], ["0", "1"], "AVX2")
    assert list(variants) == [f"float32, {ENV}=0", f"float32, {ENV}=1"]
    # --train_flags: each variant once more with those flags
    with_flags, flagged_environments = speed_compare.variants(["auto"], None, None, ["--validation_freq=3"])
    assert with_flags == {"auto": speed_compare.DEFAULT_SHAPE + ["--precision", "auto"],
                          "auto --validation_freq=3": speed_compare.DEFAULT_SHAPE + ["--precision", "auto",
                                                                                     "--validation_freq=3"]}
    assert flagged_environments == {"reference": {}, "auto": {}, "auto --validation_freq=3": {}}
    assert environments == {"reference": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
                            f"float32, {ENV}=0": {"ONEDNN_MAX_CPU_ISA": "AVX2", ENV: "0"},
                            f"float32, {ENV}=1": {"ONEDNN_MAX_CPU_ISA": "AVX2", ENV: "1"}}
    # the reference's process sees its variables: it reports one of them as its time
    reference = (f"{sys.executable} -c 'import json, os; "
                 "print(json.dumps({\"total_s\": float(os.environ[\"LAYERWISE_TEST_SECONDS\"]), \"last_test_acc\": 0.5}))'")
    runs = speed_compare.compare({}, reference, repeats=1, log=lambda line: None,
                                 environments={"reference": {"LAYERWISE_TEST_SECONDS": "7.5"}})
    assert runs["reference"][0]["fit_s"] == 7.5
