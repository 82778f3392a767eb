"""Named experiments: one preset per configuration of Belilovsky et al. (ICML 2019).

``python -m apps.train --experiment NAME`` starts from the preset; any flag given on the command
line overrides a preset field (precedence: built-in defaults -> preset -> flags). Every preset's
docstring holds the exact command and the paper's number. ``--mode end_to_end`` on any preset is
its end-to-end counterpart (same stages and last head, J x epochs_per_stage epochs).
``python -m apps.train --list_experiments`` prints the table.

The ``mnist5k_*`` presets have the shapes of the paper's CIFAR nets scaled down for the 5,000
embedded MNIST digits on two CPU cores, so every code path runs without downloads.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

from apps.local_presets import LOCAL_PRESETS
from layerwise.config import TrainConfig
from layerwise.registry import Registry
from models.local_vgg import LOCAL_VGG_VARIANTS

EXPERIMENTS: Registry = Registry("experiment")


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A preset: the config changes over the defaults, and what the paper reports."""

    name: str
    changes: dict
    paper: str  # the paper's number(s), "-" for presets with no published number
    doc: str

    def config(self, base: TrainConfig | None = None) -> TrainConfig:
        return (base or TrainConfig()).replace(**self.changes)


def experiment(name: str, paper: str) -> Callable[[Callable[[], dict]], Callable[[], dict]]:
    """Registers a function returning config changes as the preset ``name``."""

    def add(fn: Callable[[], dict]) -> Callable[[], dict]:
        EXPERIMENTS.register(name, Experiment(name, fn(), paper, (fn.__doc__ or "").strip()))
        return fn

    return add


def get_experiment(name: str) -> Experiment:
    """Raises UnknownNameError (listing the presets) for an unknown name."""
    return EXPERIMENTS.get(name)


# ----------------------------------------------------------------------------- recipes
CIFAR_RECIPE = dict(
    dataset="cifar10", optimizer="sgd", momentum=0.9, batch_size=128, lr=0.1, lr_decay_every=15,
    lr_decay_factor=0.2, epochs_per_stage=50, weight_decay=5e-4, augment="crop_flip",
)
IMAGENET_RECIPE = dict(
    dataset="imagenet2012", optimizer="sgd", momentum=0.9, batch_size=256, lr=0.1, lr_decay_every=20,
    lr_decay_factor=0.1, epochs_per_stage=45, weight_decay=1e-4, augment="resized_crop_flip",
)
MNIST_RECIPE = dict(
    dataset="mnist5k", optimizer="sgd", momentum=0.9, batch_size=64, lr=0.05, lr_decay_every=2,
    lr_decay_factor=0.2, epochs_per_stage=3, weight_decay=5e-4, augment="none",
)


def _cifar_k1():
    return dict(CIFAR_RECIPE, model="layerwise_cnn", aux_conv_layers=0, aux_batchnorm=False,
                model_options=dict(num_stages=5, width=256, downsample_at=[1, 3], batchnorm=False))


def _cifar_k(k: int):
    return dict(
        CIFAR_RECIPE,
        model="layerwise_cnn",
        model_options=dict(num_stages=4, width=128, downsample_at=[2], batchnorm=True),
        aux_conv_layers=k - 1, aux_width=256, aux_batchnorm=True,
    )


def _imagenet_k1():
    return dict(
        IMAGENET_RECIPE,
        model="layerwise_cnn",
        # Belilovsky et al. 2019 (ImageNet experiments): on ImageNet the invertible downsampling P is also
        # applied to the input image; their hyperparameter table lists it for k=2,3 only (assumed for k=1). Without it stages 0-1 would run
        # 256 filters at 224x224 (~30 GMAC per image each) and the net would end at 14x14.
        model_options=dict(num_stages=8, width=256, downsample_at=[2, 3, 4, 6], batchnorm=False, downsample_input=True),
        aux_conv_layers=0, aux_batchnorm=False,
    )


def _imagenet_k(k: int):
    return dict(
        IMAGENET_RECIPE,
        model="layerwise_cnn",
        model_options=dict(num_stages=8, width=128, downsample_at=[2, 4, 6], batchnorm=True, downsample_input=True),
        aux_conv_layers=k - 1, aux_width=256, final_aux_width=2048, aux_batchnorm=True,
    )


