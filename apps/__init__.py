"""Command-line entry points (absl). The only place flags live.

Run them as modules: ``python -m apps.train``, ``python -m apps.export``, ...

An app defines its flags without importing TensorFlow or Keras, so ``--help`` answers at once;
TensorFlow is imported when an app needs it. Its C++ start-up lines (the oneDNN notice, CUDA
probing), which ``TF_CPP_MIN_LOG_LEVEL`` does not silence in TF 2.21, are held back while
TensorFlow is imported, whenever that happens; they are shown when the import fails, or with
``--debug``.
"""

import importlib.abc
import importlib.util
import os
import sys
import tempfile

# Its C++ log lines too (e.g. "failed call to cuInit" on a machine without a GPU); errors reach
# Python as exceptions anyway. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _QuietLoader(importlib.abc.Loader):
    """Runs another loader with file descriptor 2 sent to a temporary file (replayed on failure)."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                sys.stderr.buffer.write(captured.read())
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` the usual way, the first time it is imported, and loads it quietly."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once, and the usual finders below do the finding
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


if "--debug" not in sys.argv and "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlow())
