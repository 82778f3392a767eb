"""Optimisation-algorithm-inspired CNNs (Li, Yang, Chen & Lin, ACML 2018): ResNet relaxations.

Relaxing the linear map and the prox of an unrolled algorithm (``models.unrolled``) to a
CIFAR-ResNet basic branch F_k = conv3x3-BN-ReLU-conv3x3-BN gives one block per iteration:

    GD   (ResNet)      x_{k+1} = x_k + F_k(x_k)
    HB   (HBResNet)    x_{k+1} = x_k + F_k(x_k) + beta_k (x_k - x_{k-1})
    AGD  (AGDResNet)   z_k = x_k + beta_k (x_k - x_{k-1});  x_{k+1} = z_k + F_k(z_k)
    AGD2 (DenseAGD)    z_k = (1-theta_k) x_k + theta_k v_k;  v_{k+1} = v_k + F_k(z_k);
                       x_{k+1} = (1-theta_k) x_k + theta_k v_{k+1}
                       (unrolled, z_k and x_k are weighted sums of *all* v_1..v_k: dense
                       connectivity; see ``models.unrolled.AGD2Net`` for the derivation)
    ADMM (ADMMResNet)  x_{k+1} = d_k + F_k(d_k),  d_k = z_k - u_k;  z_{k+1} = ReLU(x_{k+1} + u_k);
                       u_{k+1} = u_k + g_k (x_{k+1} - z_{k+1})        (primal and dual branches)

With beta = 0 fixed, HB and AGD blocks compute exactly the GD (ResNet) block; ADMM with g = 0
and u_0 = 0 is the post-activation ResNet ReLU(x + F(x)).

Downsampling blocks (first block of groups 2 and 3, stride 2, width doubled) use ResNet's
option A shortcut P (subsample by 2, zero-pad channels: parameter free and linear) on *every*
carried tensor, so x_{k-1} (or v_k, u_k) crosses the downsampling as P(x_{k-1}), and the
momentum term becomes beta (P x_k - P x_{k-1}) = P(beta (x_k - x_{k-1})).

Stages carry pairs: ``[x_k, x_{k-1}]`` (GD/HB/AGD), ``[x_k, v_k]`` (AGD2), ``[z_k, u_k]`` (ADMM);
the first is the primary tensor that heads read. Stage 0 takes the image (stem conv3x3-BN-ReLU,
width w) and outputs the pair ``[x_0, x_0]`` (``[x_0, 0]`` for ADMM). By default each group
of n blocks is one stage (3 stages); ``blocks_per_stage`` changes that.

Registry names: ``{gd,hb,agd,denseagd,admm}resnet{8,14,20,32,44,56,110}`` (depth 6n+2; 8 and
14 are the tiny MNIST-sized variants; ``width`` scales 16-32-64).
"""

from __future__ import annotations

import functools

from typing import Sequence

import keras
import tensorflow as tf

from layerwise.nn.heads import BN_MOMENTUM
from layerwise.nn.layers import FusedBatchNormalization, features_input
import models.proximal as proximal
from layerwise.errors import ConfigError
from layerwise.nn.network import StagedNetwork
from models.zoo import MODELS

FAMILIES = {"gd": "gdresnet", "hb": "hbresnet", "agd": "agdresnet", "agd2": "denseagdresnet",
            "admm": "admmresnet"}
DEPTHS = (8, 14, 20, 32, 44, 56, 110)


@keras.saving.register_keras_serializable(package="layerwise")
class ScalarCoefficient(keras.layers.Layer):
    """A learned (or fixed) scalar c and one of the algorithms' scalar combinations.

    ``mode``: ``"momentum"`` [s, a, b] -> s + c (a - b);  ``"extrapolate"`` [a, b] -> a + c (a - b);
    ``"convex"`` [a, b] -> (1 - c) a + c b;  ``"dual"`` [u, a, b] -> u + c (a - b).
    """

    MODES = ("momentum", "extrapolate", "convex", "dual")

    def __init__(self, mode: str, init: float = 0.0, learn: bool = True, **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ConfigError(f"unknown coefficient mode {mode!r}")
        self.mode, self.init, self.learn = mode, float(init), bool(learn)
        self.coefficient = self.add_weight(
            name="coefficient", shape=(), initializer=keras.initializers.Constant(self.init),
            trainable=self.learn)

    def call(self, inputs):
        c = tf.cast(self.coefficient, inputs[0].dtype)
        if self.mode == "momentum":
            s, a, b = inputs
            return s + c * (a - b)
        if self.mode == "extrapolate":
            a, b = inputs
            return a + c * (a - b)
        if self.mode == "convex":
            a, b = inputs
            return (1.0 - c) * a + c * b
        u, a, b = inputs
        return u + c * (a - b)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "init": self.init, "learn": self.learn}


