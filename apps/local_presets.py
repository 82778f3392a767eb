"""Presets of the local-learning family, with the published numbers beside them.

``apps.experiments.presets`` registers every entry of :data:`LOCAL_PRESETS` as an experiment
(``python -m apps.train --experiment NAME``; ``--list_experiments``). Each preset's docstring holds
the exact command, the paper, its table and the number; ``docs/reproducing.md`` and
``docs/local_learning.md`` list them.

- Nøkland & Eidnes, "Training Neural Networks with Local Error Signals" (ICML 2019), the CIFAR-10
  table (with augmentation; the same numbers head their code's README): every layer of VGG8b / VGG11b trains on its own local loss at
  once (the decoupled mode with the graph detached after each layer). Their recipe (code
  ``anokland/local-loss``): Adam, lr 5e-4 (3e-4 for the 3x nets), 400 epochs, lr x0.25 at epochs
  200, 300, 350, 375, batch 128, no weight decay, leaky ReLU, dropout 0.2 (VGG11b 3x: 0.3), random
  crop (pad 4) + flip, cutout of 16 pixels. Their ``pred`` head averages the features down to
  ``--dim-in-decoder`` before one linear layer: ``aux_conv_layers=0`` with ``aux_max_features``
  2048 for VGG8b (their command sets ``--dim-in-decoder 2048``), 4096 for VGG11b (3x) (its command
  in their README sets none, so ``train.py``'s default 4096 holds). Every local loss reads the
  layer's output before dropout; the dropout (channel-wise on conv features) acts only on what the
  next layer reads (``models.local_vgg``), as in their ``LocalLossBlockConv.forward``. Where the
  averaging block does not divide the features, their ``AvgPool2d(kernel, padding)`` is
  ``aux_pooling="padded"`` (on CIFAR's 32/16/8/4 every block divides: the same as ``adaptive``).
  Their ``decoder_y`` and output layer start at zero weights (``aux_zero_init``, the model's
  ``zero_init_output``); for their back-propagation baseline (``--mode end_to_end``) they do not:
  add ``--model_option zero_init_output=false --noaux_zero_init``.
- Wang et al., "Revisiting Locally Supervised Learning: an Alternative to End-to-end Training"
  (ICLR 2021), Table 2 (the image ``figs/cifar_k.png`` of their repository
  ``blackfeather-wang/InfoPro-Pytorch``, read for this table): ResNet-32 on CIFAR-10 as K local
  modules trained together with the InfoPro loss (contrastive term): 7.76 / 8.58 / 11.13 / 12.75 %
  test error at K = 2 / 4 / 8 / 16, end to end 7.37 % (mean of 5 runs). The same table's
  ResNet-110 row (6.42 / 7.30 / 8.93 / 9.90 %, end to end 6.50 %) is not these presets' network.
  Per-K weights (lambda_1, lambda_2 of the first and last local module) are those of their
  ``comand.sh``; their recipe (``training_configurations`` and ``adjust_learning_rate`` in
  ``Experiments on CIFAR-SVHN-STL10/train.py``, every command of ``comand.sh`` with ``--cos_lr``):
  batch 1024, lr 0.8, SGD with Nesterov momentum 0.9, wd 1e-4, 160 epochs of the cosine schedule
  after a 10-epoch linear warm-up from 0.01, crop of a reflect-padded image + flip, and projection
  shortcuts (1x1 conv + BN where the shape changes, ``_make_layer`` of their ``networks/resnet.py``:
  ``shortcut="B"``). ``..._batch128`` is the same recipe scaled to batch 128 for small machines (lr
  and warm-up lr x 128 / 1024: the linear scaling rule), not the authors' run.
- Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy Learning of CNNs" (ICML 2020), Sec. 5.3:
  asynchronous DGL with a replay buffer, the last stage slower than the others, on their buffer
  experiment's 6-layer max-pool network with MLP auxiliary heads (``buffer_experiments/`` of
  ``eugenium/DGL``; ``models.dgl_buffer``).

Numbers marked *unverified* were not read in their source by this work; the source is named beside
every number (:data:`LOCAL_PRESETS`).
"""

from __future__ import annotations

import keras

from models.dgl_buffer import BUFFER_CNN_OPTIONS, DGLBufferHead

# Nøkland & Eidnes' CIFAR-10 recipe (their train.py defaults + run_experiments.sh)
LOCALLOSS_CIFAR_RECIPE = {
    "dataset": "cifar10", "mode": "decoupled", "optimizer": "adam", "lr": 5e-4, "batch_size": 128,
    "weight_decay": 0.0, "epochs_per_stage": 400, "lr_schedule": "multistep",
    "lr_milestones": [200, 300, 350, 375], "lr_decay_factor": 0.25, "augment": "crop_flip",
    "aux_conv_layers": 0, "aux_max_features": 2048, "aux_pooling": "padded", "aux_zero_init": True,
    "local_loss": "predsim", "predsim_beta": 0.99,
}

