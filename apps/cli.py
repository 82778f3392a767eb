"""What every app shares: one-line errors with exit code 2, and the ``--debug`` flag.

A :class:`layerwise.errors.LayerwiseError` (bad input a user can fix) and a flag-parsing error
are printed as ``error: <what is wrong and what to do>`` on stderr, exit code 2, no traceback;
``--debug`` shows the traceback instead. Anything else is a bug and keeps its traceback.
Python warnings (a skipped record, a servable left out of models.config) are one
``warning: ...`` line each on stderr.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from absl import app, flags, logging

from layerwise.errors import ConfigError, LayerwiseError

flags.DEFINE_boolean("debug", False, "Show full tracebacks instead of one-line errors.")
flags.DEFINE_boolean(
    "dry_run", False, "Check the flags (and the configuration, where the app can) and exit without running."
)
FLAGS = flags.FLAGS

EXIT_USAGE = 2


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def define_shared_boolean(name: str, default: bool, help: str, module_name: str) -> None:
    """Defines the boolean flag ``--name`` as a flag of the app ``module_name`` (listed with its
    flags); another app imported into the same process shares the one flag."""
    if name in FLAGS:
        FLAGS.register_key_flag_for_module(module_name, FLAGS[name])
        return
    flags.DEFINE_boolean(name, default, help, module_name=module_name)


def define_trust_pickle(module_name: str) -> None:
    """Defines ``--trust_pickle`` for the app ``module_name``."""
    define_shared_boolean(
        "trust_pickle", False,
        "Read CIFAR's python version (cifar-10-batches-py, cifar-100-python) from --data_dir: pickles run code "
        "when loaded, so only for files you trust. The binary version (cifar-10-batches-bin) needs no flag.",
        module_name)


def define_download(module_name: str) -> None:
    """Defines ``--download`` for the app ``module_name``."""
    define_shared_boolean(
        "download", True,
        "Download a TFDS dataset that is not in --data_dir yet, when its hosts answer within a few seconds (else "
        "the run stops at once, saying how to provide the files). --download=false forbids it.",
        module_name)


def refuse_arguments(argv: list[str], hint: str = "") -> None:
    """Stray positional arguments are an error, not silently ignored (``--images a.png b.png``
    would otherwise predict on ``a.png`` alone).

    Raises:
        ConfigError: naming the arguments, with ``hint``.
    """
    if len(argv) > 1:
        shown = " ".join(repr(a) for a in argv[1:4]) + (" ..." if len(argv) > 4 else "")
        raise ConfigError(f"unexpected argument(s) {shown}: this app takes flags only{hint}")


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return FLAGS(argv)
    except flags.Error as e:
        fail(f"{e} (see --helpfull)")


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for the apps: one ``warning: ...`` line, no source line."""
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr if file is None else file)


def run(main: Callable[[list[str]], None], validate: Callable[[list[str]], None] | None = None) -> None:
    """``absl.app.run(main)`` with the error conventions above.

    Args:
        main: the app.
        validate: optional check of the arguments without side effects; with ``--dry_run`` it
            runs instead of ``main`` (the docs' commands are checked this way by the tests).
    """

    def guarded(argv: list[str]) -> None:
        try:
            if FLAGS.dry_run:
                if validate is not None:
                    validate(argv)
                print("dry run: the command is valid")
                return
            main(argv)
        except LayerwiseError as e:
            if FLAGS.debug:
                raise
            fail(str(e))
        except KeyboardInterrupt:
            print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
            sys.exit(130)

    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO chatter (SavedModel writing, ...)
    warnings.showwarning = show_warning
    app.run(guarded, flags_parser=_parse_flags)
