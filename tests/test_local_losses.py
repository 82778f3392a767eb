"""The local losses against NumPy references written from the papers (and their reference code's
definitions), and the training models they build: extras are training-only, InfoPro's weights
interpolate, the step is one compiled function."""

import numpy as np
import pytest
import tensorflow as tf

from layerwise.errors import ConfigError
from layerwise.training.infopro_heads import reconstruction_loss, supervised_contrastive_loss
from layerwise.training.local_losses import InfoPro, Pred, PredSim, Sim, local_loss_for
from layerwise.training.similarity import similarity_loss, similarity_matrix

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------------- NumPy references
def np_similarity_matrix(x: np.ndarray) -> np.ndarray:
    """Nøkland & Eidnes (2019), ``similarity_matrix`` of anokland/local-loss, for NHWC arrays:
    conv features with more than 3 channels and height > 1 become each channel's unbiased standard
    deviation over the positions; rows are centred, divided by (1e-8 + their norm), multiplied and
    clipped to [-1, 1]."""
    x = x.astype(np.float64)
    if x.ndim == 4 and x.shape[-1] > 3 and x.shape[1] > 1:
        x = x.reshape(x.shape[0], -1, x.shape[-1]).std(axis=1, ddof=1)
    else:
        x = x.reshape(x.shape[0], -1)
    xc = x - x.mean(axis=1, keepdims=True)
    xn = xc / (1e-8 + np.sqrt((xc**2).sum(axis=1, keepdims=True)))
    return np.clip(xn @ xn.T, -1, 1)


