"""Every paper preset resolves, builds and trains one step on tiny inputs; flags override presets."""

import json

import numpy as np
import pytest

from apps.experiments.presets import EXPERIMENTS, format_table, get_experiment, stage_count
from apps.runner import build_network, resolve
from conftest import run_cli
from layerwise.data import load_dataset
from layerwise.data.crops import with_crops
from layerwise.errors import UnknownNameError
from layerwise.training.steps import make_train_step
from layerwise.training.optim import make_optimizer
from layerwise.training.schedules import make_schedule, piecewise
from layerwise.training.trainer import GreedyTrainer
from models.local_vgg import LOCAL_VGG_VARIANTS


def _tiny(config):
    """The preset's shape with every width shrunk so that one step takes a moment on a CPU."""
    options = dict(config.model_options)
    if config.model == "layerwise_cnn":
        options["width"] = 4
    elif config.model in LOCAL_VGG_VARIANTS:  # Nøkland & Eidnes' VGGs: 4-16 filters per conv
        options.update(width_multiplier=options.get("width_multiplier", 1) / 32, hidden_units=8)
        config = config.replace(aux_max_features=32)
    elif config.model.startswith("vgg"):
        options.update(widths=[4, 4, 8, 8, 8], head_units=[16, 16])
    elif config.model.startswith("alexnet"):
        options.update(conv_widths=[8, 8, 8, 8, 8], head_units=[16, 16])
    else:  # CIFAR ResNets: the recipe is the same for every depth; each depth's build is in test_zoo
        options["width"] = 4
        config = config.replace(model="resnet20")  # resnet110's one step takes ~40 s on 2 cores
    if config.local.modules:  # InfoPro's K = 2 ... 16: one tiny K (test_local_learning steps the real ones)
        config = config.replace(local_modules=2, infopro_recon_weight=1.0, infopro_recon_weight_last=0.0,
                                infopro_class_weight=1.0, infopro_class_weight_last=1.0)
    return config.replace(
        dataset="synthetic", model_options=options, aux_width=4, final_aux_width=8 if config.heads.final_width else 0,
        batch_size=8, epochs_per_stage=1, augment="none", replay_buffer=min(config.local.replay_buffer, 2),
        prune_to_width=2 if config.pruning.to_width else 0,  # half the shrunk width, as 64 of 128
    )


_STEPPED: set[str] = set()  # tiny configurations already run (resnet32/44/56_cifar shrink to resnet20's)


@pytest.mark.parametrize("name", EXPERIMENTS.names())
def test_preset_builds_and_runs_one_step(name):
    experiment = get_experiment(name)
    assert "python -m apps.train --experiment " + name in experiment.doc
    paper_config = resolve(experiment.config())  # the real preset validates as is
    config = resolve(_tiny(experiment.config()))
    fingerprint = json.dumps(config.to_dict(), sort_keys=True)
    if fingerprint in _STEPPED:
        return
    _STEPPED.add(fingerprint)
    side = 64 if name.startswith("imagenet_k") else 32  # imagenet_k1 downsamples 32x
    data = load_dataset("synthetic", image_shape=(side, side, 3), num_classes=10 if "cifar" in name else 100,
                        num_train=16, num_test=8)
    data = with_crops(data, config.crop_size)  # AlexNet: the network sees the training crops
    network = build_network(config, data)
    assert network.num_stages == (config.local.modules or stage_count(paper_config))  # the table's J
    trainer = GreedyTrainer(network, data, config, verbose=0, log=lambda m: None)
    if config.mode == "end_to_end":
        problem = trainer.end_to_end_problem()
    else:  # layerwise, and decoupled's last stage (its problem is the same; the whole mode: test_local_learning)
        problem = trainer.stage_problem(network.num_stages - 1 if config.mode == "layerwise" else 0)
    optimizer = make_optimizer(config.optim, make_schedule(config.schedule, config.optim.lr, 2, 1))
    optimizer.build(problem.trainable.trainable_variables)
    if problem.objective is not None:  # a local loss: the trainer's step (its objective, extras, images)
        step = trainer.train_step(problem, optimizer)
    else:
        step = make_train_step(problem.trainable, optimizer, frozen=problem.frozen, global_batch_size=8)
    x, y = next(iter(data.train_batches(8, 0, 0)))
    out = step(x, y)
    loss, finite = out.loss, out.finite
    assert bool(finite) and np.isfinite(float(loss))
    if config.heads.final_width and config.mode == "layerwise":  # the last head is the wider one
        widths = [l.filters for l in trainer.heads[network.num_stages - 1].layers if hasattr(l, "filters")]
        assert widths and set(widths) == {8}