def _mnist(k: int):
    return dict(
        MNIST_RECIPE,
        model="layerwise_cnn",
        model_options=dict(num_stages=3, width=16, downsample_at=[1, 2], batchnorm=k > 1),
        aux_conv_layers=k - 1, aux_width=32, aux_batchnorm=k > 1,
    )


@experiment("cifar10_k1", "88.3 (ens. 88.4; Belilovsky et al. 2019, Table 1)")
def cifar10_k1():
    """CIFAR-10, k=1: J=5, M=256, downsampling at 1 and 3, no BatchNorm; 50 epochs/stage.

    python -m apps.train --experiment cifar10_k1 --workdir runs/cifar10_k1
    Paper (Table 1): 88.3% test accuracy, 88.4% for the ensemble.
    """
    return _cifar_k1()


@experiment("cifar10_k2", "90.4 (ens. 90.7; Belilovsky et al. 2019, Table 1)")
def cifar10_k2():
    """CIFAR-10, k=2: J=4, M=128, downsampling at 2, aux width 256, BatchNorm.

    python -m apps.train --experiment cifar10_k2 --workdir runs/cifar10_k2
    Paper (Table 1): 90.4% (ensemble 90.7%).
    """
    return _cifar_k(2)


@experiment("cifar10_k3", "91.7 (ens. 92.8; Belilovsky et al. 2019, Table 1)")
def cifar10_k3():
    """CIFAR-10, k=3: J=4, M=128, downsampling at 2, aux width 256, BatchNorm.

    python -m apps.train --experiment cifar10_k3 --workdir runs/cifar10_k3
    Paper (Table 1): 91.7% (ensemble 92.8%).
    """
    return _cifar_k(3)


@experiment("cifar10_k3_pruned", "87.6 (64-wide e2e: 87.5; Belilovsky et al. 2019, Sec. 4.3)")
def cifar10_k3_pruned():
    """CIFAR-10 compression: J=3, M=128, k=3, each stage pruned 128 -> 64 (Taylor) after training.

    python -m apps.train --experiment cifar10_k3_pruned --workdir runs/cifar10_k3_pruned
    Paper (Sec. 4.3): 87.6%, vs 87.5% for a 64-wide network trained end to end (the preset
    ``cifar10_e2e_64wide``: 5 conv layers of width 64, no downsampling, 120 epochs). The paper
    fine-tunes each pruned stage's auxiliary head for 20 epochs (``prune_finetune_epochs=20``). No
    downsampling, so every stage is 128 wide (*unverified*).
    """
    return dict(
        _cifar_k(3),
        model_options=dict(num_stages=3, width=128, downsample_at=[], batchnorm=True),
        aux_width=128, prune_to_width=64, prune_criterion="taylor", prune_finetune_epochs=20,
    )


@experiment("cifar10_e2e_64wide", "87.5 (Belilovsky et al. 2019, Sec. 4.3, end-to-end baseline)")
def cifar10_e2e_64wide():
    """The compression experiment's end-to-end baseline: 5 conv layers of width 64, no downsampling.

    python -m apps.train --experiment cifar10_e2e_64wide --workdir runs/cifar10_e2e_64wide
    Paper (Sec. 4.3): 87.5%, the baseline of ``cifar10_k3_pruned`` (87.6%): 120 epochs, the learning
    rate dropped every 25 epochs. End to end trains J x epochs_per_stage = 5 x 24 = 120 epochs and
    stretches ``lr_decay_every`` J times (5 x 5 = 25). The classifier after the fifth conv is the
    k=1 head (average to 2x2 + linear), so the network has exactly five conv layers; the paper does
    not describe its head (*unverified*).
    """
    return dict(
        CIFAR_RECIPE, mode="end_to_end", model="layerwise_cnn", epochs_per_stage=24, lr_decay_every=5,
        model_options=dict(num_stages=5, width=64, downsample_at=[], batchnorm=True),
        aux_conv_layers=0, aux_batchnorm=True,
    )


@experiment("imagenet_k1", "58.1/79.7 (ens. 59.3/80.8; Belilovsky et al. 2019, Table 2)")
def imagenet_k1():
    """ImageNet, k=1: J=8, M=256, downsampling at input + 2, 3, 4, 6, no BatchNorm; 45 epochs/stage.

    python -m apps.train --experiment imagenet_k1 --data_dir ~/tensorflow_datasets --workdir runs/imagenet_k1
    Paper (Table 2): 58.1% top-1 / 79.7% top-5 (ensemble 59.3 / 80.8).
    """
    return _imagenet_k1()


