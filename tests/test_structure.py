"""The code's shape: no import cycle, no import hidden in a function to dodge one, no module
reaching into another's private names (what ``ruff check --select SLF001`` checks, and more)."""

import ast
import os
import pathlib
import shutil
import subprocess
import sys

from conftest import REPO

ROOTS = ("layerwise", "models", "apps")


def modules() -> dict[pathlib.Path, str]:
    root = pathlib.Path(REPO)
    return {
        path: ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        for package in ROOTS for path in (root / package).rglob("*.py")
    }


def _resolve(name: str, known: set[str]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _imports(tree: ast.AST):
    """``(node, imported names)`` of every absolute import in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield node, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node, [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """The project's import graph, and the imports of project modules placed inside functions."""
    files = modules()
    known = set(files.values())
    graph: dict[str, set[str]] = {name: set() for name in known}
    inside = []
    for path, name in files.items():
        tree = ast.parse(path.read_text())
        in_function = {
            id(node) for function in ast.walk(tree) if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))
        }
        for node, names in _imports(tree):
            targets = {t for t in (_resolve(n, known) for n in names) if t and t != name}
            graph[name] |= targets
            if targets and id(node) in in_function and not name.startswith("apps."):
                inside.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return graph, inside


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph, _ = import_graph()
    assert cycles(graph) == []


def test_no_project_imports_inside_library_functions():
    _, inside = import_graph()
    assert inside == []


def test_dependencies_point_one_way():
    """``apps -> models, layerwise``; ``models -> layerwise``; ``layerwise`` imports neither."""
    graph, _ = import_graph()
    for module, targets in graph.items():
        if module.startswith("layerwise"):
            assert not {t for t in targets if not t.startswith("layerwise")}, module
        if module.startswith("models"):
            assert not {t for t in targets if t.startswith("apps")}, module


def private_uses() -> list[str]:
    """``x._name`` on anything but ``self``/``cls``, and ``from m import _name`` of a project module."""
    found = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ROOTS:
                found += [f"{path.relative_to(REPO)}:{node.lineno} import {a.name}" for a in node.names
                          if a.name.startswith("_")]
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_uses() == []


def test_the_version_is_written_once():
    """setup.cfg reads the version from the package (``attr:``), so the two cannot disagree."""
    setup = pathlib.Path(REPO, "setup.cfg").read_text()
    assert "version = attr: layerwise.__version__" in setup.splitlines()


def test_a_foreign_models_package_is_named_in_one_line(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("x = 1\n")
    env = {**os.environ, "PYTHONPATH": REPO}
    result = subprocess.run([sys.executable, "-m", "apps.train", "--dry_run"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: the package 'models' at {tmp_path / 'models'} shadows layerwise's model zoo "
        f"({os.path.join(REPO, 'models')}): run from another directory, or use the installed command "
        "(layerwise-train, layerwise-export, ...)"
    ]


def test_the_installed_commands_run_from_anywhere(tmp_path):
    """``pip install`` puts ``layerwise-train`` & co. on the PATH (setup.cfg's console_scripts);
    they find the installed apps and zoo whatever the working directory holds."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("x = 1\n")
    command = shutil.which("layerwise-train", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    assert command, "layerwise-train is not installed: pip install -e . (README)"
    result = subprocess.run([command, "--dry_run"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run: the command is valid" in result.stdout


def test_the_configuration_is_the_ground_floor():
    """``layerwise.config`` imports nothing of the project but ``layerwise.errors`` (and itself):
    every other package reads its settings from it, none is below it."""
    graph, _ = import_graph()
    for module, targets in graph.items():
        if module.startswith("layerwise.config"):
            above = {t for t in targets if not t.startswith(("layerwise.config", "layerwise.errors"))}
            assert not above, (module, above)
