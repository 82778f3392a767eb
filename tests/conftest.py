"""Shared fixtures: quiet TensorFlow, tiny configurations, and a CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from layerwise.config import TrainConfig  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The mutation check (tests/mutation/run.py) runs tests; it is not one.
collect_ignore = ["mutation"]


def tiny_config(**changes) -> TrainConfig:
    """A 2-stage, narrow layerwise CNN on the 8x8 sklearn digits: seconds per run."""
    base = TrainConfig().replace(
        dataset="digits",
        model_options={"num_stages": 2, "width": 8, "downsample_at": [1]},
        aux_conv_layers=1,
        aux_width=8,
        epochs_per_stage=1,
        batch_size=32,
        lr=0.05,
        precision="float32",  # exact comparisons on every machine (the default, auto, depends on the CPU)
    )
    return base.replace(**changes)


def digit_arrays():
    """The 1,797 real 8x8 scikit-learn digits: float32 images in [0, 1] of shape (N, 8, 8, 1), int64 labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images[..., None] / 16.0).astype("float32"), data.target.astype("int64")


def tiny_cnn(seed: int = 0):
    """A functional CNN on 8x8 digits ending in a softmax classifier (conv1, relu1, conv2 stride 2,
    relu2, global pooling, Dense), the same weights for the same seed."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


def three_conv_cnn(name: str, seed: int = 0, batchnorm: bool = False):
    """A user's functional CNN on 8x8 digits (input ``pixels``; conv1[, bn1], relu1, conv2 stride 2,
    relu2, conv3, relu3, pool, a softmax ``predictions`` classifier), the same weights for the same
    seed."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1), name="pixels")
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv3")(x)
    x = keras.layers.ReLU(name="relu3")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def async_dense_stages(ratios, schedule: str = "rounds", seed: int = 0, buffer_size: int = 2, batch: int = 4):
    """Tiny dense stages with heads (stage j: 3 -> 3 features, 10 logits), one per entry of ``ratios``,
    and their asynchronous decoupled step: ``(step, optimizers, buffers)``."""
    import keras

    from layerwise.training.replay import make_async_decoupled_step, make_replay_buffers

    keras.utils.set_random_seed(0)
    models, outputs = [], []
    for _ in ratios:
        inputs = keras.Input((3,))
        features = keras.layers.Dense(3)(inputs)
        models.append(keras.Model(inputs, [features, keras.layers.Dense(10)(features)]))
        outputs.append(features)
    optimizers = [keras.optimizers.SGD(0.01) for _ in models]
    for model, optimizer in zip(models, optimizers):
        optimizer.build(model.trainable_variables)
    buffers = make_replay_buffers([None] * len(models), outputs, buffer_size, batch, (3,))
    step, _ = make_async_decoupled_step(
        models, optimizers, [None] * len(models), stage_outputs=outputs, buffer_size=buffer_size, ratios=ratios,
        seed=seed, batch_size=batch, image_shape=(3,), global_batch_size=batch, schedule=schedule, buffers=buffers)
    return step, optimizers, buffers


def interrupt_at_stage(stage: int):
    """A stage callback that raises ``KeyboardInterrupt`` as stage ``stage`` begins: an interrupted run."""
    import layerwise

    class InterruptAtStage(layerwise.StageCallback):
        def on_stage_begin(self, begun, logs=None):
            if begun == stage:
                raise KeyboardInterrupt

    return InterruptAtStage()


def run_cli(*args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m <args>`` from the repository root and captures its output."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
    )


@pytest.fixture
def quiet_log():
    messages: list[str] = []
    return messages.append