@experiment("imagenet_k2", "65.7/86.3 (ens. 67.1/87.0; Belilovsky et al. 2019, Table 2)")
def imagenet_k2():
    """ImageNet, k=2: input downsampling, downsampling at 2, 4, 6, M=128, aux 256, last head 2048.

    python -m apps.train --experiment imagenet_k2 --data_dir ~/tensorflow_datasets --workdir runs/imagenet_k2
    Paper (Table 2): 65.7% top-1 / 86.3% top-5 (ensemble 67.1 / 87.0).
    """
    return _imagenet_k(2)


@experiment("imagenet_k3", "69.7/88.7 (ens. 71.6/89.8; Belilovsky et al. 2019, Table 2)")
def imagenet_k3():
    """ImageNet, k=3: input downsampling, downsampling at 2, 4, 6, M=128, aux 256, last head 2048.

    python -m apps.train --experiment imagenet_k3 --data_dir ~/tensorflow_datasets --workdir runs/imagenet_k3
    Paper (Table 2): 69.7% top-1 / 88.7% top-5 (ensemble 71.6 / 89.8). The paper's end-to-end
    comparison, 71.5 / 90.1, is this network with a final auxiliary width of 512; ``--mode end_to_end``
    alone keeps this preset's 2048, so the comparison's command adds ``--final_aux_width 512``:
    python -m apps.train --experiment imagenet_k3 --mode end_to_end --final_aux_width 512 --data_dir ~/tensorflow_datasets --workdir runs/imagenet_e2e
    """
    return _imagenet_k(3)


@experiment("imagenet_vgg11_k3", "~67.9/88.0 (Belilovsky et al. 2019, Sec. 4.2, unverified)")
def imagenet_vgg11_k3():
    """Layerwise VGG-11: 8 stages (one per conv, pooling folded forward), k=3 aux heads, VGG head last.

    python -m apps.train --experiment imagenet_vgg11_k3 --data_dir ~/tensorflow_datasets --workdir runs/vgg11_k3
    Paper (Sec. 4.2): matches end-to-end VGG-11 (~67.9 top-1 / 88.0 top-5, *unverified*).
    """
    return dict(
        IMAGENET_RECIPE,
        model="vgg11",
        model_options=dict(stage_granularity="conv", fold_pooling=True),
        aux_conv_layers=2, aux_width=256, aux_batchnorm=True,
    )


@experiment("imagenet_vgg11_end_to_end",
            "69.0/88.6 (literature VGG-11, no BN, quoted in Belilovsky et al. 2019; not trained by them)")
def imagenet_vgg11_end_to_end():
    """End-to-end VGG-11 (same 8 stages and 4096-4096 head) with the usual VGG recipe.

    python -m apps.train --experiment imagenet_vgg11_end_to_end --data_dir ~/tensorflow_datasets --workdir runs/vgg11_e2e
    Reference: 69.0% top-1 / 88.6% top-5 is the literature's VGG-11 *without BatchNorm* (Simonyan &
    Zisserman's network) that Belilovsky et al. quote in their table for comparison, not a VGG-11 the
    authors trained; this preset has BatchNorm in its auxiliary heads. End to end trains
    J x epochs_per_stage = 88 epochs, lr 0.01 x0.1 every 4 x 8 = 32 epochs (the schedule is
    stretched J times), close to torchvision's 90-epoch VGG recipe rather than 8 x 45 epochs.
    """
    return dict(imagenet_vgg11_k3(), mode="end_to_end", epochs_per_stage=11, lr=0.01, lr_decay_every=4)


@experiment("mnist5k_k1", "-")
def mnist5k_k1():
    """CIFAR k=1 shape on the embedded MNIST digits: J=3, M=16, downsampling at 1, 2, no BN, k=1.

    python -m apps.train --experiment mnist5k_k1 --workdir runs/mnist5k_k1
    """
    return _mnist(1)


@experiment("mnist5k_k2", "-")
def mnist5k_k2():
    """k=2 shape on the embedded MNIST digits: J=3, M=16, BN, one aux conv of width 32.

    python -m apps.train --experiment mnist5k_k2 --workdir runs/mnist5k_k2
    """
    return _mnist(2)


@experiment("mnist5k_k3", "-")
def mnist5k_k3():
    """k=3 shape on the embedded MNIST digits: J=3, M=16, BN, two aux convs of width 32.

    python -m apps.train --experiment mnist5k_k3 --workdir runs/mnist5k_k3
    """
    return _mnist(3)


