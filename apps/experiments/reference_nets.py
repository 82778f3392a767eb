"""Presets that train the zoo's reference networks as their papers did: the CIFAR ResNets of He
et al. (CVPR 2016) and AlexNet (Krizhevsky et al., NIPS 2012) on CIFAR-10."""

from __future__ import annotations

from apps.experiments.catalogue import experiment

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
