"""The roofline (#26 item 1): the network's conv shapes, their FLOPs, the measured limit per stage."""

from __future__ import annotations

import json
import os

import keras
import pytest

from apps.throughput import run_case
from layerwise.analysis import roofline
from tests.conftest import run_cli


def strided_model() -> keras.Model:
    """9x9x3 -> a strided valid 3x3 conv -> a nested model with a strided same 1x3 conv."""
    inner_in = keras.Input((4, 4, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(5, (1, 3), strides=2, padding="same", name="c2")(inner_in),
                        name="inner")
    images = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(4, 3, strides=2, padding="valid", name="c1")(images)
    x = inner(x)
    return keras.Model(images, keras.layers.Dense(2)(keras.layers.Flatten()(x)), name="outer")


def test_conv_shapes_walk_nested_models_and_strided_output_sizes():
    model = strided_model()
    convs = roofline.conv_shapes(model, batch=2)
    assert [c.name for c in convs] == ["c1", "inner/c2"]
    first, second = convs[0].shape, convs[1].shape
    assert (first.height, first.width, first.in_channels, first.filters) == (9, 9, 3, 4)
    assert (first.kernel, first.strides, first.padding) == ((3, 3), (2, 2), "valid")
    # output sizes as TensorFlow computes them: valid (9 - 3) // 2 + 1 = 4, same ceil(4 / 2) = 2
    assert first.output_size() == (4, 4) == tuple(model.get_layer("c1").output.shape[1:3])
    assert second.output_size() == (2, 2) == tuple(model.get_layer("inner").get_layer("c2").output.shape[1:3])
    # by hand: 2 x N x Ho x Wo x Cout x Cin x kh x kw, and 3x that for forward + both backward passes
    assert first.forward_flops() == 2 * 2 * 4 * 4 * 4 * 3 * 3 * 3 == 6912
    assert first.train_flops() == 3 * 6912
    assert second.forward_flops() == 2 * 2 * 2 * 2 * 5 * 4 * 1 * 3
    assert roofline.ConvShape.from_dict(json.loads(json.dumps(first.to_dict()))) == first


def test_step_convs_passes_and_a_flop_weighted_limit():
    model = strided_model()
    convs = roofline.step_convs(model, frozen=model, batch=2)
    # c1 reads the images (nothing trainable before it: no input gradient), c2 follows c1;
    # the frozen prefix's convs run forward only
    assert [c["passes"] for c in convs] == [["forward", "kernel_gradient"], list(roofline.ALL_PASSES),
                                            ["forward"], ["forward"]]
    assert [c["step_flops"] for c in convs] == [2 * 6912, 3 * 960, 6912, 960]
    seconds = {roofline.conv_key(c): t for c, t in zip(convs, (4e-6, 1e-6, 3e-6, 1e-6))}
    assert roofline.step_limit(convs, seconds) == pytest.approx((3 * 6912 + 4 * 960) / 1e9 / 9e-6)
    assert roofline.step_limit([], seconds) is None
    assert roofline.stage_fraction(2.0, 0.1, 25.0) == pytest.approx(dict(achieved_gflop_per_s=20.0, fraction=0.8))


def test_time_conv_in_bfloat16():
    shape = roofline.ConvShape(batch=2, height=6, width=6, in_channels=4, filters=8, kernel=(3, 3))
    timing = roofline.time_conv(shape, "mixed_bfloat16", repeats=1)
    assert timing["dtype"] == "bfloat16" and timing["passes"] == list(roofline.ALL_PASSES)
    assert timing["flops"] == 3 * 2 * 2 * 6 * 6 * 8 * 4 * 9
    assert timing["gflop_per_s"] == pytest.approx(timing["flops"] / timing["seconds"] / 1e9)
    assert roofline.time_conv(shape, "float32", 1, ["forward"])["flops"] == 2 * 2 * 6 * 6 * 8 * 4 * 9


def test_report_of_a_tiny_network_has_every_conv_shape_and_every_stage_fraction():
    case = dict(size="tiny", shape="mnist5k", variant="no_tape", head="paper", precision="float32", batch=4, steps=2)
    report = json.loads(json.dumps(roofline.roofline_report([case], run_case, repeats=1)))
    assert report["batch"] == 4 and report["machine"]["cpu"] and "avx512_bf16" in report["machine"]["cpu_flags"]
    (part,) = report["precisions"]
    assert part["precision"] == "float32" and part["dtype"] == "float32"
    # the tiny MNIST-shaped network (width 8, downsampling at stage 1) and its k=2 heads of width 8
    expected = {(28, 28, 1, 8), (28, 28, 8, 8), (14, 14, 32, 16), (14, 14, 16, 8)}
    measured = {(r["shape"]["height"], r["shape"]["width"], r["shape"]["in_channels"], r["shape"]["filters"])
                for r in part["shapes"]}
    assert measured == expected
    assert len(part["shapes"]) == 5  # stage 0's conv also forward only, in stage 1's prefix
    for row in part["shapes"]:
        assert row["gflop_per_s"] > 0 and row["shape"]["batch"] == 4
    (head_conv,) = [r for r in part["shapes"] if r["shape"]["in_channels"] == 16]
    assert head_conv["flops"] == 3 * 2 * 4 * 14 * 14 * 8 * 16 * 3 * 3 and head_conv["layers"] == ["head_01/head_01_conv0"]
    (stage_conv,) = [r for r in part["shapes"] if r["shape"]["in_channels"] == 32]
    assert stage_conv["flops"] == 2 * 2 * 4 * 14 * 14 * 16 * 32 * 3 * 3  # its input needs no gradient
    assert stage_conv["layers"] == ["stage_01/stage_01_conv"]
    assert [s["stage"] for s in part["stages"]] == [0, 1]
    for stage in part["stages"]:
        assert stage["limit_gflop_per_s"] > 0 and stage["achieved_gflop_per_s"] > 0
        assert stage["fraction"] == pytest.approx(stage["achieved_gflop_per_s"] / stage["limit_gflop_per_s"])
    # stage 1's step: its conv and its head's forward and backward, stage 0's conv forward only
    assert part["stages"][1]["conv_gflop_per_step"] == pytest.approx(
        (2 * 4 * 14 * 14 * 9 * (2 * 16 * 32 + 3 * 8 * 16) + 2 * 4 * 28 * 28 * 8 * 1 * 9) / 1e9)
    table = roofline.markdown(report)
    assert report["machine"]["cpu"] in table and "fraction of limit" in table


@pytest.mark.slow
def test_bench_roofline_command_writes_json_and_markdown(tmp_path):
    out = str(tmp_path / "roofline")
    proc = run_cli("apps.bench", "--roofline", "--size", "tiny", "--repeats", "1", "--roofline_batch", "4",
                   "--precisions", "float32", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(os.path.join(out, "roofline.json")) as f:
        report = json.load(f)
    assert report["batch"] == 4 and [p["precision"] for p in report["precisions"]] == ["float32"]
    with open(os.path.join(out, "roofline.md")) as f:
        assert report["machine"]["cpu"] in f.read()
