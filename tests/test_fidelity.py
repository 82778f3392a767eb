"""The presets as their authors published and ran them (issue 24).

Published numbers: each preset's number and the source it was read in. The InfoPro row was read
in Table 2 of Wang et al. (ICLR 2021) as their repository ``blackfeather-wang/InfoPro-Pytorch``
(commit a38362a) gives it in ``figs/cifar_k.png``; Nøkland & Eidnes' in the README.md of
``anokland/local-loss`` (commit 7b3b40b).

Recipes: Nøkland & Eidnes' ``LocalLossBlockConv.forward`` (``train.py`` of ``anokland/local-loss``)
computes the local loss on the layer's output before dropout and applies ``Dropout2d`` (whole
channels) only to what the next layer reads; the vgg11b (3x) command of their README sets no
``--dim-in-decoder``, so its default 4096 holds.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.experiments.presets import EXPERIMENTS, get_experiment
from apps.runner import resolve, run_training
from conftest import tiny_config
from layerwise.data.augment import augment_image
from layerwise.errors import ConfigError
from layerwise.config import TrainConfig
from layerwise.nn.heads import AuxHead
from layerwise.training.infopro_heads import AlignCornersResize
from layerwise.training.local_losses import InfoPro, Sim
from layerwise.training.optim import make_optimizer
from layerwise.training.problems import decoupled_models
from layerwise.training.replay import ReplayBuffer
from layerwise.training.schedules import make_schedule, piecewise
from models import build_model

# preset -> (the number in its table entry, the source named beside it)
PUBLISHED = {
    "alexnet_cifar10": ("89", "Belilovsky et al. 2019, Table 1"),
    "cifar10_k1": ("88.3 (ens. 88.4", "Belilovsky et al. 2019, Table 1"),
    "cifar10_k2": ("90.4 (ens. 90.7", "Belilovsky et al. 2019, Table 1"),
    "cifar10_k3": ("91.7 (ens. 92.8", "Belilovsky et al. 2019, Table 1"),
    "cifar10_k3_pruned": ("87.6 (64-wide e2e: 87.5", "Belilovsky et al. 2019, Sec. 4.3"),
    "cifar10_e2e_64wide": ("87.5", "Belilovsky et al. 2019, Sec. 4.3"),
    "imagenet_k1": ("58.1/79.7 (ens. 59.3/80.8", "Belilovsky et al. 2019, Table 2"),
    "imagenet_k2": ("65.7/86.3 (ens. 67.1/87.0", "Belilovsky et al. 2019, Table 2"),
    "imagenet_k3": ("69.7/88.7 (ens. 71.6/89.8", "Belilovsky et al. 2019, Table 2"),
    "imagenet_vgg11_k3": ("~67.9/88.0", "Belilovsky et al. 2019, Sec. 4.2, unverified"),
    "imagenet_vgg11_end_to_end": ("69.0/88.6", "literature VGG-11, no BN, quoted in Belilovsky et al. 2019"),
    "localloss_vgg8b_cifar10_predsim": ("94.42 (5.58 err", "Noekland & Eidnes 2019, CIFAR-10 table"),
    "localloss_vgg11b3x_cifar10_predsim_cutout": ("96.40 (3.60 err", "Noekland & Eidnes 2019, CIFAR-10 table"),
    "infopro_resnet32_cifar10_k2": ("92.24 (7.76 err", "Wang et al. 2021, Table 2"),
    "infopro_resnet32_cifar10_k4": ("91.42 (8.58 err", "Wang et al. 2021, Table 2"),
    "infopro_resnet32_cifar10_k8": ("88.87 (11.13 err", "Wang et al. 2021, Table 2"),
    "infopro_resnet32_cifar10_k16": ("87.25 (12.75 err", "Wang et al. 2021, Table 2"),
    **{f"infopro_resnet32_cifar10_k{k}_batch128": (
        f"{100 - e:.2f} ({e:.2f} err at batch 1024", "Wang et al. 2021, Table 2")
       for k, e in ((2, 7.76), (4, 8.58), (8, 11.13), (16, 12.75))},
    "dgl_async_cifar10_buffer50": ("-", "Belilovsky et al. 2020 Fig. 5, unverified"),
    **{f"resnet{d}_cifar": (f"{100 - e:.2f} ({e} err", "He et al. 2016, Table 6")
       for d, e in ((20, 8.75), (32, 7.51), (44, 7.17), (56, 6.97), (110, 6.43))},
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS.names()))
def test_every_published_number_names_its_source(name):
    paper = get_experiment(name).paper
    if name.startswith("mnist5k_"):  # measured here, nothing published
        assert paper == "-"
        return
    number, source = PUBLISHED[name]
    assert paper.startswith(number) and source in paper, paper


def test_infopro_numbers_are_resnet32s_not_resnet110s():
    for k, error in ((2, 7.76), (4, 8.58), (8, 11.13), (16, 12.75)):
        experiment = get_experiment(f"infopro_resnet32_cifar10_k{k}")
        assert f"{error:.2f}% test error" in experiment.doc and "end to end 7.37%" in experiment.doc
        assert "unverified" not in experiment.paper  # read in the table itself


def test_the_baselines_beside_the_numbers():
    doc = get_experiment("imagenet_k3").doc  # the paper's end-to-end comparison has a 512-wide last head
    assert "--mode end_to_end --final_aux_width 512" in doc and "71.5 / 90.1" in doc
    assert "without BatchNorm" in get_experiment("imagenet_vgg11_end_to_end").doc
    assert resolve(get_experiment("cifar10_k3_pruned").config()).pruning.finetune_epochs == 20
    c = resolve(get_experiment("cifar10_e2e_64wide").config())
    options = c.model_options
    assert (options["num_stages"], options["width"], options["downsample_at"], c.heads.conv_layers) == (5, 64, [], 0)
    assert (c.mode, c.epochs_per_stage * options["num_stages"], c.schedule.decay_every * options["num_stages"]) == (
        "end_to_end", 120, 25)


def _features_as_extras(shape) -> keras.Model:
    """Training-only outputs that are the stage's features themselves: what a local loss reads."""
    features = keras.Input(shape)
    return keras.Model(features, {"features": features})


