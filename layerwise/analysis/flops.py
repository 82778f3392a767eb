"""Forward-pass FLOPs of a Keras model, counted from its conv and dense layers.

FLOPs = 2 x multiply-accumulates per example (the convention of most papers); batch norm,
activations, pooling and additions are ignored (they are a few percent of a conv net's cost).
Used for the per-stage report and for pruning's before/after comparison.
"""

from __future__ import annotations

import numpy as np
import keras


def _layer_macs(layer: keras.layers.Layer) -> int:
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
        # (kh, kw, cin / groups, cout) or, depthwise, (kh, kw, cin, multiplier): one MAC per
        # kernel entry and output position
        kernel = layer.kernel.shape
        out = layer.output.shape  # (None, h, w, channels)
        return int(np.prod(out[1:3]) * np.prod(kernel))
    if isinstance(layer, keras.layers.Dense):
        return int(np.prod(layer.kernel.shape))
    return 0


def layer_flops(layer) -> int:
    """Forward FLOPs per example of one layer (a nested model counts all of its layers)."""
    if isinstance(layer, keras.Model):
        return count_flops(layer)
    return 2 * _layer_macs(layer) if isinstance(layer, keras.layers.Layer) else 0


def count_flops(model: keras.Model) -> int:
    """Forward FLOPs per example of ``model`` (nested functional models included)."""
    return sum(layer_flops(layer) for layer in model.layers)
