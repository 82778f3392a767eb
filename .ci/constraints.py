"""Prints the exact versions of layerwise's dependencies installed in this environment, as pip
constraints: the requirements of setup.cfg (``install_requires`` and the ``test`` extra) and
everything they require in turn, one ``name==version`` per line, sorted.

Regenerate ``constraints.txt`` in the environment CI ran (``.ci/run`` installs ``.[test]``):

    python -m pip install ".[test]" && python .ci/constraints.py > constraints.txt

A user reproduces that environment with ``pip install -c constraints.txt ".[test]"``. The
closure follows https://packaging.python.org/en/latest/specifications/dependency-specifiers/
(environment markers evaluated here, extras followed where requested).
"""

from __future__ import annotations

import configparser
import importlib.metadata as metadata
import os
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def top_level() -> list[Requirement]:
    config = configparser.ConfigParser()
    config.read(os.path.join(ROOT, "setup.cfg"))
    lines = config["options"]["install_requires"].splitlines()
    lines += config["options.extras_require"]["test"].splitlines()
    return [Requirement(line) for line in lines if line.strip()]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    found: dict[str, str] = {}
    todo = [(r, frozenset()) for r in requirements]
    seen = set()
    while todo:
        requirement, extras = todo.pop()
        environment = {"extra": ""}
        if requirement.marker and not any(
            requirement.marker.evaluate({**environment, "extra": e}) for e in (extras or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            sys.exit(f"error: {requirement.name} is not installed; run python -m pip install \".[test]\" first")
        found[name] = distribution.version
        for line in distribution.requires or ():
            todo.append((Requirement(line), frozenset(requirement.extras)))
    return found


if __name__ == "__main__":
    print(f"# python -m pip install \".[test]\" && python .ci/constraints.py > constraints.txt "
          f"(Python {sys.version_info.major}.{sys.version_info.minor}, {sys.platform})")
    for name, version in sorted(closure(top_level()).items()):
        print(f"{name}=={version}")