def test_local_losses_read_features_before_dropout_the_next_stage_reads_them_dropped():
    """Nøkland & Eidnes' LocalLossBlockConv.forward: the loss reads h, Dropout2d acts on what goes on."""
    keras.utils.set_random_seed(0)
    net = build_model("vgg8b", (16, 16, 3), 10, width_multiplier=1 / 32, hidden_units=16, dropout=0.5,
                      activation="leaky_relu")  # leaky ReLU: no exact zeros but dropout's
    heads = [keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(10)]) for _ in net.stages]
    extras = [_features_as_extras(net.output_shape(j)) for j in range(net.num_stages)]
    models = decoupled_models(net, heads, extras, [Sim()] * net.num_stages)
    x = np.random.RandomState(0).rand(8, 16, 16, 3).astype("float32")
    for j, model in enumerate(models):  # decoupled training's forward pass, stage by stage
        out, outputs = model(x, training=True)
        assert np.count_nonzero(outputs["features"].numpy() == 0) == 0, j  # the local loss: no dropout
        if j + 1 < net.num_stages:  # the next stage's conv reads whole channels dropped
            following = net.stages[j + 1]
            dropped = keras.Model(following.input, following.get_layer(f"conv{j}_dropout").output)(
                out, training=True).numpy()
            zero_maps = np.all(dropped == 0, axis=(1, 2))
            assert 0.2 < zero_maps.mean() < 0.8, j
            assert np.array_equal(dropped == 0, np.broadcast_to(zero_maps[:, None, None], dropped.shape)), j
        x = out
    final = net.final_head(net.output_shape(net.num_stages - 1), 10)  # their layer_out reads dropped features
    assert isinstance(final.get_layer("fc_dropout"), keras.layers.Dropout)
    dropped = keras.Model(final.input, final.get_layer("fc_dropout").output)(x, training=True).numpy()
    assert 0.2 < np.mean(dropped == 0) < 0.8
    inference = net.compose()(np.ones((2, 16, 16, 3), "float32"), training=False)
    assert np.all(np.isfinite(inference.numpy()))


