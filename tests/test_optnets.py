"""Optimisation-inspired networks: unrolled nets == algorithms, CNN blocks, stages, the CLI."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from models import proximal
from models import build_model
from models.optnet_resnets import FAMILIES, build_optnet
from models.unrolled import AGD2Net, agd2_connections, build_unrolled

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(12, 24))
    A /= np.linalg.norm(A, axis=0)
    x = rng.normal(size=(6, 24)) * (rng.random((6, 24)) < 0.2)
    return A, x @ A.T + 0.01 * rng.normal(size=(6, 12))


REFERENCES = {
    "gd": lambda A, y, lam, K: proximal.ista(A, y, lam, K),
    "hb": lambda A, y, lam, K: proximal.heavy_ball(A, y, lam, K, np.full(K, 0.4)),
    "agd": lambda A, y, lam, K: proximal.fista(
        A, y, lam, K, [max(k - 1, 0) / (k + 2) for k in range(K)]),
    "agd2": lambda A, y, lam, K: proximal.nesterov_second(A, y, lam, K),
    "admm": lambda A, y, lam, K: proximal.admm(A, y, lam, K, rho=1.0),
}


@pytest.mark.parametrize("share_weights", [True, False])
@pytest.mark.parametrize("family", sorted(REFERENCES))
def test_analytic_net_is_k_iterations_of_its_algorithm(problem, family, share_weights):
    A, y = problem
    for K in (1, 7):
        net = build_unrolled(family, A, 0.05, K, dtype="float64", share_weights=share_weights)
        ref = REFERENCES[family](A, y, 0.05, K)
        assert np.abs(ref).max() > 0.1  # not the trivial all-zero iterate
        np.testing.assert_allclose(net(y).numpy(), ref, atol=1e-5, rtol=0)


def test_fista_schedule_and_float32(problem):
    A, y = problem
    betas = proximal.momentum_schedule(9, "fista")
    net = build_unrolled("agd", A, 0.05, 9, schedule="fista")  # float32
    ref = proximal.fista(A, y, 0.05, 9, betas)
    np.testing.assert_allclose(net(y.astype(np.float32)).numpy(), ref, atol=1e-5)


def test_agd2_dense_weights_reproduce_the_two_sequence_recursion():
    thetas = proximal.agd2_thetas(6)
    c, a = agd2_connections(thetas)
    rng = np.random.default_rng(0)
    vs = rng.normal(size=(7, 3))  # v_0 = 0 is vs[0] unused; v_1..v_6
    x = v = np.zeros(3)
    for k in range(6):
        z = (1 - thetas[k]) * x + thetas[k] * v
        np.testing.assert_allclose(z, c[k, :k] @ vs[1 : k + 1] if k else 0 * z, atol=1e-12)
        v = vs[k + 1]
        x = (1 - thetas[k]) * x + thetas[k] * v
    np.testing.assert_allclose(x, a @ vs[1:], atol=1e-12)
    assert np.count_nonzero(np.tril(c[:, :-1])) == 15  # every earlier layer feeds layer k


def test_learned_coefficients_are_trainable_and_fixed_ones_are_not(problem):
    A, _ = problem
    learned = build_unrolled("hb", A, 0.1, 3)
    fixed = build_unrolled("hb", A, 0.1, 3, train_coefficients=False)
    assert "beta" in [w.name for w in learned.trainable_weights]
    assert "beta" not in [w.name for w in fixed.trainable_weights]
    assert isinstance(build_unrolled("agd2", A, 0.1, 3), AGD2Net)


# --- CNN relaxations -----------------------------------------------------------------------

SHAPE = (8, 8, 2)


def _copy_weights_by_name(src, dst):
    by_name = {layer.name: layer for stage in src.stages for layer in stage.layers}
    for stage in dst.stages:
        for layer in stage.layers:
            if layer.weights and layer.name in by_name:
                layer.set_weights(by_name[layer.name].get_weights())


def _randomise_bn(net, rng):
    for stage in net.stages:
        for layer in stage.layers:
            if "bn" in layer.name:
                layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32")
                                   for w in layer.get_weights()])


@pytest.mark.parametrize("family", ["hb", "agd"])
def test_momentum_zero_block_is_the_resnet_block_bit_exactly(family):
    rng = np.random.default_rng(0)
    gd = build_optnet("gd", 8, SHAPE, 3, width=4)
    _randomise_bn(gd, rng)
    other = build_optnet(family, 8, SHAPE, 3, width=4, beta=0.0, learn_coefficients=False)
    _copy_weights_by_name(gd, other)
    images = rng.normal(size=(2, *SHAPE)).astype("float32")
    # stage 1 starts with a downsampling block and gets x_k != x_{k-1}
    pair = [rng.normal(size=(2, 8, 8, 4)).astype("float32") for _ in range(2)]
    for j, inputs in ((0, images), (1, pair)):
        for training in (False, True):
            a = gd.stages[j](inputs, training=training)
            b = other.stages[j](inputs, training=training)
            assert np.array_equal(a[0].numpy(), b[0].numpy())
            assert np.array_equal(a[1].numpy(), b[1].numpy())


def test_dense_variant_matches_the_unrolled_dense_recursion():
    """denseagdresnet == z_k = sum_j c_kj v_j, v_{k+1} = P v_k + F_k(z_k), x = sum_j a_j v_j."""
    rng = np.random.default_rng(0)
    net = build_optnet("agd2", 14, SHAPE, 3, width=4)  # 6 blocks, downsampling at 2 and 4
    _randomise_bn(net, rng)
    layers = {l.name: l for s in net.stages for l in s.layers}
    thetas = rng.uniform(0.2, 0.9, 6)
    for k, th in enumerate(thetas):
        layers[f"block_{k:02d}_convex"].coefficient.assign(th)
    images = rng.normal(size=(2, *SHAPE)).astype("float32")
    x_out, v_out = net.run(images, training=False)

    def F(k, t):
        for part in ("conv1", "bn1", "relu1", "conv2", "bn2"):
            t = layers[f"block_{k:02d}_{part}"](t, training=False)
        return t

    x0 = images
    for part in ("stem_conv", "stem_bn", "stem_relu"):
        x0 = layers[part](x0, training=False)
    vs = [x0.numpy().astype(np.float64)]  # v_0 = x_0
    a = [1.0]  # x_k = sum_j a[j] v_j
    for k, th in enumerate(thetas):
        c = [(1 - th) * aj for aj in a]
        c[-1] += th  # z_k = (1-theta) x_k + theta v_k
        z = sum(cj * v for cj, v in zip(c, vs))
        if f"block_{k:02d}_shortcut" in layers:  # P is linear: project every stored v_j
            vs = [layers[f"block_{k:02d}_shortcut"](v).numpy() for v in vs]
        vs.append(vs[-1] + F(k, z.astype("float32")).numpy())
        a = [(1 - th) * aj for aj in a] + [th]
    x_direct = sum(aj * v for aj, v in zip(a, vs))
    np.testing.assert_allclose(v_out.numpy(), vs[-1], atol=1e-4)
    np.testing.assert_allclose(x_out.numpy(), x_direct, atol=1e-4)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_stages_compose_to_the_full_model(family):
    net = build_model(f"{FAMILIES[family]}8", (12, 12, 1), 5, width=4)
    assert net.num_stages == 3
    assert [net.output_shape(j) for j in range(3)] == [(12, 12, 4), (6, 6, 8), (3, 3, 16)]
    for j in range(1, 3):  # every stage after the first takes and returns a pair
        assert len(net.stages[j].inputs) == 2 and len(net.stages[j].outputs) == 2
    head = net.final_head(net.output_shape(2), 5)
    full = net.compose(head=head)
    images = np.random.default_rng(0).normal(size=(3, 12, 12, 1)).astype("float32")
    logits = full(images, training=False).numpy()
    staged = head(net.run(images, training=False)[0], training=False).numpy()
    assert logits.shape == (3, 5) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, staged, atol=1e-5)


def test_blocks_per_stage_and_pinned_parameter_counts():
    assert build_optnet("hb", 20, (32, 32, 3), 10, blocks_per_stage=1).num_stages == 9
    gd20 = build_model("gdresnet20", (32, 32, 3), 10)
    assert gd20.count_params() == 270448  # option A shortcuts: no projection weights
    for family, extra in (("hb", 9), ("agd", 9), ("agd2", 9), ("admm", 9)):
        assert build_model(f"{FAMILIES[family]}20", (32, 32, 3), 10).count_params() == 270448 + extra


def test_bad_model_options_raise_config_error():
    from layerwise.errors import ConfigError

    with pytest.raises(ConfigError):
        build_optnet("hb", 9, (8, 8, 1), 2)
    with pytest.raises(ConfigError):
        build_unrolled("nope", np.eye(3), 0.1, 2)


# --- the depth experiment CLI --------------------------------------------------------------

def _run_app(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "apps.optnets", *args], cwd=ROOT, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("flag", ["--steps=abc", "--depths=2,x", "--families=gd,foo", "--m=0"])
def test_bad_flag_is_one_line_and_exit_code_2(flag, tmp_path):
    result = _run_app(flag, f"--workdir={tmp_path}")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_quick_run_writes_table_json_and_plot(tmp_path):
    result = _run_app("--quick", "--families=gd,agd2", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("report.md", "results.json", "nmse_vs_depth.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["learned"]) == {"gd", "agd2"}
    assert set(results["learned"]["gd"]) == {"2", "4"}
    assert "| GD (ISTA) net (learned) |" in (tmp_path / "report.md").read_text()
