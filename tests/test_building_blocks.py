import keras
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


def _adaptive_average(x: np.ndarray, out: int) -> np.ndarray:
    """PyTorch's AdaptiveAvgPool2d: output cell i averages rows floor(i H / out) .. ceil((i + 1) H / out)."""
    h, w = x.shape[1:3]
    rows = [(i * h // out, -(-(i + 1) * h // out)) for i in range(out)]
    cols = [(i * w // out, -(-(i + 1) * w // out)) for i in range(out)]
    return np.stack([np.stack([x[:, r0:r1, c0:c1].mean(axis=(1, 2)) for c0, c1 in cols], 1) for r0, r1 in rows], 1)


def _conv3x3_same(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    h, w = x.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return sum(padded[:, i : i + h, j : j + w, :] @ kernel[i, j] for i in range(3) for j in range(3))


def _aux_head_by_hand(head, x: np.ndarray, k: int) -> np.ndarray:
    """The paper's C = L o [BN] o A o (ReLU o BN o W~)^(k-1) in NumPy, from the head's weights."""
    convs = [layer.get_weights()[0] for layer in head.layers if isinstance(layer, keras.layers.Conv2D)]
    norms = [layer for layer in head.layers if isinstance(layer, keras.layers.BatchNormalization)]
    (dense,) = [layer for layer in head.layers if isinstance(layer, keras.layers.Dense)]

    def batchnorm(x, layer):
        gamma, beta, mean, variance = layer.get_weights()
        return (x - mean) / np.sqrt(variance + layer.epsilon) * gamma + beta

    assert len(convs) == k - 1 and len(norms) == (k if k > 1 else 0)
    for kernel, norm in zip(convs, norms):
        x = np.maximum(batchnorm(_conv3x3_same(x, kernel), norm), 0.0)
    x = _adaptive_average(x, min(2, x.shape[1])).reshape(len(x), -1)
    if k > 1:
        x = batchnorm(x, norms[-1])
    kernel, bias = dense.get_weights()
    return x @ kernel + bias


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("size", [1, 2, 7, 8, 14])
def test_aux_head_shapes(k, size):
    if k > 1 and size == 1:  # a 3x3 conv on a 1x1 map: refused with a clear error
        with pytest.raises(ConfigError, match="features are 1x1"):
            build_aux_head((size, size, 6), 10, AuxHead(k=k, width=4))
        return
    head = build_aux_head((size, size, 6), 10, AuxHead(k=k, width=4))
    rng = np.random.default_rng(size * 10 + k)
    for layer in head.layers:  # BatchNorm away from the identity, so that its place matters
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()])
    x = rng.normal(size=(3, size, size, 6)).astype(np.float32)
    out = np.asarray(head(x, training=False))
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, _aux_head_by_hand(head, x.astype(np.float64), k), rtol=1e-4, atol=1e-5)
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