def test_element_wise_dropout_stays_an_option():
    net = build_model("vgg8b", (16, 16, 3), 10, width_multiplier=1 / 32, hidden_units=8, dropout=0.3,
                      spatial_dropout=False)
    layer = net.stages[1].get_layer("conv0_dropout")
    assert type(layer) is keras.layers.Dropout and net.options["spatial_dropout"] is False
    assert type(build_model("vgg8b", (16, 16, 3), 10, dropout=0.3, width_multiplier=1 / 32).stages[1]
                .get_layer("conv0_dropout")) is keras.layers.SpatialDropout2D


def test_vgg11b_3x_uses_the_authors_default_dim_in_decoder():
    """Their README's vgg11b (3x) command sets no --dim-in-decoder: train.py's default, 4096."""
    assert resolve(get_experiment("localloss_vgg11b3x_cifar10_predsim_cutout").config()).heads.max_features == 4096
    assert resolve(get_experiment("localloss_vgg8b_cifar10_predsim").config()).heads.max_features == 2048


def _torch_avgpool2d_reference(x: np.ndarray, block: tuple[int, int], pad: tuple[int, int]) -> np.ndarray:
    """PyTorch's documented AvgPool2d(block, stride=block, padding=pad, count_include_pad=True,
    ceil_mode=False) on NHWC arrays, written out: each window's sum over the image, divided by its
    full size (padding included); windows start at -pad and stop at the last one that fits."""
    n, height, width, c = x.shape
    out_h = (height + 2 * pad[0] - block[0]) // block[0] + 1
    out_w = (width + 2 * pad[1] - block[1]) // block[1] + 1
    out = np.zeros((n, out_h, out_w, c), np.float64)
    for i in range(out_h):
        rows = range(max(0, i * block[0] - pad[0]), min(height, i * block[0] - pad[0] + block[0]))
        for j in range(out_w):
            cols = range(max(0, j * block[1] - pad[1]), min(width, j * block[1] - pad[1] + block[1]))
            out[:, i, j] = x[:, rows][:, :, cols].sum(axis=(1, 2)) / (block[0] * block[1])
    return out


def test_the_authors_pooling_at_28_pixels_leaves_rows_24_to_27_out():
    """vgg8b's first layer on MNIST (128 x 28 x 28, --dim-in-decoder 1024) in Nøkland & Eidnes'
    LocalLossBlockConv.__init__: block 16 x 8, padding 8 x 4, a 2 x 4 grid; the same loop at 2
    channels and 16 features. The reference is PyTorch's AvgPool2d as documented (no PyTorch here)."""
    head = AuxHead(k=1, batchnorm=False, max_features=16, pooling="padded")
    assert head.decoder_blocks(28, 28, 2) == ((2, 4), (16, 8))
    assert AuxHead(k=1, max_features=1024).decoder_blocks(28, 28, 128) == ((2, 4), (16, 8))
    model = head((28, 28, 2), 10)
    pooled = keras.Model(model.input, model.get_layer("aux_head_avg").output)
    x = np.random.RandomState(0).rand(3, 28, 28, 2).astype("float32")
    got = pooled(x).numpy()
    np.testing.assert_allclose(got, _torch_avgpool2d_reference(x, (16, 8), (8, 4)), rtol=1e-6, atol=1e-7)
    changed = x.copy()
    changed[:, 24:] += 1.0  # rows past the last whole window: unread, as in their code
    np.testing.assert_array_equal(pooled(changed).numpy(), got)
    adaptive = AuxHead(k=1, batchnorm=False, max_features=16)((28, 28, 2), 10)  # ours: every row counts
    adaptive_pooled = keras.Model(adaptive.input, adaptive.get_layer("aux_head_avg").output)
    assert adaptive_pooled(x).shape == got.shape
    assert not np.allclose(adaptive_pooled(changed).numpy(), adaptive_pooled(x).numpy())
    cifar = np.random.RandomState(1).rand(3, 32, 32, 2).astype("float32")  # every block divides 32: the same
    padded, plain = (AuxHead(k=1, batchnorm=False, max_features=16, pooling=p)((32, 32, 2), 10)
                     for p in ("padded", "adaptive"))
    np.testing.assert_allclose(*(keras.Model(m.input, m.get_layer("aux_head_avg").output)(cifar).numpy()
                                 for m in (padded, plain)), rtol=1e-5, atol=1e-6)


