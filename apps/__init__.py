"""Command-line entry points (absl). The only place flags live.

Run them as modules: ``python -m apps.train``, ``python -m apps.export``, ...

TensorFlow's C++ start-up lines (the oneDNN notice, CUDA probing), which ``TF_CPP_MIN_LOG_LEVEL``
does not silence in TF 2.21, are held back while TensorFlow is imported here, before any app
module imports it; they are shown when the import fails, or with ``--debug``.
"""

import os
import sys
import tempfile

# Its C++ log lines too (e.g. "failed call to cuInit" on a machine without a GPU); errors reach
# Python as exceptions anyway. Set TF_CPP_MIN_LOG_LEVEL=0 to see everything.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 sent to a temporary file (replayed on failure)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


if "--debug" not in sys.argv and "tensorflow" not in sys.modules:
    _import_tensorflow_quietly()
