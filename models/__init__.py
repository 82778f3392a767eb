"""The model zoo: every model is a list of stages (see ``layerwise.nn.network``).

Importing this package registers every family; ``build_model(name, input_shape, num_classes,
**options)`` builds one. Models know nothing about training.
"""

from models.zoo import MODELS, build_model
from models import alexnet, layerwise_cnn, local_vgg, optnet_resnets, resnet, vgg  # noqa: F401  (registers their builders)
from models import dgl_buffer  # noqa: F401  (registers DGLBufferHead for recorded configurations)

__all__ = ["MODELS", "build_model"]