def test_padded_pooling_is_an_option_the_local_loss_presets_use():
    assert resolve(get_experiment("localloss_vgg8b_cifar10_predsim").config()).heads.pooling == "padded"
    assert TrainConfig().heads.pooling == "adaptive"
    with pytest.raises(ConfigError, match="aux_max_features"):
        TrainConfig().replace(aux_pooling="padded").validate()
    with pytest.raises(ConfigError, match="max_features"):
        AuxHead(pooling="padded")


def test_infopro_presets_run_the_authors_recipe():
    """training_configurations, adjust_learning_rate (--cos_lr) and the reflect-padded crop of their
    train.py; _make_layer's 1x1 conv + BN shortcuts (networks/resnet.py of InfoPro-Pytorch)."""
    for k in (2, 4, 8, 16):
        c = resolve(get_experiment(f"infopro_resnet32_cifar10_k{k}").config())
        optim, schedule = c.optim, c.schedule
        assert (c.batch_size, optim.lr, optim.nesterov, optim.momentum, optim.weight_decay) == (1024, 0.8, True, 0.9, 1e-4)
        assert (schedule.kind, schedule.warmup_epochs, schedule.warmup_lr, c.epochs_per_stage) == ("cosine", 10, 0.01, 160)
        assert (c.augment, c.model_options["shortcut"]) == ("reflect_crop_flip", "B")
        scaled = resolve(get_experiment(f"infopro_resnet32_cifar10_k{k}_batch128").config())
        assert (scaled.batch_size, scaled.optim.lr, scaled.schedule.warmup_lr) == (128, 0.1, 0.00125)
        assert "not the authors' run" in get_experiment(f"infopro_resnet32_cifar10_k{k}_batch128").doc


def test_cosine_schedule_with_warm_up_is_infopros_per_epoch():
    """adjust_learning_rate(optimizer, epoch + 1) with --cos_lr, written out for lr 0.8, 160 epochs."""
    def theirs(e):
        cosine = 0.5 * 0.8 * (1 + math.cos(math.pi * e / 160))
        return cosine * (e - 1) / 10 + 0.01 * (11 - e) / 10 if e <= 10 else cosine

    config = TrainConfig().replace(lr_schedule="cosine", warmup_epochs=10, warmup_lr=0.01).validate()
    boundaries, values = piecewise(config.schedule, 0.8, 3, 160)
    assert boundaries == [3 * e for e in range(1, 160)]
    np.testing.assert_allclose(values, [theirs(e) for e in range(1, 161)], rtol=1e-12, atol=1e-15)
    schedule = make_schedule(config.schedule, 0.8, 3, 160)
    assert [round(float(schedule(step)), 6) for step in (0, 2, 3, 30, 3 * 159)] == [
        round(theirs(e), 6) for e in (1, 1, 2, 11, 160)]
    with pytest.raises(ConfigError, match="warmup_epochs"):
        TrainConfig().replace(warmup_epochs=10, warmup_lr=0.01).validate()  # the step schedule has no such warm-up


def test_nesterov_sgd_is_pytorchs_update():
    """PyTorch's SGD(nesterov=True): buf = m * buf + g; p -= lr * (g + m * buf), written out."""
    config = TrainConfig().replace(nesterov=True).validate()
    optimizer = make_optimizer(config.optim, 0.1)
    variable = keras.Variable(np.array([1.0, -2.0], "float32"))
    optimizer.build([variable])
    p, buf = np.array([1.0, -2.0]), np.zeros(2)
    for g in ([0.5, 1.0], [0.25, -1.0], [1.0, 0.0]):
        optimizer.apply_gradients([(np.array(g, "float32"), variable)])
        buf = 0.9 * buf + np.array(g)
        p = p - 0.1 * (np.array(g) + 0.9 * buf)
    np.testing.assert_allclose(variable.numpy(), p, rtol=1e-6)
    assert not make_optimizer(TrainConfig().optim, 0.1).nesterov
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig().replace(nesterov=True, optimizer="adam").validate()