# InfoPro's ResNet-32 weights per K: (ixx_1, ixy_1, ixx_2, ixy_2) of their comand.sh
INFOPRO_RESNET32_WEIGHTS = {2: (5.0, 1.0, 0.0, 0.0), 4: (6.0, 0.0, 1.0, 2.0), 8: (5.0, 0.0, 0.0, 2.0),
                            16: (5.0, 0.05, 0.2, 0.5)}
# Test error (%) of ResNet-32 + InfoPro (contrast) on CIFAR-10, Wang et al. Table 2 (their
# repository's figs/cifar_k.png); end to end: INFOPRO_RESNET32_END_TO_END_ERROR
INFOPRO_RESNET32_ERRORS = {2: 7.76, 4: 8.58, 8: 11.13, 16: 12.75}
INFOPRO_RESNET32_END_TO_END_ERROR = 7.37
INFOPRO_SOURCE = "Wang et al. 2021, Table 2 (InfoPro-Pytorch figs/cifar_k.png)"
LOCALLOSS_SOURCE = "Noekland & Eidnes 2019, CIFAR-10 table (local-loss README.md)"


def localloss_vgg8b_cifar10_predsim() -> dict:
    """VGG8b, every layer on its own predsim loss (Nøkland & Eidnes 2019), CIFAR-10.

    python -m apps.train --experiment localloss_vgg8b_cifar10_predsim --data_dir ~/tensorflow_datasets --workdir runs/ll_vgg8b
    Paper (CIFAR-10 table, with augmentation): 5.58% test error with predsim; the same VGG8b
    trained with the global loss: 5.99% (``--mode end_to_end --local_loss pred``).
    """
    return dict(LOCALLOSS_CIFAR_RECIPE, model="vgg8b",
                model_options={"dropout": 0.2, "activation": "leaky_relu", "zero_init_output": True})


def localloss_vgg11b3x_cifar10_predsim_cutout() -> dict:
    """VGG11b (3x) with predsim and cutout (Nøkland & Eidnes 2019), CIFAR-10.

    python -m apps.train --experiment localloss_vgg11b3x_cifar10_predsim_cutout --data_dir ~/tensorflow_datasets --workdir runs/ll_vgg11b3x
    Paper (CIFAR-10 table): 3.60% test error with cutout (3.97% without, 5.02% with the global loss).
    Adam lr 3e-4, dropout 0.3, three times the widths (``width_multiplier=3``), cutout 16x16, and
    the authors' default ``--dim-in-decoder`` 4096 (``aux_max_features=4096``): their command for
    this network (README.md of ``anokland/local-loss``) sets none.
    """
    return dict(LOCALLOSS_CIFAR_RECIPE, model="vgg11b", lr=3e-4, augment="crop_flip_cutout", aux_max_features=4096,
                model_options={"width_multiplier": 3.0, "dropout": 0.3, "activation": "leaky_relu",
                               "zero_init_output": True})


INFOPRO_BATCH, INFOPRO_LR, INFOPRO_WARMUP_LR = 1024, 0.8, 0.01  # their CIFAR-10 training_configurations


def _infopro_resnet32(k: int, batch_size: int = INFOPRO_BATCH) -> dict:
    recon, class_, recon_last, class_last = INFOPRO_RESNET32_WEIGHTS[k]
    scale = batch_size / INFOPRO_BATCH  # the linear scaling rule, for the scaled variants
    return {
        "dataset": "cifar10", "mode": "decoupled", "model": "resnet32",
        "model_options": {"stage_granularity": "block", "shortcut": "B"},
        "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": INFOPRO_LR * scale, "batch_size": batch_size,
        "weight_decay": 1e-4, "epochs_per_stage": 160, "lr_schedule": "cosine", "warmup_epochs": 10,
        "warmup_lr": INFOPRO_WARMUP_LR * scale,
        "augment": "reflect_crop_flip", "local_loss": "infopro", "local_modules": k, "infopro_class_term": "contrast",
        "infopro_recon_weight": recon, "infopro_recon_weight_last": recon_last, "infopro_class_weight": class_,
        "infopro_class_weight_last": class_last,
    }


