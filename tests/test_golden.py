"""Golden values: every local loss term and head against the authors' own PyTorch code (issue 24).

The expected values in ``tests/data/golden/authors_values.npz`` were computed once, in a scratch
environment outside this repository (PyTorch 2.13 on CPU, float32), with the authors' code as it is
in their repositories (their licences are not ours, so their code is not copied here):

- Nøkland & Eidnes, ``anokland/local-loss`` at commit 7b3b40b941b2db305c59b56888a1165aefbfc178,
  ``train.py``: the argparse block, ``similarity_matrix`` and ``class LocalLossBlockConv`` were
  executed from the file's text, with ``--loss-sup sim | pred | predsim --beta 0.99``,
  ``--dim-in-decoder`` as each test says and ``--no-print-stats``. The block was built as
  ``LocalLossBlockConv(C, C, 3, 1, 1, num_classes, H, dropout=0)`` (so its own ``__init__`` chose
  the ``AvgPool2d`` kernel and padding), then its ``encoder``, ``bn`` and ``nonlin`` replaced by
  ``nn.Identity()`` so that its local loss reads the input as the features ``h``; ``conv_loss`` and
  ``decoder_y`` got the weights below. The loss is the ``loss`` its ``forward(x, y, y_onehot)``
  returns in training mode, the gradient ``x.grad`` after that forward (it calls ``backward``).
- Wang et al., ``blackfeather-wang/InfoPro-Pytorch`` at commit
  a38362a2b59949a82b7451af7b95dc0b8da31a0b, ``Experiments on CIFAR-SVHN-STL10/networks/``:
  ``losses.SupConLoss``, ``auxiliary_nets.AuxClassifier(16, net_config="1c2f",
  loss_mode="contrast")`` and ``auxiliary_nets.Decoder(16, 8)`` imported as they are, in training
  mode (BatchNorm on batch statistics), with the weights below; the reconstruction target is their
  ``resnet.py`` ``_image_restore`` (``image * std + mean``, CIFAR statistics).

Every input and weight is :func:`pinned` (a closed-form pseudo-random array, the same in the
scratch script), made in this toolkit's layouts and converted for PyTorch: NHWC to NCHW, conv
kernels HWIO to OIHW, dense kernels ``(in, out)`` to ``(out, in)``, and the kernel of a dense layer
after a flatten re-ordered from NHWC to NCHW flattening. Agreement is measured as
:func:`relative_difference`, ``max |ours - theirs| / max |theirs|``, and must be at most 1e-5.
"""

from __future__ import annotations

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.training.local_losses import LOGITS, PredSim, Sim, cross_entropy
from layerwise.training.similarity import SIMILARITY, similarity_loss, similarity_matrix
from layerwise.training.infopro_heads import decoder, projection_head, reconstruction_loss, supervised_contrastive_loss

GOLDEN = np.load(pathlib.Path(__file__).parent / "data" / "golden" / "authors_values.npz")
TOLERANCE = 1e-5
CIFAR_MEAN = np.array([125.3, 123.0, 113.9], np.float32) / 255.0  # InfoPro's resnet.py
CIFAR_STD = np.array([63.0, 62.1, 66.7], np.float32) / 255.0