@experiment("mnist5k_k3_pruned", "-")
def mnist5k_k3_pruned():
    """The compression experiment's shape on MNIST: J=3, M=32, k=3, no downsampling, pruned 32 -> 16.

    python -m apps.train --experiment mnist5k_k3_pruned --workdir runs/mnist5k_k3_pruned
    """
    return dict(
        _mnist(3),
        model_options=dict(num_stages=3, width=32, downsample_at=[], batchnorm=True),
        prune_to_width=16, prune_finetune_epochs=3,
    )


# ----------------------------------------------------------------------------- the zoo's recipes
# He et al. (CVPR 2016), Sec. 4.2: batch 128, SGD momentum 0.9, wd 1e-4, lr 0.1 divided by 10 at 32k
# and 48k iterations, stop at 64k, "determined on a 45k/5k train/val split", pad-4 crop + flip.
# With 45,000 training images and batch 128 an epoch is 351 iterations; 64k iterations are 182.3
# epochs. End to end trains num_stages x epochs_per_stage epochs: with one stage per group (stem +
# 3 groups = 4 stages) 46 epochs per stage give 184 epochs = 64,584 iterations (+0.9%), the
# closest whole-epoch stop. The milestones are iterations of the run, exactly the paper's.
RESNET_CIFAR_RECIPE = {
    "dataset": "cifar10", "mode": "end_to_end", "optimizer": "sgd", "momentum": 0.9, "batch_size": 128,
    "lr": 0.1, "weight_decay": 1e-4, "lr_schedule": "multistep", "lr_milestones": [32000, 48000],
    "lr_milestone_unit": "step", "lr_decay_factor": 0.1, "validation_fraction": 0.1,
    "epochs_per_stage": 46, "augment": "crop_flip",
}
# CIFAR-10 test error (%) of He et al. Table 6.
RESNET_CIFAR_ERRORS = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}


def _resnet_cifar(depth: int):
    changes = dict(RESNET_CIFAR_RECIPE, model=f"resnet{depth}", model_options={"stage_granularity": "group"})
    if depth == 110:  # "0.1 is slightly too large to start converging": 0.01 for ~400 iterations
        changes.update(warmup_steps=400, warmup_lr=0.01)
    return changes


def _resnet_paper(depth: int) -> str:
    return f"{100 - RESNET_CIFAR_ERRORS[depth]:.2f} ({RESNET_CIFAR_ERRORS[depth]} err; He et al. 2016, Table 6)"


@experiment("resnet20_cifar", _resnet_paper(20))
def resnet20_cifar():
    """ResNet-20 on CIFAR-10, He et al.'s recipe: lr 0.1, /10 at 32k and 48k iterations, ~64k in all.

    python -m apps.train --experiment resnet20_cifar --data_dir ~/tensorflow_datasets --workdir runs/resnet20_cifar
    Paper (Table 6): 8.75% test error. Its plain counterpart: add --model plain20. End to end, one
    stage per group (4 stages x 46 epochs = 184 epochs = 64,584 iterations of 45k/5k train/val).
    """
    return _resnet_cifar(20)


@experiment("resnet32_cifar", _resnet_paper(32))
def resnet32_cifar():
    """ResNet-32 on CIFAR-10 (He et al. recipe, as resnet20_cifar).

    python -m apps.train --experiment resnet32_cifar --data_dir ~/tensorflow_datasets --workdir runs/resnet32_cifar
    Paper (Table 6): 7.51% test error.
    """
    return _resnet_cifar(32)


@experiment("resnet44_cifar", _resnet_paper(44))
def resnet44_cifar():
    """ResNet-44 on CIFAR-10 (He et al. recipe, as resnet20_cifar).

    python -m apps.train --experiment resnet44_cifar --data_dir ~/tensorflow_datasets --workdir runs/resnet44_cifar
    Paper (Table 6): 7.17% test error.
    """
    return _resnet_cifar(44)


@experiment("resnet56_cifar", _resnet_paper(56))
def resnet56_cifar():
    """ResNet-56 on CIFAR-10 (He et al. recipe, as resnet20_cifar).

    python -m apps.train --experiment resnet56_cifar --data_dir ~/tensorflow_datasets --workdir runs/resnet56_cifar
    Paper (Table 6): 6.97% test error; plain-56 (--model plain56) is worse than plain-20 (Fig. 6).
    """
    return _resnet_cifar(56)


