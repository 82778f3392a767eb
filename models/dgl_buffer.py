"""DGL's buffer experiment: the network of Belilovsky, Eickenberg & Oyallon, "Decoupled Greedy
Learning of CNNs" (ICML 2020), Sec. 5.3, as their code builds it (``buffer_experiments/`` of
``eugenium/DGL``: ``cifar_buffer.py`` with its defaults, ``model_greedy.py``).

The trunk is ``layerwise_cnn`` with 6 stages of width 128, 2x2 max-pooling before stages 2 and 4
(their ``--ds-type maxpool --down [1,3]``: widths 128, 128, 256, 256, 512, 512) and BatchNorm
(:data:`BUFFER_CNN_OPTIONS`). Every stage's auxiliary classifier is :class:`DGLBufferHead`, their
``auxillary_classifier`` with ``n_lin=0`` and ``mlp_layers=3``: an MLP, not the conv head of the
greedy paper.

Example:
    >>> net = build_model("layerwise_cnn", (32, 32, 3), 10, **BUFFER_CNN_OPTIONS)
    >>> head = DGLBufferHead()(net.output_shape(0), 10)      # 2x2 x 128 -> 3 x (512, BN, ReLU) -> 10
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import keras

from layerwise.errors import ConfigError
from layerwise.nn.heads import AuxHead
from layerwise.nn.layers import features_input

# their greedyNet(ds_conv maxpool, feature_size=128, downsample=[1, 3]) with 6 blocks: blocks 2 and 4 pool
BUFFER_CNN_OPTIONS = {"num_stages": 6, "width": 128, "downsample_at": [2, 4], "batchnorm": True,
                      "downsampling": "maxpool"}
TORCH_BN_EPSILON = 1e-5  # nn.BatchNorm1d's default
TORCH_BN_MOMENTUM = 0.9  # nn.BatchNorm1d(momentum=0.1) in Keras's convention


@keras.saving.register_keras_serializable(package="layerwise")
@dataclasses.dataclass(frozen=True)
class DGLBufferHead(AuxHead):
    """DGL's buffer-experiment auxiliary classifier (``auxillary_classifier`` in
    ``buffer_experiments/model_greedy.py`` of ``eugenium/DGL``, ``n_lin=0``, ``mlp_layers=3``): the
    features averaged to ``pooled_size`` x ``pooled_size`` (their ``avg_pool2d(avg_size)`` with
    ``avg_size`` = half the map), flattened to F values, ``mlp_layers`` x (Linear F -> F,
    BatchNorm1d, ReLU), Linear to the classes. A head builder: ``layerwise.fit(head=DGLBufferHead())``
    or the ``aux_head_object`` of a configuration. An :class:`~layerwise.nn.heads.AuxHead`
    with ``k=1`` (no hidden convs), so that every stage's head gets its own layer names
    (``head_02_fc0``: a decoupled run checkpoints all heads together); the other AuxHead fields do
    not apply to it.

    Attributes:
        pooled_size: the averaged map's side (theirs: 2).
        mlp_layers: hidden fully connected layers, each as wide as the flattened features (theirs: 3).
    """

    k: int = 1
    pooled_size: int = 2
    mlp_layers: int = 3

    def __call__(self, feature_shape: Sequence[int], num_classes: int, name: str = "dgl_head") -> keras.Model:
        height, width, channels = (int(d) for d in feature_shape)
        if height % self.pooled_size or width % self.pooled_size:
            raise ConfigError(f"DGLBufferHead averages {height}x{width} features to {self.pooled_size}x"
                              f"{self.pooled_size} in whole windows; give a pooled_size that divides both")
        features = features_input(feature_shape, f"{name}_features")
        x = keras.layers.AveragePooling2D((height // self.pooled_size, width // self.pooled_size),
                                          name=f"{name}_avg")(features)
        x = keras.layers.Flatten(name=f"{name}_flatten")(x)
        units = self.pooled_size * self.pooled_size * channels
        for i in range(self.mlp_layers):
            x = keras.layers.Dense(units, name=f"{name}_fc{i}")(x)
            x = keras.layers.BatchNormalization(momentum=TORCH_BN_MOMENTUM, epsilon=TORCH_BN_EPSILON,
                                                name=f"{name}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
        logits = keras.layers.Dense(num_classes, dtype="float32", name=f"{name}_logits")(x)
        return keras.Model(features, logits, name=name)

    def get_config(self) -> dict[str, Any]:
        return {"pooled_size": self.pooled_size, "mlp_layers": self.mlp_layers}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "DGLBufferHead":
        return cls(**config)
