"""Dry-runs many command lines of one app in one process (the docs' commands, tests/test_docs.py).

    python tests/dry_run_batch.py apps.train '[["--experiment", "cifar10_k1"], ...]'

Each command line goes through the app's real entry (``apps.cli.run`` with ``--dry_run``) after
the flags are reset to their defaults; prints one JSON list of ``{"code", "stdout", "stderr"}``.
One process per app instead of one per command: TensorFlow is imported once.
"""

import contextlib
import importlib
import io
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(app: str, commands: list[list[str]]) -> list[dict]:
    from absl import flags

    from apps import cli

    module = importlib.import_module(app)
    if hasattr(module, "define_flags"):  # apps that define their flags only when run as programs
        module.define_flags()
    results = []
    for args in commands:
        flags.FLAGS.unparse_flags()
        sys.argv = [app, *args, "--dry_run"]
        out, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                cli.run(module.main, getattr(module, "validate", None))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception as e:  # a bug, not bad input: report it like a crashed process
                code = 1
                print(f"{type(e).__name__}: {e}", file=sys.stderr)
        results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
    return results


if __name__ == "__main__":
    results = main(sys.argv[1], json.loads(sys.argv[2]))
    print("\n" + json.dumps(results))
