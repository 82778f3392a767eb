"""The training core as small pieces (issue 23): modes and hooks on a public interface, no long
functions, one shared problem-running path for every mode."""

import ast
import inspect
import os
import typing

import pytest

from apps.runner import build_network, load_data, resolve
from conftest import tiny_config
from layerwise.training import modes, session
from layerwise.training.trainer import GreedyTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = os.path.join(ROOT, "layerwise", "training")


def _tree(name: str) -> ast.Module:
    with open(os.path.join(TRAINING, name), encoding="utf-8") as f:
        return ast.parse(f.read())


def _private_trainer_uses(tree: ast.Module) -> list[str]:
    """``trainer._x`` / ``self.trainer._x`` / ``session._x`` attribute reads in ``tree``."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
            continue
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
        if name in ("trainer", "session"):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


@pytest.mark.parametrize("module", ["modes.py", "hooks.py"])
def test_modes_and_hooks_use_no_private_member_of_the_trainer(module):
    assert _private_trainer_uses(_tree(module)) == [], module


def _session_members() -> set[str]:
    members = {name for name in vars(session.TrainingSession) if not name.startswith("_")}
    return members | set(typing.get_type_hints(session.TrainingSession))


@pytest.mark.parametrize("module", ["modes.py", "hooks.py"])
def test_modes_and_hooks_use_only_members_of_the_session_interface(module):
    used = {node.attr for node in ast.walk(_tree(module))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "trainer"}
    assert used and used <= _session_members(), sorted(used - _session_members())


def test_the_private_member_check_sees_trainer_and_self_trainer():
    tree = ast.parse("def f(trainer, self):\n    trainer._run()\n    self.trainer._state = 1\n    trainer.run()\n")
    assert len(_private_trainer_uses(tree)) == 2


def test_modes_and_hooks_are_written_against_the_session_interface():
    """Every mode and hook method that drives a run takes a ``TrainingSession``; ``Mode`` is abstract."""
    from layerwise.training import hooks

    assert inspect.isabstract(modes.Mode)
    for cls, method in [(modes.Layerwise, "train"), (modes.EndToEnd, "train"), (modes.Decoupled, "train"),
                        (hooks.Pruning, "after_stage"), (hooks.HeadRefit, "after_training")]:
        hints = typing.get_type_hints(getattr(cls, method))
        assert hints["trainer"] is session.TrainingSession, (cls.__name__, method)


def test_decoupled_runs_its_epochs_through_the_shared_problem_code():
    """``Decoupled.train`` loads, resumes and trains its epochs with the trainer's shared steps
    (``load_or_retrain``, ``restore_epoch``, ``train_epochs``), not with its own loop."""
    tree = _tree("modes.py")
    decoupled = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Decoupled")
    train = next(n for n in decoupled.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    called = {node.func.attr for node in ast.walk(train)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)}
    assert {"load_or_retrain", "restore_epoch", "train_epochs"} <= called
    assert not [n for n in ast.walk(train) if isinstance(n, (ast.For, ast.While))]  # no epoch loop of its own
    saves = [node for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr == "save_epoch"]
    assert saves == []


def test_the_trainer_has_every_member_of_the_session_interface():
    config = resolve(tiny_config())
    data = load_data(config)
    trainer = GreedyTrainer(build_network(config, data), data, config, verbose=0, log=lambda message: None)
    members = _session_members()
    assert len(members) > 20
    missing = [name for name in sorted(members) if not hasattr(trainer, name)]
    assert missing == []
