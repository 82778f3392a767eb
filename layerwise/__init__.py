"""layerwise: greedy layerwise training of deep networks in Keras/TensorFlow.

Implements Belilovsky, Eickenberg & Oyallon, "Greedy Layerwise Learning Can Scale to
ImageNet" (ICML 2019): a network is an ordered list of stages; stage j is trained with an
auxiliary classifier while stages 0..j-1 stay frozen.
"""

__version__ = "0.1.0"
