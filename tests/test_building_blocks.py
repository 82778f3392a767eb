import keras
import numpy as np
import pytest
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.nn.downsampling import SpaceToDepth, depth_to_space
from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.nn.layers import (
    BlockAveragePooling2D,
    FusedBatchNormalization,
    average_pool_to,
)
from layerwise.precision import dtype_policy
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


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_fused_batchnorm_trains_exactly_like_keras_batchnorm(precision):
    """Same outputs, gradients and moving statistics as keras.layers.BatchNormalization in a
    training step, and the same inference outputs (to the precision's rounding); both through
    the fused kernel."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(2.0, 3.0, size=(8, 5, 5, 6)).astype(np.float32))
    upstream = tf.constant(rng.normal(size=(8, 5, 5, 6)).astype(np.float32))
    results = []
    with dtype_policy(precision):
        for layer in (keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)):
            layer.build(x.shape)
            layer.set_weights([np.linspace(0.5, 1.5, 6), np.linspace(-1, 1, 6), np.zeros(6), np.ones(6)])
            inputs = tf.cast(x, layer.compute_dtype)
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                y = layer(inputs, training=True)
                loss = tf.reduce_sum(tf.cast(y, tf.float32) * upstream)
            grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
            results.append([y, *grads, layer.moving_mean, layer.moving_variance, layer(inputs, training=False)])
    tol = {"rtol": 2e-2, "atol": 2e-2} if precision == "mixed_bfloat16" else {"rtol": 1e-4, "atol": 1e-4}
    names = ["output", "d input", "d gamma", "d beta", "moving mean", "moving variance", "inference"]
    for name, keras_value, fused_value in zip(names, *results):
        np.testing.assert_allclose(np.asarray(tf.cast(fused_value, tf.float32)),
                                   np.asarray(tf.cast(keras_value, tf.float32)), err_msg=name, **tol)
    assert results[1][0].dtype == results[0][0].dtype
    for training in (True, False):
        traced = tf.function(lambda t: layer(t, training=training)).get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
        assert "FusedBatchNormV3" in {op.type for op in traced.graph.get_operations()}  # the kernel, not a fallback
    # the moving variance tracks the biased batch variance (Keras's), not the kernel's Bessel-corrected one
    expected = 0.9 + 0.1 * x.numpy().var(axis=(0, 1, 2))
    np.testing.assert_allclose(results[1][5].numpy(), expected, rtol=1e-5 if precision == "float32" else 2e-2)


def test_frozen_fused_batchnorm_runs_in_inference_mode_and_round_trips():
    layer = FusedBatchNormalization(momentum=0.9, name="bn")
    x = np.random.default_rng(1).normal(size=(4, 3, 3, 2)).astype(np.float32)
    layer(x, training=True)
    layer.trainable = False
    before = [w.copy() for w in layer.get_weights()]
    np.testing.assert_array_equal(layer(x, training=True).numpy(), layer(x, training=False).numpy())
    for b, a in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is FusedBatchNormalization and clone.momentum == 0.9


def test_stages_and_heads_pass_mixed_precision_features_without_a_float32_round_trip():
    """Under mixed_bfloat16 a stage's bfloat16 features enter the next stage and the head as
    they are: no Cast of a feature map anywhere in a training step (only the 1-channel image is cast)."""
    with dtype_policy("mixed_bfloat16"):
        net = build_model("layerwise_cnn", (12, 12, 1), 10, num_stages=2, width=8, downsample_at=[1])
        head = build_aux_head(net.output_shape(1), 10, AuxHead(k=2, width=8))
        assert [s.inputs[0].dtype for s in net.stages] == ["bfloat16", "bfloat16"]
        assert head.inputs[0].dtype == "bfloat16"
        images = keras.Input((12, 12, 1))
        model = keras.Model(images, head(net.stages[1](net.stages[0](images))))

        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(x, training=True))
            return tape.gradient(loss, model.trainable_variables)

        graph = step.get_concrete_function(tf.TensorSpec((4, 12, 12, 1), tf.float32)).graph
    feature_casts = [op.name for op in graph.get_operations() if op.type == "Cast"
                     and op.outputs[0].shape.rank == 4 and op.outputs[0].shape[0] == 4  # a batch, not a kernel
                     and op.outputs[0].shape[-1] > 1]
    assert feature_casts == []


@pytest.mark.parametrize("size,out", [(28, 2), (14, 7), (6, 3)])
def test_block_average_pooling_equals_adaptive_average(size, out):
    x = np.random.default_rng(2).normal(size=(3, size, size, 4)).astype(np.float32)
    np.testing.assert_allclose(BlockAveragePooling2D(out)(x).numpy(), _adaptive_average(x, out), rtol=1e-5, atol=1e-6)
    assert isinstance(average_pool_to(out, (size, size), "a"), BlockAveragePooling2D)
    assert isinstance(average_pool_to(2, (7, 7), "b"), keras.layers.AdaptiveAveragePooling2D)