def np_sim_loss(features: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """``F.mse_loss(Rh, Ry)``: the mean over the B x B entries."""
    return float(np.mean((np_similarity_matrix(features) - np_similarity_matrix(np.eye(classes)[labels])) ** 2))


def np_supcon(z: np.ndarray, labels: np.ndarray, t: float) -> np.ndarray:
    """Khosla et al. (2020), Eq. 2 (``L_out``) per anchor, one view, as InfoPro's SupConLoss."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T / t
    n = len(z)
    out = np.zeros(n)
    for i in range(n):
        others = [a for a in range(n) if a != i]
        denominator = np.log(np.sum(np.exp(s[i, others])))
        positives = [p for p in others if labels[p] == labels[i]]
        if positives:
            out[i] = -np.mean([s[i, p] - denominator for p in positives])
    return out


def np_bce_reconstruction(logits: np.ndarray, images: np.ndarray) -> np.ndarray:
    """``nn.BCELoss(sigmoid(logits), target)`` per example, target = the image min-max scaled to
    [0, 1] per channel."""
    low = images.min(axis=(1, 2), keepdims=True)
    high = images.max(axis=(1, 2), keepdims=True)
    target = (images - low) / (high - low)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    bce = -(target * np.log(p) + (1 - target) * np.log(1 - p))
    return bce.reshape(len(bce), -1).mean(axis=1)


# ----------------------------------------------------------------------------- the terms
@pytest.mark.parametrize("shape", [(6, 5, 5, 8), (6, 1, 1, 8), (6, 4, 4, 3), (6, 12)])
def test_similarity_matrix_matches_the_reference(shape):
    x = RNG.normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(similarity_matrix(tf.constant(x)).numpy(), np_similarity_matrix(x), atol=1e-5)


def test_similarity_loss_matches_the_reference():
    x = RNG.normal(size=(16, 4, 4, 8)).astype(np.float32)
    y = RNG.integers(0, 10, 16)
    assert float(similarity_loss(tf.constant(x), tf.constant(y), 10)) == pytest.approx(np_sim_loss(x, y, 10), abs=1e-5)
    # a batch whose feature similarities are the labels' has no loss
    assert float(similarity_loss(tf.one_hot(y, 10), tf.constant(y), 10)) == pytest.approx(0.0, abs=1e-6)


def test_supervised_contrastive_loss_matches_the_reference():
    z = RNG.normal(size=(12, 16)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 3, 3, 2, 4])  # class 4 has one example: no positive
    got = supervised_contrastive_loss(tf.constant(z), tf.constant(y), 0.07).numpy()
    np.testing.assert_allclose(got, np_supcon(z, y, 0.07), rtol=1e-5, atol=1e-5)
    assert got[-1] == 0.0


def test_reconstruction_loss_matches_the_reference():
    images = RNG.normal(size=(4, 6, 6, 3)).astype(np.float32) * 3 + 1  # any normalisation: min-max is affine-free
    logits = RNG.normal(size=(4, 6, 6, 3)).astype(np.float32)
    got = reconstruction_loss(tf.constant(logits), tf.constant(images)).numpy()
    np.testing.assert_allclose(got, np_bce_reconstruction(logits, images), rtol=1e-5, atol=1e-5)
    scaled = reconstruction_loss(tf.constant(logits), tf.constant(images * 50 - 7)).numpy()
    np.testing.assert_allclose(scaled, got, rtol=1e-5, atol=1e-5)


def test_the_losses_combine_their_terms_as_the_papers_say():
    x = RNG.normal(size=(8, 4, 4, 8)).astype(np.float32)
    y = RNG.integers(0, 5, 8)
    logits = RNG.normal(size=(8, 5)).astype(np.float32)
    ce = float(np.mean(-np.log(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[np.arange(8), y]))
    sim = np_sim_loss(x, y, 5)
    outputs = {"logits": tf.constant(logits), "similarity": tf.constant(x)}
    assert float(Pred()(outputs, y, None)) == pytest.approx(ce, abs=1e-5)
    assert float(Sim()(outputs, y, None)) == pytest.approx(sim + ce, abs=1e-5)
    assert float(PredSim(beta=0.99)(outputs, y, None)) == pytest.approx(0.01 * ce + 0.99 * sim, abs=1e-5)
    images = RNG.normal(size=(8, 6, 6, 1)).astype(np.float32)
    recon = RNG.normal(size=(8, 6, 6, 1)).astype(np.float32)
    outputs.update(reconstruction=tf.constant(recon), projection=tf.constant(RNG.normal(size=(8, 16)).astype(np.float32)))
    bce = float(np.mean(np_bce_reconstruction(recon, images)))
    stage = InfoPro(recon_weight=5.0, class_weight=0.5)
    assert float(stage(outputs, y, images)) == pytest.approx(5 * bce + 0.5 * ce, abs=1e-5)
    contrast = InfoPro(recon_weight=2.0, class_weight=0.5, class_term="contrast")
    supcon = float(np.mean(np_supcon(outputs["projection"].numpy(), y, 0.07)))
    assert float(contrast(outputs, y, images)) == pytest.approx(2 * bce + 0.5 * supcon + ce, abs=1e-4)


def test_infopro_interpolates_its_weights_and_ends_with_cross_entropy():
    loss = InfoPro(recon_weight=5.0, recon_weight_last=0.0, class_weight=0.5, class_weight_last=1.0)
    stages = [loss.for_stage(j, 4) for j in range(4)]
    assert [s.recon_weight for s in stages[:3]] == pytest.approx([5.0, 2.5, 0.0])
    assert [s.class_weight for s in stages[:3]] == pytest.approx([0.5, 0.75, 1.0])
    assert stages[3] == Pred() and stages[3].plain
    assert loss.for_stage(0, 2).recon_weight == 5.0  # K = 2: the one local module has the first weights
    with pytest.raises(ConfigError, match="class_term"):
        InfoPro(class_term="softmax")
    with pytest.raises(ConfigError, match="choose one of"):
        local_loss_for("hebbian")


def test_gradients_are_finite_on_degenerate_features():
    """A dead channel (no variance) or an all-zero example must not give NaN gradients."""
    x = tf.Variable(np.zeros((4, 3, 3, 8), np.float32))
    with tf.GradientTape() as tape:
        loss = similarity_loss(x, tf.constant([0, 1, 0, 1]), 2)
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))
