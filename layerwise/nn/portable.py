"""Models of standard Keras layers, so that their ``.keras`` files load with Keras alone.

Training uses a few layers of ours that compute what a Keras layer (or a few) computes, faster or
in a form the stage graph needs: :class:`~layerwise.nn.layers.FusedBatchNormalization`
(``BatchNormalization`` on TensorFlow's fused kernel), :class:`~layerwise.nn.layers.BlockAveragePooling2D`
(``AveragePooling2D`` whose window is the block), :class:`~layerwise.nn.downsampling.SpaceToDepth`
(a reshape, transpose and reshape), :class:`~layerwise.nn.training_layers.DenseLogits` (a ``Dense``
layer's logits) and :class:`~layerwise.nn.training_layers.StopGradient` (the identity at
inference). A ``.keras`` file names each layer's class; Keras 3 finds a class of another package
only if it was registered (``keras.saving.register_keras_serializable``) in the loading process
(``keras.saving.load_model``; see https://keras.io/guides/serialization_and_saving/#custom-objects),
so a file holding ours would load only after importing the modules that define them, which
``import layerwise`` does not do (it imports lazily, to keep ``layerwise.config`` free of
TensorFlow).

:func:`standard_layers` therefore rebuilds a trained model with ``keras.models.clone_model``,
replacing each of these layers by its standard equivalent carrying a copy of its weights; every
other layer is the model's own (shared, not copied). ``Result.classifiers``,
``Result.ensemble()`` and the ``model.keras`` of every export go through it: their files load
with ``keras.saving.load_model`` in any process, with or without ``layerwise``. Layers of the zoo
with no Keras equivalent (AlexNet's local response normalisation, the option-A ResNet
shortcuts, the optimisation-inspired nets' coefficients) stay as they are: files holding them load
after ``import models``.
"""

from __future__ import annotations

import keras

from layerwise.nn.downsampling import SpaceToDepth
from layerwise.nn.layers import BlockAveragePooling2D, FusedBatchNormalization
from layerwise.nn.training_layers import DenseLogits, StopGradient

__all__ = ["compiled", "saved_classifier", "standard_layers", "standard_equivalent"]

REPLACED = (FusedBatchNormalization, BlockAveragePooling2D, SpaceToDepth, DenseLogits, StopGradient)


def standard_equivalent(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """A new, unbuilt layer of standard Keras layers computing what ``layer`` computes at
    inference, with the same name and dtype policy; ``None`` for any other layer."""
    name, dtype = layer.name, layer.dtype_policy
    if isinstance(layer, FusedBatchNormalization):  # the same configuration and weights
        return keras.layers.BatchNormalization.from_config(layer.get_config())
    if isinstance(layer, BlockAveragePooling2D):
        height, width = layer.input.shape[1:3]
        block = (height // layer.output_size[0], width // layer.output_size[1])
        return keras.layers.AveragePooling2D(block, strides=block, padding="valid", name=name, dtype=dtype)
    if isinstance(layer, SpaceToDepth):
        # tf.nn.space_to_depth: out[i, j, (di * b + dj) * C + c] = in[i * b + di, j * b + dj, c]
        height, width, channels = layer.input.shape[1:]
        b = layer.block_size
        return keras.Sequential([
            keras.layers.Reshape((height // b, b, width // b, b, channels), dtype=dtype),
            keras.layers.Permute((1, 3, 2, 4, 5), dtype=dtype),
            keras.layers.Reshape((height // b, width // b, b * b * channels), dtype=dtype),
        ], name=name)
    if isinstance(layer, DenseLogits):  # the wrapped layer without its softmax, logits in float32
        dense = layer.layer
        return keras.Sequential([
            keras.layers.Dense(dense.units, use_bias=dense.use_bias, dtype=dense.dtype_policy),
            keras.layers.Activation("linear", dtype="float32"),
        ], name=name)
    if isinstance(layer, StopGradient):  # a gradient barrier: the identity outside training
        # (Identity's config is its constructor's arguments: the policy by name, which serialises)
        return keras.layers.Identity(name=name, dtype=dtype.name)
    return None


def _holds_replaced(model: keras.layers.Layer) -> bool:
    if isinstance(model, REPLACED):
        return True
    return isinstance(model, keras.Model) and any(_holds_replaced(layer) for layer in model.layers)


def standard_layers(model: keras.Model) -> keras.Model:
    """``model`` (functional or sequential, with nested models) with each of the layers named in
    the module docstring replaced by its standard Keras equivalent (:func:`standard_equivalent`)
    holding a copy of its weights; every other layer is shared with ``model``. A model with none
    of them is returned as it is.

    The result computes the same function as ``model`` at inference (to float rounding: another
    kernel) and its ``.keras`` file needs no ``custom_objects``.
    """
    if not _holds_replaced(model):
        return model
    replaced: list[tuple[keras.layers.Layer, keras.layers.Layer]] = []

    def clone(layer):
        new = standard_equivalent(layer)
        if new is None:
            return layer  # shared: the trained layer itself
        replaced.append((layer, new))
        return new

    portable = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for old, new in replaced:  # built by clone_model's call on the new graph
        new.set_weights(old.get_weights())
    return portable


def compiled(classifier: keras.Model) -> keras.Model:
    """``classifier`` (images -> class probabilities) compiled as ``keras.Model.compile`` would be
    for integer labels: sparse categorical cross-entropy on probabilities and accuracy
    (https://keras.io/api/losses/probabilistic_losses/#sparsecategoricalcrossentropy-class).

    The optimizer is plain SGD: it keeps no per-weight state, so a ``.keras`` file carries no
    optimizer slots and loads without Keras's "Skipping variable loading for optimizer" warning
    (compile's default, RMSprop, saved unbuilt, mismatches the one ``load_model`` builds)."""
    classifier.compile(optimizer=keras.optimizers.SGD(), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                       metrics=["accuracy"])
    return classifier


def saved_classifier(logits_model: keras.Model, name: str | None = None) -> keras.Model:
    """``logits_model`` (images -> logits) as the classifier a ``.keras`` file holds: images ->
    class probabilities (a float32 softmax), of standard Keras layers (:func:`standard_layers`),
    compiled (:func:`compiled`); every layer but the replaced ones is shared with it."""
    probabilities = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits_model.outputs[0])
    return compiled(standard_layers(keras.Model(logits_model.inputs, probabilities, name=name or logits_model.name)))