@experiment("resnet110_cifar", _resnet_paper(110))
def resnet110_cifar():
    """ResNet-110 on CIFAR-10 with the paper's warm-up: lr 0.01 for the first 400 iterations, then 0.1.

    python -m apps.train --experiment resnet110_cifar --data_dir ~/tensorflow_datasets --workdir runs/resnet110_cifar
    Paper (Table 6): 6.43% test error (best of 5 runs; mean 6.61 +- 0.16). "We use 0.01 to warm up the
    training until the training error is below 80% (about 400 iterations), and then go back to 0.1".
    """
    return _resnet_cifar(110)


# Krizhevsky et al. (NIPS 2012), Secs. 4.1 and 5: SGD batch 128, momentum 0.9, wd 5e-4, lr 0.01
# divided by 10 when the validation error stops improving (three times in ~90 epochs), random
# 224 crops of the 256 images + flips, PCA colour; test on 10 crops. On CIFAR-10 the crop keeps
# the paper's ratio: 28 of 32 (224/256 = 0.875); alexnet_cifar has 5 stages, so 18 epochs per stage
# are 90 epochs end to end. The patience (5 epochs) is our choice: the paper gives none.
ALEXNET_RECIPE = {
    "mode": "end_to_end", "optimizer": "sgd", "momentum": 0.9, "batch_size": 128, "lr": 0.01,
    "weight_decay": 5e-4, "lr_schedule": "plateau", "lr_decay_factor": 0.1, "plateau_patience": 5,
    "validation_fraction": 0.1, "augment": "flip_pca", "eval_crops": 10,
}


@experiment("alexnet_cifar10", "89 (Belilovsky et al. 2019, Table 1)")
def alexnet_cifar10():
    """AlexNet's recipe on CIFAR-10: plateau LR on a 45k/5k split, random 28-crops + flips + PCA colour, 10-crop test.

    python -m apps.train --experiment alexnet_cifar10 --data_dir ~/tensorflow_datasets --workdir runs/alexnet_cifar10
    Reference: AlexNet 89% on CIFAR-10 (the comparison of Belilovsky et al., Table 1); the paper's
    own numbers are ImageNet's (ILSVRC-2012 val 40.7% / 18.2% top-1 / top-5 error, one CNN). The
    run's record gives the 10-crop top-1 and top-5 error (test_top1_error, test_top5_error).
    """
    return dict(ALEXNET_RECIPE, dataset="cifar10", model="alexnet_cifar", crop_size=28, epochs_per_stage=18)


for _name, (_paper, _changes) in LOCAL_PRESETS.items():  # the local-learning family (docs/local_learning.md)
    experiment(_name, _paper)(_changes)


def _stage_count(config: TrainConfig):
    """J for the table, where the model's options do not say it."""
    options = config.model_options
    if config.local.modules:
        return config.local.modules
    if config.model in LOCAL_VGG_VARIANTS:  # one stage per conv + the hidden fully connected layer
        return sum(1 for item in LOCAL_VGG_VARIANTS[config.model] if item != "M") + 1
    if "num_stages" in options:
        return options["num_stages"]
    if config.model.startswith(("resnet", "plain")) and options.get("stage_granularity") == "group":
        from models.resnet import IMAGENET_VARIANTS

        return 5 if int(re.sub(r"\D", "", config.model)) in IMAGENET_VARIANTS else 4  # stem + groups
    if config.model.startswith("alexnet"):
        return 5
    if config.model.startswith("vgg") and options.get("stage_granularity") == "conv":
        return 8
    return "-"


def format_table() -> str:
    """The presets as a markdown table: name, dataset, model, J/M/k, the paper's number."""
    rows = ["| experiment | dataset | model | J | M | k | mode | paper (top-1[/top-5]) |", "|---|---|---|---:|---:|---:|---|---|"]
    for name in EXPERIMENTS.names():
        e = EXPERIMENTS.get(name)
        c = e.config()
        o = c.model_options
        k = "-" if c.mode == "end_to_end" else c.heads.conv_layers + 1
        rows.append(
            f"| {name} | {c.dataset} | {c.model} | {_stage_count(c)} | {o.get('width', '-')} | "
            f"{k} | {c.mode} | {e.paper} |"
        )
    return "\n".join(rows)