def pinned(shape, seed: int, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """A reproducible pseudo-random float32 array in ``[low, high)``: element ``i`` of the flattened
    array is ``low + (high - low) * frac(sin(12.9898 i + 78.233 seed) * 43758.5453)``."""
    i = np.arange(int(np.prod(shape)), dtype=np.float64)
    v = np.sin(i * 12.9898 + seed * 78.233) * 43758.5453
    return (low + (high - low) * (v - np.floor(v))).astype(np.float32).reshape(shape)


def relative_difference(ours, theirs) -> float:
    """``max |ours - theirs| / max |theirs|`` (float64)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def assert_matches(ours, key: str) -> None:
    difference = relative_difference(ours, GOLDEN[key])
    assert difference <= TOLERANCE, f"{key}: relative difference {difference:.2e} > {TOLERANCE:g}"


def value_and_input_gradient(fn, x: np.ndarray):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = fn(x)
    return value.numpy(), tape.gradient(value, x).numpy()


# ----------------------------------------------------------------------------- Nøkland & Eidnes
B, H, C, CLASSES = 4, 8, 8, 3
LABELS = tf.constant([0, 2, 1, 2])
FEATURES = pinned((B, H, H, C), 1)  # h, NHWC
SIM_KERNEL = pinned((3, 3, C, C), 2, -0.2, 0.2)  # conv_loss
PRED_KERNEL = pinned((H * H * C, CLASSES), 3, -0.1, 0.1)  # decoder_y, NHWC-flattened rows
PRED_BIAS = pinned((CLASSES,), 4, -0.1, 0.1)


def _similarity_head():
    head = Sim().head((H, H, C), CLASSES, (H, H, 3))
    head.get_layer("local_sim_conv").set_weights([SIM_KERNEL])
    return head


def _prediction_head(shape, max_features, kernel, bias, pooling="adaptive"):
    spec = AuxHead(k=1, batchnorm=False, max_features=max_features, pooling=pooling)
    head = build_aux_head(shape, CLASSES, spec)
    head.get_layer("aux_head_logits").set_weights([kernel, bias])
    return head


def test_similarity_matrices_equal_theirs():
    """``similarity_matrix(conv_loss(h))`` and ``similarity_matrix(y_onehot)`` of ``train.py``
    (per-channel unbiased std over positions, centred, unit rows, clamped products)."""
    assert_matches(similarity_matrix(_similarity_head()(FEATURES)[SIMILARITY]).numpy(), "sim_matrix")
    assert_matches(similarity_matrix(tf.one_hot(LABELS, CLASSES)).numpy(), "onehot_matrix")


def test_sim_loss_and_its_input_gradient_equal_theirs():
    """``--loss-sup sim``: ``F.mse_loss(similarity_matrix(conv_loss(h)), similarity_matrix(y_onehot))``
    on h = pinned((4, 8, 8, 8), 1), labels 0, 2, 1, 2 of 3 classes; gradient with respect to h."""
    head = _similarity_head()
    loss, grad = value_and_input_gradient(lambda h: similarity_loss(head(h)[SIMILARITY], LABELS, CLASSES), FEATURES)
    assert_matches(loss, "sim_loss")
    assert_matches(grad, "sim_grad")


def test_pred_loss_and_its_input_gradient_equal_theirs():
    """``--loss-sup pred --dim-in-decoder 4096``: no pooling (512 features), ``decoder_y`` a
    ``Linear(512, 3)`` with the pinned kernel and bias, ``F.cross_entropy``; gradient w.r.t. h."""
    head = _prediction_head((H, H, C), 4096, PRED_KERNEL, PRED_BIAS)
    loss, grad = value_and_input_gradient(lambda h: cross_entropy(head(h), LABELS, None), FEATURES)
    assert_matches(loss, "pred_loss")
    assert_matches(grad, "pred_grad")


def test_predsim_loss_and_its_input_gradient_equal_theirs():
    """``--loss-sup predsim --beta 0.99``: ``(1 - beta) * cross_entropy + beta * mse`` with the two
    heads above on the same h; gradient w.r.t. h (it flows through both)."""
    sim_head = _similarity_head()
    pred_head = _prediction_head((H, H, C), 4096, PRED_KERNEL, PRED_BIAS)
    loss_fn = PredSim(beta=0.99)

    def loss(h):
        return loss_fn({LOGITS: pred_head(h), SIMILARITY: sim_head(h)[SIMILARITY]}, LABELS, None)

    value, grad = value_and_input_gradient(loss, FEATURES)
    assert_matches(value, "predsim_loss")
    assert_matches(grad, "predsim_grad")


@pytest.mark.parametrize("case, shape, max_features, seed", [
    ("pool7", (4, 7, 7, 8), 64, 5),     # their AvgPool2d((4, 2), padding=(2, 1)) to 2x4
    ("pool28", (2, 28, 28, 2), 8, 6),   # AvgPool2d((16, 16), padding=(8, 8)) to 2x2: rows 24-27 unread
])
def test_padded_prediction_path_at_a_non_dividing_size_equals_theirs(case, shape, max_features, seed):
    """``--loss-sup pred --dim-in-decoder max_features`` on ``pinned(shape, seed)``: the
    ``AvgPool2d`` their ``__init__`` chose (kernel and padding pinned too), then ``decoder_y`` with
    kernel ``pinned((features, 3), seed + 10, -0.3, 0.3)`` and bias ``pinned((3,), seed + 20, -0.1,
    0.1)``, cross-entropy on labels 0, 1, 2, 1; the pooled features, loss and gradient w.r.t. h.
    Ours: ``AuxHead(k=1, batchnorm=False, max_features=..., pooling="padded")``."""
    b, height, width, channels = shape
    spec = AuxHead(k=1, batchnorm=False, max_features=max_features, pooling="padded")
    (ph, pw), block = spec.decoder_blocks(height, width, channels)
    assert block == tuple(GOLDEN[f"{case}_kernel"])
    kernel = pinned((ph * pw * channels, CLASSES), seed + 10, -0.3, 0.3)
    head = _prediction_head(shape[1:], max_features, kernel, pinned((CLASSES,), seed + 20, -0.1, 0.1), "padded")
    pooled = keras.Model(head.input, head.get_layer("aux_head_avg").output)
    x = pinned(shape, seed)
    labels = tf.constant([0, 1, 2, 1][:b])
    assert_matches(pooled(x).numpy(), f"{case}_pooled")
    loss, grad = value_and_input_gradient(lambda h: cross_entropy(head(h), labels, None), x)
    assert_matches(loss, f"{case}_loss")
    assert_matches(grad, f"{case}_grad")


def test_adaptive_pooling_differs_from_theirs_at_a_non_dividing_size():
    """The toolkit's default ``pooling="adaptive"`` reads every row; at 28 pixels their path leaves
    rows 24-27 out, so the default is not their prediction path there (``--aux_pooling padded`` is)."""
    kernel = pinned((2 * 2 * 2, CLASSES), 16, -0.3, 0.3)
    head = _prediction_head((28, 28, 2), 8, kernel, pinned((CLASSES,), 26, -0.1, 0.1))
    pooled = keras.Model(head.input, head.get_layer("aux_head_avg").output)
    assert relative_difference(pooled(pinned((2, 28, 28, 2), 6)).numpy(), GOLDEN["pool28_pooled"]) > 0.1


# ----------------------------------------------------------------------------- InfoPro
def test_supervised_contrastive_loss_and_its_gradient_equal_theirs():
    """``SupConLoss()(F.normalize(z, dim=1).unsqueeze(1), labels, temperature=0.07)`` (what
    ``AuxClassifier.forward`` calls) on z = pinned((6, 5), 30), labels 0, 1, 0, 2, 1, 3 (classes 2 and
    3 without a positive: their ``mask_sum`` of 0 becomes 1, the anchor adds 0 to the mean over 6);
    gradient w.r.t. z. Ours: the batch mean of ``supervised_contrastive_loss``."""
    labels = tf.constant([0, 1, 0, 2, 1, 3])
    loss, grad = value_and_input_gradient(
        lambda z: tf.reduce_mean(supervised_contrastive_loss(z, labels, 0.07)), pinned((6, 5), 30))
    assert_matches(loss, "supcon_loss")
    assert_matches(grad, "supcon_grad")


def _projection_head():
    head = projection_head((8, 8, 16), 128, "local")
    head.get_layer("local_projection_conv").set_weights([pinned((3, 3, 16, 32), 41, -0.2, 0.2)])
    head.get_layer("local_projection_bn").set_weights(
        [pinned((32,), 42, 0.5, 1.5), pinned((32,), 43, -0.2, 0.2), np.zeros(32, np.float32), np.ones(32, np.float32)])
    head.get_layer("local_projection_fc0").set_weights([pinned((32, 128), 44, -0.3, 0.3), pinned((128,), 45, -0.1, 0.1)])
    head.get_layer("local_projection_fc1").set_weights([pinned((128, 128), 46, -0.2, 0.2), pinned((128,), 47, -0.1, 0.1)])
    return head


def test_projection_head_and_its_contrastive_loss_equal_theirs():
    """``AuxClassifier(16, "1c2f", "contrast")``: ``head`` (conv 3x3 stride 2 padding 1 to 32, BN,
    ReLU, average, Linear 128, ReLU, Linear 128) on features pinned((4, 8, 8, 16), 40) with conv
    kernel pinned((3, 3, 16, 32), 41, -0.2, 0.2), BN gamma/beta seeds 42/43, Linear kernels and
    biases seeds 44-47; ``forward(x, labels 0, 1, 0, 1)`` for the loss and its gradient w.r.t. x."""
    head = _projection_head()
    features = pinned((4, 8, 8, 16), 40)
    labels = tf.constant([0, 1, 0, 1])
    assert_matches(head(features, training=True).numpy(), "projection")
    loss, grad = value_and_input_gradient(
        lambda x: tf.reduce_mean(supervised_contrastive_loss(head(x, training=True), labels, 0.07)), features)
    assert_matches(loss, "projection_loss")
    assert_matches(grad, "projection_grad")


def _decoder():
    """Ours with their ``Decoder(16, 8)``'s weights: conv0 kernel seed 51, BN gamma/beta seeds 53/54,
    conv1 kernel and bias seeds 55/56. Their conv0 also has a bias (seed 52, in [-0.5, 0.5)): ours
    has none, as the BatchNorm after it subtracts it again."""
    model = decoder((4, 4, 16), (8, 8, 3), 12, "local")
    model.get_layer("local_decoder_conv0").set_weights([pinned((3, 3, 16, 12), 51, -0.2, 0.2)])
    model.get_layer("local_decoder_bn0").set_weights(
        [pinned((12,), 53, 0.5, 1.5), pinned((12,), 54, -0.2, 0.2), np.zeros(12, np.float32), np.ones(12, np.float32)])
    model.get_layer("local_decoder_conv1").set_weights([pinned((3, 3, 12, 3), 55, -0.3, 0.3), pinned((3,), 56, -0.2, 0.2)])
    return model


def _normalised_image(low: float, high: float) -> np.ndarray:
    """An 8x8 RGB batch spanning exactly [low, high] in each image and channel (pinned seed 60,
    min-max stretched), normalised with CIFAR's mean and std: what the network reads."""
    raw = pinned((4, 8, 8, 3), 60, 0.0, 1.0)
    lo, hi = raw.min(axis=(1, 2), keepdims=True), raw.max(axis=(1, 2), keepdims=True)
    image = (low + (high - low) * (raw - lo) / (hi - lo)).astype(np.float32)
    return ((image - CIFAR_MEAN) / CIFAR_STD).astype(np.float32)


DECODER_FEATURES = pinned((4, 4, 4, 16), 50)


def test_decoder_output_equals_theirs():
    """``Decoder.decoder(F.interpolate(features, [8, 8], mode="bilinear", align_corners=True))`` (the
    sigmoid image) on features pinned((4, 4, 4, 16), 50), training mode: ``sigmoid`` of ours."""
    assert_matches(tf.sigmoid(_decoder()(DECODER_FEATURES, training=True)).numpy(), "decoder_output")


def test_reconstruction_loss_equals_theirs_where_each_channel_spans_0_to_1():
    """``Decoder.forward(features, _image_restore(image))``: ``BCELoss`` against the de-normalised
    image, which spans [0, 1] in every image and channel; gradient w.r.t. the features. Ours: the
    batch mean of ``reconstruction_loss`` with the data's mean and std (what ``InfoPro`` gets from
    the configuration); the min-max target of a loss without them equals it here."""
    model, image = _decoder(), _normalised_image(0.0, 1.0)
    for statistics in ((CIFAR_MEAN, CIFAR_STD), (None, None)):
        loss, grad = value_and_input_gradient(
            lambda f: tf.reduce_mean(reconstruction_loss(model(f, training=True), image, *statistics)),
            DECODER_FEATURES)
        assert_matches(loss, "decoder_full_loss")
        assert_matches(grad, "decoder_full_grad")


def test_reconstruction_loss_equals_theirs_where_a_channel_spans_less():
    """As above on an image spanning [0.1, 0.8] in each image and channel: only the de-normalised
    target (``InfoProResNet._image_restore`` in their ``networks/resnet.py``) matches; the min-max
    one of a loss without the data's statistics differed by 3.0e-2 relative in the loss and 2.3e-1
    in the gradient."""
    model, image = _decoder(), _normalised_image(0.1, 0.8)
    loss, grad = value_and_input_gradient(
        lambda f: tf.reduce_mean(reconstruction_loss(model(f, training=True), image, CIFAR_MEAN, CIFAR_STD)),
        DECODER_FEATURES)
    assert_matches(loss, "decoder_partial_loss")
    assert_matches(grad, "decoder_partial_grad")
