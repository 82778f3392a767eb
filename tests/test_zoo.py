"""The model zoo: every registered model builds, runs, composes; published sizes are pinned.

Registering a model puts it under ``test_every_registered_model`` automatically; give it a tiny
configuration in ``tiny_config`` if the default (32 x 32, default options) is slow. The extra
pinned counts (VGG-13/19, VGG-16-BN, ResNet-34/101/152) build 22-144M-parameter models: they are
marked ``slow`` (skip them with ``-m 'not slow'``).
"""

from __future__ import annotations


import keras
import numpy as np
import pytest
import tensorflow as tf

import model_checks as checks
from layerwise.errors import ConfigError
from models import MODELS, build_model
from models.alexnet import LocalResponseNormalization
from models.local_vgg import LOCAL_VGG_VARIANTS
from models.resnet import CIFAR_DEPTHS, IMAGENET_VARIANTS, ZeroPadShortcut

CIFAR_NETS = {f"{kind}{d}" for kind in ("resnet", "plain") for d in CIFAR_DEPTHS}
IMAGENET_NETS = {f"{kind}{d}" for kind in ("resnet", "plain") for d in IMAGENET_VARIANTS}


def tiny_config(name: str) -> tuple[tuple[int, int, int], dict]:
    """A small input and narrow options that keep the model's structure (depth, strides)."""
    if name == "layerwise_cnn":
        return (16, 16, 3), dict(num_stages=3, width=4)
    if name == "alexnet":  # the paper's 227 geometry, 8 filters per conv
        return (227, 227, 3), dict(conv_widths=(8, 8, 8, 8, 8), head_units=(8, 8))
    if name == "alexnet_cifar":
        return (32, 32, 3), dict(conv_widths=(8, 8, 8, 8, 8), head_units=(8, 8))
    if name in LOCAL_VGG_VARIANTS:  # 4-16 filters per conv
        return (32, 32, 3), dict(width_multiplier=1 / 32, hidden_units=8)
    if name.startswith("vgg"):
        return (32, 32, 3), dict(widths=(4, 4, 8, 8, 8), head_units=(8, 8))
    if name in IMAGENET_NETS:
        return (32, 32, 3), dict(width=4)
    return (32, 32, 3), {}  # CIFAR ResNets are small: they are tested as published


def tiny(name: str, num_classes: int = 10, **overrides):
    shape, options = tiny_config(name)
    return build_model(name, shape, num_classes, **{**options, **overrides})


def _rounded(count: int, quoted: str) -> str:
    decimals = len(quoted[:-1].partition(".")[2])
    return f"{count / 1e6:.{decimals}f}M"


# Trainable parameters of the CIFAR ResNets at 10 classes (He et al. 2016, Table 6: 0.27M, 0.46M,
# 0.66M, 0.85M, 1.7M). Their plain nets have the same count: option A adds no parameters.
PINNED_CIFAR = {
    8: (75_290, "0.075M"),  # not in the paper
    20: (269_722, "0.27M"),
    32: (464_154, "0.46M"),
    44: (658_586, "0.66M"),
    56: (853_018, "0.85M"),
    110: (1_727_962, "1.7M"),
}


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model(name):
    net = tiny(name)
    assert net.name == name and net.num_stages >= 1
    checks.check_stage_chain(net)
    checks.check_compose_matches_by_hand(net)
    for layer in checks.custom_layers(net.stages):
        checks.check_config_round_trip(layer)
    if name in CIFAR_NETS:
        count, quoted = PINNED_CIFAR[int(name.removeprefix("resnet").removeprefix("plain"))]
        assert _rounded(count, quoted) == quoted
        assert checks.trainable_count(checks.full_model(net)) == count


