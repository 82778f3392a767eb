"""The code's shape: no import cycle (between modules or between packages), no import upward across
the floors of docs/concepts.md, no import hidden in a function to dodge one, no module
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
    wrong = sorted(f"{module} -> {target}" for module, targets in graph.items() for target in targets
                   if module.split(".")[0] == "layerwise" and target.split(".")[0] in ("apps", "models")
                   or module.split(".")[0] == "models" and target.split(".")[0] == "apps")
    assert not wrong, "imports against the direction apps -> models -> layerwise:\n" + "\n".join(wrong)


# ----------------------------------------------------------------------------- packages
# The floors of layerwise (docs/concepts.md draws them): a package imports only packages on the
# floors below its own. On the ground floor and among the top verbs, modules may also import each
# other (no cycle among them: test_no_package_cycles).
FLOORS = (
    ("ground", ("layerwise.errors", "layerwise.config", "layerwise.files", "layerwise.precision",
                "layerwise.registry", "layerwise.distribute", "layerwise.onednn")),
    ("building blocks and data", ("layerwise.nn", "layerwise.data")),
    ("analysis, serving, bookkeeping", ("layerwise.analysis", "layerwise.serving", "layerwise.run")),
    ("training", ("layerwise.training",)),
    ("top verbs", ("layerwise.restore", "layerwise.export", "layerwise.tuning", "layerwise")),
)
SHARED_FLOORS = ("ground", "top verbs")
# Imports that break the layering today and are being removed: (module, imported module).
# None today; an entry here must be removed by the change that removes its import.
PENDING: set[tuple[str, str]] = set()


def package_of(module: str) -> str:
    """The node of the package graph ``module`` belongs to: ``layerwise.<sub-package>`` for a
    module of a sub-package, the module itself for a top-level module (and ``layerwise``)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def package_graph() -> dict[tuple[str, str], list[str]]:
    """``(package, imported package) -> ["module -> imported module", ...]`` within ``layerwise``,
    without the :data:`PENDING` imports."""
    graph, _ = import_graph()
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            source, imported = package_of(module), package_of(target)
            inside = module.split(".")[0] == target.split(".")[0] == "layerwise"
            if inside and source != imported and (module, target) not in PENDING:
                edges.setdefault((source, imported), []).append(f"{module} -> {target}")
    return edges


def test_pending_exceptions_are_still_needed():
    graph, _ = import_graph()
    gone = sorted(f"{m} -> {t}" for m, t in PENDING if t not in graph.get(m, set()))
    assert not gone, f"these imports are gone: remove them from PENDING in tests/test_structure.py: {gone}"


def test_no_package_cycles():
    """The sub-packages and top-level modules of ``layerwise`` import each other one way only."""
    edges = package_graph()
    nodes = {node for edge in edges for node in edge}
    graph = {node: {b for a, b in edges if a == node} for node in nodes}
    found = cycles(graph)
    detail = [f"{a} -> {b}: {', '.join(sorted(edges[a, b]))}" for cycle in found for a in cycle for b in cycle
              if (a, b) in edges]
    assert not found, f"package cycles {found}, through:\n" + "\n".join(detail)


def test_every_package_has_a_floor():
    graph, _ = import_graph()
    placed = {package for _, packages in FLOORS for package in packages}
    homeless = sorted({package_of(m) for m in graph if m.startswith("layerwise")} - placed)
    assert not homeless, f"add these to FLOORS in tests/test_structure.py (and to docs/concepts.md): {homeless}"


def test_no_upward_imports():
    """Every import goes to a lower floor of :data:`FLOORS` (or stays within a shared floor)."""
    floor = {package: (i, name) for i, (name, packages) in enumerate(FLOORS) for package in packages}
    upward = []
    for (source, imported), imports in sorted(package_graph().items()):
        (i, name), (j, _) = floor.get(source, (len(FLOORS), "?")), floor.get(imported, (len(FLOORS), "?"))
        if j > i or (j == i and name not in SHARED_FLOORS):
            upward += [f"{line}  ({source} may not import {imported})" for line in sorted(imports)]
    assert not upward, "imports up or sideways between floors:\n" + "\n".join(upward)


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


MAX_LINES = 400


def test_no_module_is_over_400_lines():
    """House style: modules of 100-400 lines, one responsibility each."""
    long = sorted(f"{path.relative_to(REPO)}: {n} lines" for path in modules()
                  if (n := len(path.read_text().splitlines())) > MAX_LINES)
    assert not long, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(long)


MAX_FUNCTION_LINES = 60


def code_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines without its docstring (a public function's reference, such as ``fit``'s
    argument list, is not code a reader follows)."""
    lines = function.end_lineno - function.lineno + 1
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def test_no_function_is_over_60_lines():
    """House style: a function a reader can hold in view, in the library, the zoo and the apps."""
    long = sorted(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {code_lines(node)} lines"
                  for path in modules() for node in ast.walk(ast.parse(path.read_text()))
                  if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > MAX_FUNCTION_LINES)
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code (split them):\n" + "\n".join(long)
