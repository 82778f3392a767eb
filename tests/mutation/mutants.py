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
]
