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


def _check_zoo_is_ours() -> None:
    """Exits with one line when the ``models`` package Python would import is not the one installed
    beside these apps (a user's own ``models/`` in the working directory shadows the zoo when run
    as ``python -m apps.train``; the installed ``layerwise-train`` command does not look there)."""
    ours = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
    spec = importlib.util.find_spec("models") if "models" not in sys.modules else sys.modules["models"].__spec__
    found = os.path.dirname(os.path.abspath(spec.origin)) if spec is not None and spec.origin else None
    if found != ours:
        print(f"error: the package 'models' at {found} shadows layerwise's model zoo ({ours}): run from another "
              "directory, or use the installed command (layerwise-train, layerwise-export, ...)", file=sys.stderr)
        sys.exit(2)


_check_zoo_is_ours()

if "--debug" not in sys.argv and "tensorflow" not in sys.modules:
    sys.meta_path.insert(0, _QuietTensorFlow())