def _infopro_doc(k: int, batch_size: int = INFOPRO_BATCH) -> str:
    name = f"infopro_resnet32_cifar10_k{k}" + ("" if batch_size == INFOPRO_BATCH else f"_batch{batch_size}")
    recipe = ("Their recipe: batch 1024, lr 0.8, Nesterov SGD, cosine over 160 epochs after a 10-epoch warm-up from"
              " 0.01, reflect-padded crops, projection shortcuts." if batch_size == INFOPRO_BATCH else
              f"Their recipe scaled to batch {batch_size} for small machines (lr {INFOPRO_LR * batch_size / INFOPRO_BATCH:g},"
              f" warm-up from {INFOPRO_WARMUP_LR * batch_size / INFOPRO_BATCH:g}): not the authors' run.")
    return f"""ResNet-32 as K={k} local modules with the InfoPro loss (Wang et al. 2021), CIFAR-10.

    python -m apps.train --experiment {name} --data_dir ~/tensorflow_datasets --workdir runs/{name}
    Paper ({INFOPRO_SOURCE}, ResNet-32, InfoPro contrast): {INFOPRO_RESNET32_ERRORS[k]:.2f}% test error,
    end to end {INFOPRO_RESNET32_END_TO_END_ERROR}% (mean of 5 runs). Weights
    lambda_1, lambda_2 (first -> last local module) {INFOPRO_RESNET32_WEIGHTS[k]} from their comand.sh.
    {recipe} The reconstruction target is the de-normalised image, as theirs (docs/local_learning.md).
    """


def dgl_async_cifar10_buffer50() -> dict:
    """Asynchronous DGL (Belilovsky et al. 2020, Sec. 5.3): their buffer experiment's network, a
    replay buffer of 50 batches per stage boundary, the last stage drawn half as often.

    python -m apps.train --experiment dgl_async_cifar10_buffer50 --data_dir ~/tensorflow_datasets --workdir runs/dgl_async
    Paper (Sec. 5.3, Fig. 5): asynchronous DGL with a buffer stays within ~1 point of synchronous
    DGL (*unverified*); the synchronous counterpart is ``--replay_buffer 0``. Source of the recipe:
    ``buffer_experiments/cifar_buffer.py`` of ``eugenium/DGL`` with its defaults and
    ``model_greedy.py`` (``models.dgl_buffer``): 6 conv layers of width 128 -> 512 with max-pooling
    before layers 2 and 4 (``--ds-type maxpool --down [1,3]``), each with an MLP auxiliary
    classifier (2x2 average, 3 x (Linear, BatchNorm1d, ReLU), Linear: ``--nlin 0 --mlp 3``); SGD
    momentum 0.9, lr 0.1 divided by 5 every 15 epochs, weight decay 5e-4, batch 128, 50 epochs, crop
    (pad 4) + flip. The buffers serve batches as their ``Buffer.get_sample`` (``priority_lifo``)
    and one random stage steps per iteration (``--replay_schedule random``; their
    ``--layer-sequence random``), the last one at half the others' rate (their ``--noise 0.5
    --layer_noise 5``; their default slows none). Still not theirs: they re-run a sequential
    warm-up after every learning-rate drop, and their per-layer epochs are counted per worker.
    """
    return {
        "dataset": "cifar10", "mode": "decoupled", "model": "layerwise_cnn", "optimizer": "sgd", "momentum": 0.9,
        "batch_size": 128, "lr": 0.1, "lr_decay_every": 15, "lr_decay_factor": 0.2, "epochs_per_stage": 50,
        "weight_decay": 5e-4, "augment": "crop_flip", "model_options": dict(BUFFER_CNN_OPTIONS),
        "aux_head_object": keras.saving.serialize_keras_object(DGLBufferHead()),
        "replay_buffer": 50, "replay_policy": "priority_lifo", "replay_schedule": "random",
        "stage_step_ratios": [1.0, 1.0, 1.0, 1.0, 1.0, 0.5],
    }


def _infopro_preset(k: int, batch_size: int = INFOPRO_BATCH):
    def changes() -> dict:
        return _infopro_resnet32(k, batch_size)

    changes.__name__ = f"infopro_resnet32_cifar10_k{k}" + ("" if batch_size == INFOPRO_BATCH else f"_batch{batch_size}")
    changes.__doc__ = _infopro_doc(k, batch_size)
    return changes


# name -> (the paper's number for the table, the function returning the preset's changes)
LOCAL_PRESETS = {
    "localloss_vgg8b_cifar10_predsim": (f"94.42 (5.58 err; {LOCALLOSS_SOURCE})", localloss_vgg8b_cifar10_predsim),
    "localloss_vgg11b3x_cifar10_predsim_cutout": (
        f"96.40 (3.60 err; {LOCALLOSS_SOURCE})", localloss_vgg11b3x_cifar10_predsim_cutout),
    **{f"infopro_resnet32_cifar10_k{k}": (f"{100 - e:.2f} ({e:.2f} err; {INFOPRO_SOURCE})", _infopro_preset(k))
       for k, e in INFOPRO_RESNET32_ERRORS.items()},
    **{f"infopro_resnet32_cifar10_k{k}_batch128": (
        f"{100 - e:.2f} ({e:.2f} err at batch 1024; {INFOPRO_SOURCE})", _infopro_preset(k, 128))
       for k, e in INFOPRO_RESNET32_ERRORS.items()},
    "dgl_async_cifar10_buffer50": ("- (Belilovsky et al. 2020 Fig. 5, unverified)", dgl_async_cifar10_buffer50),
}
