"""The mutants of ``tests/mutation/run.py``: one behaviour that matters, broken in one place.

Each :class:`Mutant` names the file, the exact original text (it must occur exactly once), the
replacement, and the pytest node ids that should fail when the behaviour breaks (cheapest first:
the run stops at the first failure). When code moves, change ``file`` (and the texts if they
changed); ``run.py`` refuses a mutant whose original text it cannot find exactly once.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    description: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


TRAINER = "tests/test_trainer.py"
FROZEN_OFF = f"{TRAINER}::test_frozen_stage_is_bit_identical_after_next_stage_trains[cache_off]"
FROZEN_ALL = f"{TRAINER}::test_frozen_stage_is_bit_identical_after_next_stage_trains"
ONE_STEP = f"{TRAINER}::test_one_step_loss_is_cross_entropy_plus_weight_decay_by_hand"
ZOO = "tests/test_zoo.py"
OPTION_A_BLOCK = f"{ZOO}::test_option_a_block_with_zeroed_residual_branch_is_relu_of_the_shortcut"
OPTION_A_PARAMS = f"{ZOO}::test_option_a_adds_no_parameters_to_the_plain_net"
SCALE = "tests/test_scale.py"
DECOUPLED_ALONE = f"{SCALE}::test_decoupled_stage_0_trains_exactly_as_if_it_were_alone"
DECOUPLED_PASS = f"{SCALE}::test_decoupled_trains_every_stage_in_one_pass"

MUTANTS: list[Mutant] = [
    # ------------------------------------------------------------------ freezing, BatchNorm mode
    Mutant(
        "freeze-earlier-stages-trainable",
        "freeze_below leaves the earlier stages trainable",
        "layerwise/staging.py",
        "            stage.trainable = i >= j",
        "            stage.trainable = True",
        (FROZEN_ALL,),
    ),
    Mutant(
        "prefix-bn-training-mode-in-step",
        "the frozen prefix runs with its BatchNorm in training mode inside the step",
        "layerwise/steps.py",
        "        if frozen is not None and prefix_mode == \"no_tape\":\n"
        "            x = frozen(x, training=False)\n",
        "        if frozen is not None and prefix_mode == \"no_tape\":\n"
        "            for stage in frozen.layers:\n"
        "                stage.trainable = True\n"
        "            x = frozen(x, training=True)\n"
        "            for stage in frozen.layers:\n"
        "                stage.trainable = False\n",
        (ONE_STEP, FROZEN_OFF),
    ),
    Mutant(
        "wd-doubled",
        "weight decay coefficient doubled in the loss",
        "layerwise/steps.py",
        "loss += tf.nn.scale_regularization_loss(0.5 * weight_decay * l2)",
        "loss += tf.nn.scale_regularization_loss(weight_decay * l2)",
        (ONE_STEP,),
    ),
    # ------------------------------------------------------------------ option-A shortcuts
    Mutant(
        "option-a-zero-shortcut-every-block",
        "every residual block adds zeros instead of its shortcut",
        "models/resnet.py",
        'y = keras.layers.Add(name=f"{name}_add")([y, skip])',
        'y = keras.layers.Add(name=f"{name}_add")([y, keras.ops.zeros_like(skip)])',
        (OPTION_A_BLOCK, OPTION_A_PARAMS),
    ),
    Mutant(
        "option-a-zero-shortcut-where-shape-changes",
        "the parameter-free shortcut outputs zeros where the shape changes",
        "models/resnet.py",
        '        return ZeroPadShortcut(stride, channels, name=f"{name}_pad")(x)',
        '        return keras.ops.zeros_like(ZeroPadShortcut(stride, channels, name=f"{name}_pad")(x))',
        (OPTION_A_BLOCK, OPTION_A_PARAMS),
    ),
    # ------------------------------------------------------------------ decoupled mode
    Mutant(
        "decoupled-gradient-leak",
        "one tape over all stages, no stop_gradient: stage 1's loss trains stage 0",
        "layerwise/decoupled.py",
        """        for model, vs, loss_of, optimizer, scale in zip(models, variables, losses_of, optimizers, scaled):
            with tf.GradientTape() as tape:
                out, logits = model(x, training=True)
                loss = loss_of(logits, y)
                scaled_loss = optimizer.scale_loss(loss) if scale else loss
            grads.append(tape.gradient(scaled_loss, vs))
            losses.append(loss)
            x = tf.nest.map_structure(tf.stop_gradient, out)
""",
        """        with tf.GradientTape(persistent=True) as tape:
            for model, loss_of in zip(models, losses_of):
                out, logits = model(x, training=True)
                losses.append(loss_of(logits, y))
                x = out
            total = tf.add_n(losses)
        grads = [tape.gradient(total, vs) for vs in variables]
""",
        (DECOUPLED_ALONE,),
    ),
]