def test_reflect_padded_crop_mirrors_the_image():
    """InfoPro's CIFAR crop: F.pad(mode='reflect') by 4, RandomCrop(32); zeros never enter the crop."""
    image = tf.constant(np.random.RandomState(0).rand(32, 32, 3).astype("float32") + 1.0)
    for seed in range(8):
        reflected = augment_image(image, "reflect_crop", tf.constant([seed, 1])).numpy()
        assert reflected.min() >= 1.0  # every pixel comes from the image
        padded = np.pad(image.numpy(), ((4, 4), (4, 4), (0, 0)), mode="reflect")
        assert any(np.array_equal(reflected, padded[i:i + 32, j:j + 32]) for i in range(9) for j in range(9))
    zero_padded = [augment_image(image, "crop", tf.constant([seed, 1])).numpy().min() for seed in range(8)]
    assert min(zero_padded) == 0.0  # the zero padding shows in some crop


def _bilinear_align_corners(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """F.interpolate(mode='bilinear', align_corners=True) as documented: output pixel i samples
    input position i * (H - 1) / (out - 1), linearly between its two neighbours, per axis."""
    def along(a, axis, out):
        n = a.shape[axis]
        pos = np.arange(out) * ((n - 1) / (out - 1) if out > 1 else 0.0)
        low = np.floor(pos).astype(int)
        high = np.minimum(low + 1, n - 1)
        w = (pos - low).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        return np.take(a, low, axis) * (1 - w) + np.take(a, high, axis) * w

    return along(along(x, 1, size[0]), 2, size[1])


def test_infopro_decoder_upsamples_with_corners_aligned_and_has_their_bias_and_epsilon():
    """Decoder of InfoPro-Pytorch's networks/auxiliary_nets.py: interpolate(align_corners=True),
    BatchNorm2d (eps 1e-5), a last Conv2d with its default bias."""
    x = np.random.RandomState(0).rand(2, 4, 4, 3).astype("float32")
    got = AlignCornersResize((8, 8))(x).numpy()
    np.testing.assert_allclose(got, _bilinear_align_corners(x, (8, 8)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]])  # corners kept
    half_pixel = keras.layers.Resizing(8, 8, interpolation="bilinear")(x).numpy()
    assert not np.allclose(half_pixel, got, atol=1e-3)  # what the decoder used before
    extras = InfoPro(class_term="contrast").head((4, 4, 16), 10, (8, 8, 3))
    layers = {layer.name: layer for model in extras.layers if isinstance(model, keras.Model) for layer in model.layers}
    assert isinstance(layers["local_decoder_resize"], AlignCornersResize)
    assert layers["local_decoder_conv1"].use_bias
    assert layers["local_decoder_bn0"].epsilon == layers["local_projection_bn"].epsilon == 1e-5


def test_infopro_projection_conv_pads_both_sides_as_their_padding_1():
    """Conv2d(stride=2, padding=1) on an even map: output (i, j) is centred on input (2i, 2j)."""
    extras = InfoPro(class_term="contrast").head((8, 8, 4), 10, (8, 8, 3))
    projection = next(m for m in extras.layers if m.name == "local_projection")
    conv = projection.get_layer("local_projection_conv")
    assert conv.strides == (2, 2)
    kernel = np.zeros(conv.kernel.shape, "float32")
    for c in range(4):
        kernel[1, 1, c, c] = 1.0  # the centre tap: the output copies the input pixel it is centred on
    conv.kernel.assign(kernel)
    x = np.random.RandomState(0).rand(2, 8, 8, 4).astype("float32")
    out = keras.Model(projection.input, conv.output)(x).numpy()
    np.testing.assert_allclose(out[..., :4], x[:, ::2, ::2], rtol=1e-6)


def _marked_buffer(policy: str, size: int = 3) -> ReplayBuffer:
    return ReplayBuffer(keras.KerasTensor((None, 1)), size, 2, None, f"marked_{policy}", policy)


