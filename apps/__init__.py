"""Command-line entry points (absl). The only place flags live.

Run them as modules: ``python -m apps.train``, ``python -m apps.export``, ...
"""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) is not for our users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