def test_paper_shapes():
    c = resolve(get_experiment("cifar10_k1").config())
    assert c.model_options["num_stages"] == 5 and c.model_options["downsample_at"] == [1, 3]
    assert c.heads.conv_layers == 0 and not c.model_options["batchnorm"] and c.schedule.decay_every == 15
    c = resolve(get_experiment("imagenet_k3").config())
    assert c.model_options["downsample_input"] and c.heads.final_width == 2048 and c.heads.conv_layers == 2
    assert (c.batch_size, c.schedule.decay_every, c.schedule.decay_factor, c.epochs_per_stage) == (256, 20, 0.1, 45)
    c = resolve(get_experiment("imagenet_vgg11_k3").config())
    assert c.model_options["stage_granularity"] == "conv" and c.model_options["fold_pooling"]
    assert get_experiment("imagenet_vgg11_end_to_end").config().mode == "end_to_end"
    assert get_experiment("cifar10_k3_pruned").config().pruning.to_width == 64
    c = resolve(get_experiment("resnet110_cifar").config())
    assert (c.mode, c.optim.lr, c.batch_size, c.optim.weight_decay, c.validation_fraction) == ("end_to_end", 0.1, 128, 1e-4, 0.1)
    assert (c.schedule.warmup_steps, c.schedule.warmup_lr, c.model_options["shortcut"]) == (400, 0.01, "A")
    assert get_experiment("resnet56_cifar").config().schedule.warmup_steps == 0  # the warm-up is ResNet-110's
    # 45k/5k split, batch 128: 351 iterations per epoch; /10 at exactly 32k and 48k, stop after 184 epochs
    boundaries, values = piecewise(c.schedule, c.optim.lr, 351, 4 * c.epochs_per_stage, stretch=4)
    assert boundaries == [400, 32000, 48000] and values == pytest.approx([0.01, 0.1, 0.01, 0.001])
    assert 64000 <= 351 * 4 * c.epochs_per_stage < 64000 + 351 * 4
    c = resolve(get_experiment("alexnet_cifar10").config())
    assert (c.schedule.kind, c.optim.lr, c.optim.weight_decay, c.schedule.decay_factor) == ("plateau", 0.01, 5e-4, 0.1)
    assert (c.crop_size, c.eval_crops, c.augment) == (28, 10, "flip_pca")
    with pytest.raises(UnknownNameError, match="cifar10_k2"):
        get_experiment("cifar10_k9")


def test_flags_override_the_preset():
    from absl import flags

    import apps.train as train

    try:
        flags.FLAGS(["train", "--experiment", "cifar10_k2", "--lr", "0.01", "--width", "32"])
        config = train.config_from_flags()
    finally:
        flags.FLAGS.unparse_flags()
    assert config.optim.lr == 0.01 and config.model_options["width"] == 32
    assert config.model_options["num_stages"] == 4 and config.batch_size == 128  # from the preset


def test_list_experiments_prints_the_table():
    result = run_cli("apps.train", "--list_experiments", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "| imagenet_k3 |" in result.stdout and "69.7/88.7" in result.stdout
    assert format_table().count("\n") == len(EXPERIMENTS) + 1


def test_local_learning_presets():
    """The recipes of Nøkland & Eidnes (their code's defaults), InfoPro's per-K weights, async DGL."""
    c = resolve(get_experiment("localloss_vgg8b_cifar10_predsim").config())
    assert (c.mode, c.model, c.local.loss, c.local.predsim_beta, c.optim.name, c.optim.lr) == (
        "decoupled", "vgg8b", "predsim", 0.99, "adam", 5e-4)
    assert (c.epochs_per_stage, c.schedule.milestones, c.schedule.decay_factor, c.heads.max_features) == (
        400, [200, 300, 350, 375], 0.25, 2048)
    c = resolve(get_experiment("localloss_vgg11b3x_cifar10_predsim_cutout").config())
    assert (c.model_options["width_multiplier"], c.augment, c.optim.lr) == (3.0, "crop_flip_cutout", 3e-4)
    for k in (2, 4, 8, 16):
        c = resolve(get_experiment(f"infopro_resnet32_cifar10_k{k}").config())
        assert (c.local.modules, c.local.loss, c.model, c.mode) == (k, "infopro", "resnet32", "decoupled")
    local = resolve(get_experiment("infopro_resnet32_cifar10_k16").config()).local
    assert (local.infopro_recon_weight, local.infopro_class_weight, local.infopro_recon_weight_last,
            local.infopro_class_weight_last, local.infopro_class_term) == (5.0, 0.05, 0.2, 0.5, "contrast")
    c = resolve(get_experiment("dgl_async_cifar10_buffer50").config())
    assert (c.local.replay_buffer, c.local.step_ratios) == (50, [1.0, 1.0, 1.0, 1.0, 1.0, 0.5])
