import numpy as np
import pytest

from layerwise.training.downsampling import SpaceToDepth, depth_to_space
from layerwise.errors import ConfigError
from layerwise.training.heads import AuxHead, build_aux_head
from models import build_model


def test_space_to_depth_is_invertible():
    x = np.random.default_rng(0).normal(size=(2, 8, 6, 3)).astype(np.float32)
    y = SpaceToDepth(2)(x)
    assert y.shape == (2, 4, 3, 12)
    np.testing.assert_array_equal(depth_to_space(y, 2).numpy(), x)


def test_space_to_depth_config_round_trip():
    layer = SpaceToDepth(2, name="p")
    clone = SpaceToDepth.from_config(layer.get_config())
    assert clone.block_size == 2 and clone.name == "p"


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 2, 7, 8, 14])
def test_aux_head_shapes(k, size):
    if k > 1 and size == 1:  # a 3x3 conv on a 1x1 map: refused with a clear error
        with pytest.raises(ConfigError, match="features are 1x1"):
            build_aux_head((size, size, 6), 10, AuxHead(k=k, width=4))
        return
    head = build_aux_head((size, size, 6), 10, AuxHead(k=k, width=4))
    out = head(np.zeros((3, size, size, 6), np.float32))
    assert out.shape == (3, 10)
    convs = [layer for layer in head.layers if layer.name.startswith("aux_head_conv")]
    assert len(convs) == k - 1
    pooled = head.get_layer("aux_head_avg").output.shape
    assert pooled[1:3] == (min(2, size), min(2, size))


@pytest.mark.parametrize("size, factor, conv_size", [(112, 4, 28), (14, 4, 4), (7, 4, 2), (8, 1, 8)])
def test_aux_head_pre_pool_runs_the_convs_smaller(size, factor, conv_size):
    spec = AuxHead(k=2, width=4, pre_pool=factor)
    head = build_aux_head((size, size, 3), 10, spec)
    assert head.get_layer("aux_head_conv0").output.shape[1:3] == (conv_size, conv_size)
    assert head(np.ones((2, size, size, 3), np.float32)).shape == (2, 10)
    # pre-pooling is a parameter-free average
    assert head.count_params() == build_aux_head((size, size, 3), 10, AuxHead(k=2, width=4)).count_params()


def test_aux_head_rejects_negative_depth():
    with pytest.raises(ConfigError, match="k - 1"):
        build_aux_head((4, 4, 2), 10, AuxHead(k=0))


def test_layerwise_cnn_stage_shapes_and_composition():
    net = build_model("layerwise_cnn", (28, 28, 1), 10, num_stages=3, width=4, downsample_at=[1, 2])
    assert [net.output_shape(j) for j in range(3)] == [(28, 28, 4), (14, 14, 8), (7, 7, 16)]
    x = np.random.default_rng(1).normal(size=(2, 28, 28, 1)).astype(np.float32)
    by_hand = x
    for stage in net.stages:
        by_hand = stage(by_hand)
    np.testing.assert_allclose(net.compose()(x), by_hand, rtol=1e-6)
    np.testing.assert_allclose(net.prefix(2)(x), net.stages[1](net.stages[0](x)), rtol=1e-6)


def test_layerwise_cnn_downsample_input_like_imagenet():
    net = build_model("layerwise_cnn", (32, 32, 3), 10, num_stages=2, width=4, downsample_at=[1], downsample_input=True)
    assert net.output_shape(0) == (16, 16, 4) and net.output_shape(1) == (8, 8, 8)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"downsample_at": [1, 2, 3], "num_stages": 4}, "divisible by 8"),
        ({"downsample_at": [5]}, "must be in 1..2"),
        ({"num_stages": 0}, "num_stages must be positive"),
        ({"width": -1}, "width must be positive"),
        ({"depth": 3}, "does not take option"),
    ],
)
def test_layerwise_cnn_bad_options(options, message):
    with pytest.raises(ConfigError, match=message):
        build_model("layerwise_cnn", (12, 12, 1), 10, **options)
