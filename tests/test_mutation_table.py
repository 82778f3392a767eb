"""The mutation table (``tests/mutation/mutants.py``) cannot go stale: a change that moves the
code a mutant breaks, or renames the test meant to notice it, fails here, in the fast tier, so
the table is updated in the same commit. No TensorFlow is run: this only reads files.
"""

from __future__ import annotations

import ast
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "mutation"))

from mutants import MUTANTS  # noqa: E402


def _test_functions(path: str) -> set[str]:
    with open(os.path.join(REPO, path), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}


def test_mutant_ids_are_unique():
    ids = [m.id for m in MUTANTS]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_every_mutant_applies_exactly_once(mutant):
    path = os.path.join(REPO, mutant.file)
    assert os.path.isfile(path), f"{mutant.id}: {mutant.file} does not exist: re-target the mutant"
    with open(path, encoding="utf-8") as f:
        count = f.read().count(mutant.original)
    assert count == 1, f"{mutant.id}: its original text occurs {count} times in {mutant.file}: update the mutant"
    assert mutant.replacement != mutant.original


@pytest.mark.parametrize("mutant", MUTANTS, ids=lambda m: m.id)
def test_every_mutant_names_tests_that_exist(mutant):
    assert mutant.tests, f"{mutant.id} names no test"
    for node_id in mutant.tests:
        path, _, rest = node_id.partition("::")
        function = rest.split("[")[0].split("::")[-1]
        assert os.path.isfile(os.path.join(REPO, path)), f"{mutant.id}: {path} does not exist"
        assert function in _test_functions(path), f"{mutant.id}: {path} has no test {function}"