def _push(buffer: ReplayBuffer, mark: int) -> None:
    buffer.push(tf.fill([2, 1], float(mark)), tf.fill([2], mark), None)


def _served(buffer: ReplayBuffer, draws: int) -> list[int]:
    return [int(buffer.sample(tf.constant([0, i], tf.int64))[1][0]) for i in range(draws)]


def test_priority_lifo_serves_the_freshest_of_the_least_used_batches():
    """DGL's Buffer.get_sample (priority_lifo, eugenium/DGL buffer_experiments/cifar_buffer.py): the
    least-used batches first, the freshest among them; an overwritten slot starts unused."""
    buffer = _marked_buffer("priority_lifo")
    _push(buffer, 0)
    assert _served(buffer, 2) == [0, 0]
    _push(buffer, 1)
    _push(buffer, 2)
    assert _served(buffer, 4) == [2, 1, 2, 1]  # 0 was used twice: 2 and 1 catch up first
    assert _served(buffer, 3) == [2, 1, 0]  # all used twice: the freshest first
    _push(buffer, 3)  # overwrites 0's slot, unused
    assert _served(buffer, 6) == [3, 3, 3, 3, 2, 1]  # 3 catches up with the others' 3 uses, then wins the tie
    assert TrainConfig().local.replay_policy == "priority_lifo"
    with pytest.raises(ConfigError, match="replay_buffer"):
        TrainConfig().replace(replay_policy="uniform").validate()


def test_uniform_replay_stays_an_option():
    buffer = _marked_buffer("uniform")
    for mark in range(3):
        _push(buffer, mark)
    served = _served(buffer, 30)
    assert set(served) == {0, 1, 2} and served != sorted(served, reverse=True)


def test_their_prediction_layers_start_at_zero():
    """decoder_y.weight.data.zero_() (LocalLossBlockConv) and layer_out's (Net, local training)."""
    c = resolve(get_experiment("localloss_vgg8b_cifar10_predsim").config())
    assert c.heads.zero_init and c.model_options["zero_init_output"]
    head = AuxHead(k=1, max_features=64, zero_init=True)((8, 8, 4), 10)
    assert not np.any(head.get_layer("aux_head_logits").kernel.numpy())
    assert np.any(AuxHead(k=1)((8, 8, 4), 10).get_layer("aux_head_logits").kernel.numpy())
    net = build_model("vgg8b", (16, 16, 3), 10, width_multiplier=1 / 32, hidden_units=8, zero_init_output=True)
    final = net.final_head(net.output_shape(net.num_stages - 1), 10)
    assert not np.any(final.get_layer("final_head_logits").kernel.numpy())


def test_replay_statistics_count_ages_and_the_batches_ever_served():
    buffer = _marked_buffer("priority_lifo")
    for mark in range(3):
        _push(buffer, mark)
    assert _served(buffer, 2) == [2, 1]  # ages 0 and 1
    stats = buffer.statistics()
    assert stats == {"replay_mean_age": 0.5, "replay_served_fraction": 2 / 3, "replay_reads_per_write": 2 / 3}
    assert _marked_buffer("uniform").statistics()["replay_mean_age"] is None


@pytest.mark.parametrize("policy", ["priority_lifo", "uniform"])
def test_an_async_run_records_what_each_stage_read(tmp_path, quiet_log, policy):
    """The stage records of an asynchronous run carry its buffer's statistics (the issue's ages)."""
    config = resolve(tiny_config(mode="decoupled", replay_buffer=3, replay_policy=policy, stage_step_ratios=[1, 0.5],
                                 replay_schedule="rounds"))
    records = run_training(config, str(tmp_path / policy), verbose=0, log=quiet_log)
    assert "replay_mean_age" not in records[0]  # stage 0 reads the data
    stage_1 = records[1]
    assert 0.45 <= stage_1["replay_reads_per_write"] <= 0.55  # half the rate
    if policy == "priority_lifo":  # the freshest, and every other batch never served
        assert stage_1["replay_mean_age"] == 0.0
        assert stage_1["replay_served_fraction"] == pytest.approx(stage_1["replay_reads_per_write"])
    else:
        assert stage_1["replay_mean_age"] > 0.3