@pytest.mark.parametrize(
    "name, options",
    [
        ("layerwise_cnn", dict(num_stages=2, width=4, downsample_at=(1,))),
        ("alexnet_cifar", dict(conv_widths=(4, 4, 4, 4, 4), head_units=(4,), groups=1)),
        (
            "vgg11_bn",
            dict(
                widths=(4, 4, 4, 4, 4),
                head_units=(4,),
                stage_granularity="conv",
                fold_pooling=True,
                pooled_size=None,
            ),
        ),
        ("resnet20", dict(width=4, shortcut="C", stage_granularity="group")),
        ("plain18", dict(width=4, stride_in_3x3=True)),
    ],
)
def test_recorded_options_rebuild_the_same_network(name, options):
    net = build_model(name, (32, 32, 3), 10, **options)
    again = build_model(net.name, net.input_shape, net.num_classes, **net.options)
    assert again.options == net.options
    assert [again.output_shape(j) for j in range(again.num_stages)] == [
        net.output_shape(j) for j in range(net.num_stages)
    ]
    assert checks.trainable_count(checks.full_model(again)) == checks.trainable_count(
        checks.full_model(net)
    )


# Trainable parameters of the published ImageNet networks (torchvision's counts for VGG and
# ResNet with option B; the 2012 two-GPU AlexNet), with the rounded figure usually quoted.
PINNED = {
    "alexnet": ((227, 227, 3), 1000, 60_965_224, "61M"),
    "vgg11": ((224, 224, 3), 1000, 132_863_336, "133M"),
    "vgg16": ((224, 224, 3), 1000, 138_357_544, "138M"),
    "resnet18": ((224, 224, 3), 1000, 11_689_512, "11.7M"),
    "resnet50": ((224, 224, 3), 1000, 25_557_032, "25.6M"),
    # Nøkland & Eidnes (2019), CIFAR-10: 6 convs, FC 1024, output layer
    "vgg8b": ((32, 32, 3), 10, 8_900_234, "8.9M"),
}
PINNED_SLOW = {
    "vgg13": ((224, 224, 3), 1000, 133_047_848, "133M"),
    "vgg19": ((224, 224, 3), 1000, 143_667_240, "144M"),
    "vgg16_bn": ((224, 224, 3), 1000, 138_365_992, "138M"),
    "resnet34": ((224, 224, 3), 1000, 21_797_672, "21.8M"),
    "resnet101": ((224, 224, 3), 1000, 44_549_160, "44.5M"),
    "resnet152": ((224, 224, 3), 1000, 60_192_808, "60.2M"),
}


slow = [
    pytest.mark.slow,
]


@pytest.mark.parametrize("name", list(PINNED) + [pytest.param(n, marks=slow) for n in PINNED_SLOW])
def test_published_parameter_counts(name):
    shape, num_classes, count, quoted = {**PINNED, **PINNED_SLOW}[name]
    assert _rounded(count, quoted) == quoted
    model = checks.full_model(build_model(name, shape, num_classes))
    assert checks.trainable_count(model) == count


def _option_a_by_hand(x: np.ndarray, stride: int, channels: int) -> np.ndarray:
    """He et al. (2016), Sec. 3.3, option A written out: subsample by the stride, then append
    zero channels up to ``channels`` (identity when neither changes)."""
    subsampled = x[:, ::stride, ::stride, :]
    zeros = np.zeros((*subsampled.shape[:3], channels - subsampled.shape[-1]), x.dtype)
    return np.concatenate([subsampled, zeros], axis=-1)


