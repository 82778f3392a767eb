"""Checks every zoo model must pass, shared by the zoo's tests (a new model's test is one call)."""

from __future__ import annotations

import keras
import numpy as np

from layerwise.nn.heads import AuxHead, build_aux_head
from layerwise.nn.network import StagedNetwork, primary


def trainable_count(model: keras.Model) -> int:
    """Trainable parameters (what papers and torchvision count; BN moving statistics excluded)."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def final_head(net: StagedNetwork) -> keras.Model:
    """The network's own head, or the k=1 auxiliary head for models without one."""
    shape = net.output_shape(net.num_stages - 1)
    if net.final_head is not None:
        return net.final_head(shape, net.num_classes)
    return build_aux_head(shape, net.num_classes, AuxHead(k=1, batchnorm=False))


def full_model(net: StagedNetwork) -> keras.Model:
    """Image -> every stage -> final head, as one functional model."""
    return net.compose(head=final_head(net))


def check_stage_chain(net: StagedNetwork) -> None:
    """Stage j's input is shaped like stage j-1's output; stage 0 reads the image."""
    expected = tuple(net.input_shape)
    for j, stage in enumerate(net.stages):
        assert isinstance(stage, keras.Model), f"stage {j} is not a keras.Model"
        assert tuple(primary(stage.inputs).shape[1:]) == expected, f"stage {j} input"
        expected = net.output_shape(j)


def check_compose_matches_by_hand(net: StagedNetwork, batch: int = 2, seed: int = 0) -> np.ndarray:
    """``compose(head=...)`` on an image equals running the stages then the head by hand.

    Returns:
        The logits, shaped ``(batch, num_classes)``.
    """
    head = final_head(net)
    model = net.compose(head=head)
    images = np.random.default_rng(seed).normal(size=(batch, *net.input_shape)).astype("float32")
    logits = np.asarray(model(images, training=False))
    by_hand = np.asarray(head(primary(net.run(images, training=False)), training=False))
    assert logits.shape == (batch, net.num_classes)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(logits, by_hand, rtol=1e-5, atol=1e-5)
    return logits


def custom_layers(models: list[keras.Model]) -> list[keras.layers.Layer]:
    """Layers of ``models`` (recursively) whose class is not Keras's own."""
    found = []
    for model in models:
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                found += custom_layers([layer])
            elif not type(layer).__module__.startswith("keras"):
                found.append(layer)
    return found


def check_config_round_trip(layer: keras.layers.Layer, seed: int = 0) -> None:
    """``get_config`` -> registered deserialization rebuilds an equal layer computing the same."""
    config = layer.get_config()
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    rng = np.random.default_rng(seed)

    def sample(spec):
        return rng.normal(size=(1, *spec.shape[1:])).astype("float32")

    x = [sample(t) for t in layer.input] if isinstance(layer.input, (list, tuple)) else sample(layer.input)
    clone(x)  # builds the clone, which then gets the layer's weights
    clone.set_weights(layer.get_weights())
    for got, want in zip(keras.tree.flatten(clone(x)), keras.tree.flatten(layer(x))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-6, atol=1e-6)