@keras.saving.register_keras_serializable(package="layerwise")
class ShortcutA(keras.layers.Layer):
    """ResNet option A: stride-2 subsampling and zero channel padding to ``channels``."""

    def __init__(self, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.channels = channels

    def call(self, x):
        x = x[:, ::2, ::2, :]
        extra = self.channels - x.shape[-1]
        return tf.pad(x, [[0, 0], [0, 0], [0, 0], [extra // 2, extra - extra // 2]])

    def compute_output_shape(self, s):
        half = lambda d: None if d is None else (d + 1) // 2  # noqa: E731
        return (s[0], half(s[1]), half(s[2]), self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels}


@keras.saving.register_keras_serializable(package="layerwise")
class ZerosLike(keras.layers.Layer):
    """u_0 = 0 for the ADMM net's dual branch."""

    def call(self, x):
        return tf.zeros_like(x)


def residual_branch(x, width: int, stride: int, name: str):
    """F_k = conv3x3(stride)-BN-ReLU-conv3x3-BN (CIFAR ResNet basic block, no final ReLU)."""
    y = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv1")(x)
    y = FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn1")(y)
    y = keras.layers.ReLU(name=f"{name}_relu1")(y)
    y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    return FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn2")(y)


def optnet_block(family: str, pair, width: int, stride: int, k: int, coefficient: float,
                 learn: bool, post_activation: bool = False):
    """One block (iteration k) of ``family`` on the carried pair; returns the next pair.

    Args:
        family: gd, hb, agd, agd2 or admm.
        pair: the carried pair (see the module docstring).
        width: output channels; stride: 1, or 2 for a downsampling block.
        k: global block index (names the layers).
        coefficient: initial beta_k (hb, agd), theta_k (agd2) or dual step g_k (admm).
        learn: train the coefficient.
        post_activation: ReLU after the sum (classic ResNet); the GD/HB/AGD forms above have none.
    """
    name = f"block_{k:02d}"
    a, b = pair
    if stride == 1 and a.shape[-1] == width:
        project = lambda t, _: t  # noqa: E731
    else:
        shortcut = ShortcutA(width, name=f"{name}_shortcut")
        project = lambda t, _: shortcut(t)  # noqa: E731
    coef = None if family == "gd" else {
        "hb": "momentum", "agd": "extrapolate", "agd2": "convex", "admm": "dual"}[family]
    coef = coef and ScalarCoefficient(coef, coefficient, learn, name=f"{name}_{coef}")
    act = (lambda t: keras.layers.ReLU(name=f"{name}_relu_out")(t)) if post_activation else (lambda t: t)

    if family in ("gd", "hb"):  # a = x_k, b = x_{k-1}
        px = project(a, 0)
        out = keras.layers.Add(name=f"{name}_add")([px, residual_branch(a, width, stride, name)])
        if family == "hb":
            out = coef([out, px, project(b, 1)])
        return [act(out), px]
    if family == "agd":
        z = coef([a, b])
        out = keras.layers.Add(name=f"{name}_add")([project(z, 0), residual_branch(z, width, stride, name)])
        return [act(out), project(a, 1)]
    if family == "agd2":  # a = x_k, b = v_k
        z = coef([a, b])
        v = keras.layers.Add(name=f"{name}_add")([project(b, 0), residual_branch(z, width, stride, name)])
        v = act(v)
        return [coef([project(a, 1), v]), v]
    if family == "admm":  # a = z_k, b = u_k
        d = keras.layers.Subtract(name=f"{name}_primal_in")([a, b])
        x = keras.layers.Add(name=f"{name}_add")([project(d, 0), residual_branch(d, width, stride, name)])
        pu = project(b, 1)
        z = keras.layers.ReLU(name=f"{name}_prox")(keras.layers.Add(name=f"{name}_xu")([x, pu]))
        return [z, coef([pu, x, z])]
    raise ConfigError(f"unknown optnet family {family!r}; choose one of {', '.join(FAMILIES)}")


def initial_coefficients(family: str, num_blocks: int, beta: float | None, schedule: str | None):
    """Initial beta_k / theta_k / g_k per block (k = 0..num_blocks-1, global index).

    Defaults: hb beta = 0.4 (constant; the iPiano-safe value of the unrolled net), agd
    beta_k = (k-1)/(k+2) (Nesterov), agd2 theta_k = 2/(k+2), admm g_k = 1. ``beta`` with no
    ``schedule`` means a constant value for every family.
    """
    if family == "gd":
        return [0.0] * num_blocks
    if beta is not None and schedule is None:
        return [float(beta)] * num_blocks
    if family == "hb":
        return list(proximal.momentum_schedule(num_blocks, schedule or "constant", 0.4 if beta is None else beta))
    if family == "agd":
        return list(proximal.momentum_schedule(num_blocks, schedule or "nesterov", 0.0 if beta is None else beta))
    if family == "agd2":
        return list(proximal.agd2_thetas(num_blocks))
    return [1.0] * num_blocks


def build_optnet(family: str, depth: int, input_shape: Sequence[int], num_classes: int,
                 width: int = 16, beta: float | None = None, schedule: str | None = None,
                 learn_coefficients: bool = True, post_activation: bool = False,
                 blocks_per_stage: int | None = None) -> StagedNetwork:
    """Builds a ``6n+2``-layer optimisation-inspired ResNet as a :class:`StagedNetwork`.

    Args:
        family: gd, hb, agd, agd2 or admm.
        depth: 6n + 2 (n blocks per group, 3 groups of widths w, 2w, 4w).
        input_shape: ``(H, W, C)``; num_classes: logits of the final head.
        width: w (16 in the CIFAR ResNets).
        beta: initial coefficient (constant over blocks) instead of the family's default schedule.
        schedule: ``constant``/``nesterov``/``fista`` for hb and agd.
        learn_coefficients: train beta/theta/g (per-block scalars); False keeps them fixed.
        post_activation: ReLU after each block's sum.
        blocks_per_stage: blocks per stage (default n: one stage per group; stage 0 adds the stem).

    Example:
        >>> net = build_model("hbresnet8", (28, 28, 1), 10)
        >>> [net.output_shape(j) for j in range(3)]
        [(28, 28, 16), (14, 14, 32), (7, 7, 64)]
    """
    if family not in FAMILIES:
        raise ConfigError(f"unknown optnet family {family!r}; choose one of {', '.join(FAMILIES)}")
    if len(input_shape) != 3:
        raise ConfigError(f"{FAMILIES[family]} needs (H, W, C) images, got {tuple(input_shape)}")
    if depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"depth must be 6n+2 with n >= 1, got {depth}")
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    n = (depth - 2) // 6
    blocks_per_stage = n if blocks_per_stage is None else int(blocks_per_stage)
    if blocks_per_stage <= 0:
        raise ConfigError(f"blocks_per_stage must be positive, got {blocks_per_stage}")
    plan = [(width * 2**g, 2 if (g > 0 and i == 0) else 1) for g in range(3) for i in range(n)]
    coefficients = initial_coefficients(family, len(plan), beta, schedule)

    stages, k = [], 0
    inputs = features_input(input_shape, "stage_00_in")
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="stem_conv")(inputs)
    x = FusedBatchNormalization(momentum=BN_MOMENTUM, name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    pair = [x, ZerosLike(name="stem_dual")(x) if family == "admm" else x]
    while k < len(plan):
        for _ in range(min(blocks_per_stage, len(plan) - k)):
            w, stride = plan[k]
            pair = optnet_block(family, pair, w, stride, k, coefficients[k], learn_coefficients,
                                post_activation)
            k += 1
        j = len(stages)
        stages.append(keras.Model(inputs, pair, name=f"stage_{j:02d}"))
        inputs = [features_input(t.shape[1:], f"stage_{j + 1:02d}_in{i}", dtype=t.dtype)
                  for i, t in enumerate(pair)]
        pair = list(inputs)
    return StagedNetwork(
        f"{FAMILIES[family]}{depth}", input_shape, num_classes, stages, final_head=gap_head,
        options=dict(width=width, beta=beta, schedule=schedule,
                     learn_coefficients=learn_coefficients, post_activation=post_activation,
                     blocks_per_stage=blocks_per_stage))


def gap_head(feature_shape, num_classes: int) -> keras.Model:
    """Final head: global average pooling + Dense(num_classes) with float32 logits."""
    features = features_input(feature_shape, "head_features")
    x = keras.layers.GlobalAveragePooling2D(name="head_gap")(features)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="head_logits")(x)
    return keras.Model(features, logits, name="final_head")


def _register(family: str, depth: int) -> None:
    # A partial keeps build_optnet's signature, so the registry can list and check options.
    MODELS.register(f"{FAMILIES[family]}{depth}", functools.partial(build_optnet, family, depth))


for _family in FAMILIES:
    for _depth in DEPTHS:
        _register(_family, _depth)
del _family, _depth

__all__ = ["build_optnet", "optnet_block", "gap_head", "ScalarCoefficient", "ShortcutA"]