@pytest.mark.parametrize("depth", [20, 50])
def test_option_a_adds_no_parameters_to_the_plain_net(depth):
    counts = {
        kind: checks.trainable_count(checks.full_model(tiny(f"{kind}{depth}", shortcut="A")))
        for kind in ("resnet", "plain")
    }
    assert counts["resnet"] == counts["plain"]
    b = checks.trainable_count(checks.full_model(tiny(f"resnet{depth}", shortcut="B")))
    c = checks.trainable_count(checks.full_model(tiny(f"resnet{depth}", shortcut="C")))
    assert counts["resnet"] < b < c  # B projects where shapes change, C everywhere
    # ... and yet every block adds its parameter-free shortcut: the second input of each block's
    # addition is the block's input, subsampled and zero-padded where the shape changes
    net = tiny(f"resnet{depth}", shortcut="A")
    rng = np.random.default_rng(depth)
    changed = 0
    for stage in net.stages[1:]:
        (add,) = [layer for layer in stage.layers if isinstance(layer, keras.layers.Add)]
        branch, skip = add.input
        probe = keras.Model(stage.input, [branch, skip, add.output])
        x = rng.normal(size=(2, *stage.inputs[0].shape[1:])).astype("float32")
        f, s, total = [np.asarray(t) for t in probe(x, training=False)]
        expected = _option_a_by_hand(x, x.shape[1] // total.shape[1], total.shape[-1])
        np.testing.assert_array_equal(s, expected, err_msg=stage.name)
        np.testing.assert_allclose(total, f + s, rtol=1e-6, atol=1e-6, err_msg=stage.name)
        changed += expected.shape != x.shape
    assert 0 < changed < net.num_stages - 1  # both kinds of block were checked


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("block", [1, 2], ids=["identity", "downsampling"])
def test_option_a_block_with_zeroed_residual_branch_is_relu_of_the_shortcut(block, training):
    # resnet8: stage 1 is conv2_1 (4 -> 4 channels, stride 1), stage 2 conv3_1 (4 -> 8, stride 2)
    net = build_model("resnet8", (8, 8, 3), 10, width=4, shortcut="A")
    stage = net.stages[block]
    last_bn = stage.get_layer(f"conv{block + 1}_1_bn2")  # the residual branch F ends here
    last_bn.gamma.assign(np.zeros(last_bn.gamma.shape, "float32"))
    last_bn.beta.assign(np.zeros(last_bn.beta.shape, "float32"))
    x = np.random.default_rng(block).normal(size=(2, *stage.inputs[0].shape[1:])).astype("float32")
    y = np.asarray(stage(x, training=training))
    stride, channels = (1, 4) if block == 1 else (2, 8)
    assert y.shape == (2, 8 // stride, 8 // stride, channels)
    np.testing.assert_array_equal(y, np.maximum(_option_a_by_hand(x, stride, channels), 0.0))


def test_option_a_shortcut_subsamples_and_zero_pads():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    y = np.asarray(ZeroPadShortcut(2, 8)(x))
    assert y.shape == (2, 3, 3, 8)
    np.testing.assert_array_equal(y[..., :3], x[:, ::2, ::2, :])
    np.testing.assert_array_equal(y[..., 3:], 0.0)
    assert ZeroPadShortcut(2, 8).compute_output_shape((None, 5, 5, 3)) == (None, 3, 3, 8)


def _paper_lrn(a: np.ndarray, n=5, k=2.0, alpha=1e-4, beta=0.75) -> np.ndarray:
    """Krizhevsky et al. (2012), Sec. 3.3, written out: sum over n adjacent maps, alpha as is."""
    channels = a.shape[-1]
    out = np.empty_like(a, dtype=np.float64)
    for i in range(channels):
        lo, hi = max(0, i - n // 2), min(channels - 1, i + n // 2)
        out[..., i] = a[..., i] / (k + alpha * np.sum(a[..., lo : hi + 1] ** 2, axis=-1)) ** beta
    return out


def test_lrn_matches_tf_and_the_paper_formula():
    # activations ~50 make alpha * sum(a^2) ~ 1, comparable to k = 2: the normalization matters
    a = np.random.default_rng(0).normal(scale=50.0, size=(2, 3, 3, 12)).astype("float32")
    layer = LocalResponseNormalization()
    assert (layer.depth_radius, layer.bias, layer.alpha, layer.beta) == (2, 2.0, 1e-4, 0.75)
    ours = np.asarray(layer(a))
    tf_lrn = tf.nn.local_response_normalization(a, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    np.testing.assert_allclose(ours, np.asarray(tf_lrn), rtol=1e-6)
    np.testing.assert_allclose(ours, _paper_lrn(a.astype(np.float64)), rtol=1e-5)
    assert not np.allclose(ours, a / 2.0**0.75, rtol=1e-2)  # the neighbour sum is not negligible


def test_lrn_under_mixed_precision_keeps_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        net = tiny("alexnet_cifar")
        logits = checks.full_model(net)(np.ones((1, 32, 32, 3), "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == "float32" and np.all(np.isfinite(np.asarray(logits)))


def test_alexnet_convs_are_grouped():
    net = build_model("alexnet", (227, 227, 3), 10, head_units=(8, 8))
    ungrouped = build_model("alexnet", (227, 227, 3), 10, head_units=(8, 8), groups=1)
    convs = {
        n: net.stages[j].get_layer(n)
        for j, n in enumerate(["conv1", "conv2", "conv3", "conv4", "conv5"])
    }
    single = {n: ungrouped.stages[j].get_layer(n) for j, n in enumerate(convs)}
    # conv2: 5 x 5 x 48 x 256 (+256): each filter sees 48 of conv1's 96 maps
    assert tuple(convs["conv2"].kernel.shape) == (5, 5, 48, 256)
    assert convs["conv2"].count_params() == 5 * 5 * 48 * 256 + 256 == 307_456
    assert tuple(convs["conv3"].kernel.shape) == (3, 3, 256, 384)  # conv3 sees all maps
    for n in ("conv2", "conv4", "conv5"):
        kernel_params = convs[n].count_params() - convs[n].filters
        assert 2 * kernel_params == single[n].count_params() - single[n].filters
    for n in ("conv1", "conv3"):
        assert convs[n].count_params() == single[n].count_params()
    # Behaviour: the first half of conv2's outputs ignores the second half of its inputs.
    conv2 = convs["conv2"]
    x = np.random.default_rng(0).normal(size=(1, 27, 27, 96)).astype("float32")
    x2 = x.copy()
    x2[..., 48:] += 1.0
    y, y2 = np.asarray(conv2(x)), np.asarray(conv2(x2))
    np.testing.assert_allclose(y[..., :128], y2[..., :128], rtol=1e-5, atol=1e-5)
    assert not np.allclose(y[..., 128:], y2[..., 128:])


def test_alexnet_geometry_and_paper_init():
    net = build_model("alexnet", (227, 227, 3), 1000, head_units=(8, 8))
    assert [net.output_shape(j) for j in range(5)] == [
        (27, 27, 96),
        (13, 13, 256),
        (13, 13, 384),
        (13, 13, 384),
        (6, 6, 256),
    ]
    biases = {j + 1: float(np.mean(net.stages[j].get_layer(f"conv{j + 1}").bias)) for j in range(5)}
    assert biases == {1: 0.0, 2: 1.0, 3: 0.0, 4: 1.0, 5: 1.0}
    kernel = np.asarray(net.stages[2].get_layer("conv3").kernel)
    assert abs(kernel.std() - 0.01) < 1e-3
    head = net.final_head((6, 6, 256), 1000)
    assert [
        float(np.mean(head.get_layer(n).bias))
        for n in ("final_head_fc0", "final_head_fc1", "final_head_logits")
    ] == [1.0, 1.0, 0.0]
    assert head.get_layer("final_head_logits").dtype_policy.name == "float32"
    cifar = tiny("alexnet_cifar")
    assert [cifar.output_shape(j)[:2] for j in (0, 1, 4)] == [(15, 15), (7, 7), (3, 3)]


def test_vgg11_layerwise_stages_fold_pooling():
    """Belilovsky et al. Sec. 4.2: 8 stages, one per conv, pooling at the start of the next."""
    options = dict(widths=(4, 4, 8, 8, 8), head_units=(8, 8))
    folded = build_model(
        "vgg11", (64, 64, 3), 5, stage_granularity="conv", fold_pooling=True, **options
    )
    plain = build_model("vgg11", (64, 64, 3), 5, **options)
    assert folded.num_stages == 8 and plain.num_stages == 5
    assert [folded.output_shape(j)[:2] for j in range(8)] == [
        (64, 64),
        (32, 32),
        (16, 16),
        (16, 16),
        (8, 8),
        (8, 8),
        (4, 4),
        (4, 4),
    ]
    assert folded.stages[1].layers[1].name == "block1_pool"  # the pooling opens stage 1
    assert [plain.output_shape(j)[:2] for j in range(5)] == [
        (32, 32),
        (16, 16),
        (8, 8),
        (4, 4),
        (2, 2),
    ]
    # Same network either way: same parameters, and the last pooling opens the final head.
    count = checks.trainable_count
    assert count(checks.full_model(folded)) == count(checks.full_model(plain))
    assert checks.full_model(folded).output.shape == (None, 5)


def test_local_loss_vgg_layout():
    """Nøkland & Eidnes' VGG8b: one stage per layer, each pooling at the start of the next stage (the
    local loss sees the conv's full resolution), the FC layer the last stage, the width multiplier."""
    net = tiny("vgg8b", width_multiplier=1 / 32, hidden_units=8)
    assert [net.output_shape(j) for j in range(net.num_stages)] == [
        (32, 32, 4), (32, 32, 8), (16, 16, 8), (16, 16, 16), (8, 8, 16), (4, 4, 16), (8,)]
    assert isinstance(net.stages[2].layers[1], keras.layers.MaxPooling2D)
    wide = build_model("vgg11b", (32, 32, 3), 10, width_multiplier=3 / 32, hidden_units=8)
    assert wide.num_stages == 10 and wide.output_shape(0) == (32, 32, 12) and wide.output_shape(8) == (4, 4, 48)


def test_resnet_stage_granularity_and_response_layer_names():
    by_block = tiny("resnet18")
    by_group = tiny("resnet18", stage_granularity="group")
    assert by_block.num_stages == 1 + 8 and by_group.num_stages == 1 + 4
    assert by_block.output_shape(8) == by_group.output_shape(4)
    count = checks.trainable_count
    assert count(checks.full_model(by_block)) == count(checks.full_model(by_group))
    assert tiny("resnet20").num_stages == 1 + 9
    assert tiny("resnet20", stage_granularity="group").num_stages == 1 + 3
    # each 3x3 conv's BN output (after BN, before add/ReLU) is reachable by name
    block = by_block.stages[3]  # conv3_1: the downsampling block
    for layer_name in (
        "conv3_1_conv1",
        "conv3_1_bn1",
        "conv3_1_bn2",
        "conv3_1_add",
        "conv3_1_proj_conv",
        "conv3_1_out",
    ):
        block.get_layer(layer_name)
    bottleneck = tiny("resnet50").stages[1]
    assert bottleneck.get_layer("conv2_1_conv2").kernel_size == (3, 3)
    assert bottleneck.get_layer("conv2_1_bn3") is not None
    plain_block = tiny("plain20").stages[4]
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain_block.layers)


@pytest.mark.parametrize(
    "name, shape, options",
    [
        ("alexnet", (66, 66, 3), {}),
        ("alexnet", (227, 227, 3), dict(conv_widths=(96, 256, 384, 384, 255))),
        ("alexnet", (227, 227, 3), dict(conv_widths=(96, 256))),
        ("vgg11", (16, 16, 3), {}),
        ("vgg11", (32, 32, 3), dict(pooled_size=0)),
        ("vgg11", (32, 32, 3), dict(stage_granularity="layer")),
        ("resnet20", (32, 32, 3), dict(shortcut="D")),
        ("resnet18", (32, 32, 3), dict(stage_granularity="conv")),
        ("resnet20", (32, 32, 3), dict(width=0)),
        ("vgg8b", (8, 8, 3), {}),
        ("vgg11b", (32, 32, 3), dict(activation="tanh")),
    ],
)
def test_impossible_options_raise_config_error(name, shape, options):
    with pytest.raises(ConfigError):
        build_model(name, shape, 10, **options)
