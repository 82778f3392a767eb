"""The docs do not rot: every ``python -m apps.*`` command (``bash`` and untagged blocks, and inline code) of
README.md and docs/*.md is checked with ``--dry_run`` (flags parse, names exist, the configuration validates),
and docs/cli.md matches the flag definitions."""

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, run_cli

# Fenced blocks, matched opening and closing fence together (a bare ``` also closes blocks).
# Shell blocks are ```bash and untagged ones; a ```text block holds a sketch that cannot run as
# written (a model the reader has yet to register, a file an earlier command writes).
FENCED_BLOCK = r"```(\w*)\n(.*?)```"
SHELL_TAGS = ("bash", "")
DOC_FILES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
TRUST = os.path.join(REPO, "docs", "trust.md")


def bad_input_rows() -> list[tuple[str, str]]:
    """``(command, message)`` rows of the bad-input table in docs/trust.md (commands that fail)."""
    text = open(TRUST).read().split("## Bad input", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `(python -m apps\.[^`]*)` \| (.+?) \|$", text, flags=re.M)


def documented_commands() -> list[tuple[str, str]]:
    failing = {command for command, _ in bad_input_rows()}
    found = []
    for path in DOC_FILES:
        text = open(path).read()
        lines = []
        for tag, block in re.findall(FENCED_BLOCK, text, flags=re.S):
            if tag in SHELL_TAGS:
                lines += block.replace("\\\n", " ").splitlines()
        lines += re.findall(r"`(python -m apps\.\w[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part in failing or part.endswith("--help"):  # --help is tested by test_cli (no TensorFlow)
                    continue
                if part.startswith("python -m apps.") and (os.path.relpath(path, REPO), part) not in found:
                    found.append((os.path.relpath(path, REPO), part))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert any("apps.train" in command for _, command in COMMANDS)
    apps = {name[:-3] for name in os.listdir(os.path.join(REPO, "apps")) if name.endswith(".py")}
    for doc, command in COMMANDS:  # whole commands (continuation lines joined) of existing apps
        words = shlex.split(command)
        assert words[:2] == ["python", "-m"] and words[2].removeprefix("apps.") in apps, (doc, command)
        assert "\\" not in command and "python -m" not in command[1:], (doc, command)
    # every app command of every fenced block except ```text (and ```python) is checked, or is a
    # bad-input case: each command line starts one of the collected commands
    collected = [c for _, c in COMMANDS] + [c for c, _ in bad_input_rows()]
    for path in DOC_FILES:
        with open(path) as f:
            blocks = re.findall(FENCED_BLOCK, f.read(), flags=re.DOTALL)
        for tag, block in blocks:
            if tag in ("text", "python"):
                continue
            for line in block.splitlines():
                for part in line.split("&&"):
                    start = part.split(" #")[0].strip().rstrip("\\").strip()
                    if start.startswith("python -m apps."):
                        assert any(c.startswith(start) for c in collected), (os.path.relpath(path, REPO), start)


def test_every_documented_bad_input_is_a_tested_case():
    """The bad-input table of docs/trust.md shows only cases that tests/test_cli.py runs."""
    from test_cli import BAD_FLAGS, BAD_INPUT_BY_APP

    def normalized(args):
        if "{tmp}/w" in args:  # a throwaway workdir, not part of the case
            i = args.index("{tmp}/w")
            args = args[: i - 1] + args[i + 1:]
        return [a.replace("{tmp}", "runs") for a in args]

    tested = {(" ".join(["apps.train"] + flags), message) for flags, message in BAD_FLAGS}
    tested |= {(" ".join(normalized(args)), message) for args, message in BAD_INPUT_BY_APP}
    rows = bad_input_rows()
    assert len(rows) >= 10
    for command, message in rows:
        assert (command.removeprefix("python -m "), message) in tested, command


@pytest.fixture(scope="module")
def dry_runs() -> dict[str, dict]:
    """Every documented command dry-run, one process per app: command -> code/stdout/stderr."""
    by_app: dict[str, list[str]] = {}
    for _, command in COMMANDS:
        by_app.setdefault(shlex.split(command)[2], []).append(command)
    results = {}
    for app, commands in by_app.items():
        argvs = [shlex.split(c)[3:] for c in commands]  # drop "python -m APP"
        proc = subprocess.run(
            [sys.executable, os.path.join(REPO, "tests", "dry_run_batch.py"), app, json.dumps(argvs)],
            cwd=REPO, capture_output=True, text=True, timeout=600,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        results.update(zip(commands, json.loads(proc.stdout.strip().splitlines()[-1])))
    return results


def python_examples() -> list[tuple[str, str]]:
    """``(doc, code)``: every python block of docs/python_api.md (as one script, in order) and each
    README block marked ``<!-- run by tests/test_docs.py -->``."""
    readme = open(os.path.join(REPO, "README.md")).read()
    marked = re.findall(r"<!-- run by tests/test_docs.py -->\n```python\n(.*?)```", readme, flags=re.S)
    api = re.findall(r"```python\n(.*?)```", open(os.path.join(REPO, "docs", "python_api.md")).read(), flags=re.S)
    return [("README.md", code) for code in marked] + [("docs/python_api.md", "\n".join(api))]


def test_the_readme_script_is_short():
    (code,) = [code for doc, code in python_examples() if doc == "README.md"]
    assert "layerwise.split_model(model, 4)" in code and "EarlyStopping" in code and "load_model" in code
    assert len(code.strip().splitlines()) <= 20


@pytest.mark.slow
@pytest.mark.parametrize("doc, code", python_examples(), ids=lambda v: v if v.endswith(".md") else "")
def test_python_examples_run(doc, code, tmp_path):
    """The examples run as written, in a fresh directory, in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO})
    assert proc.returncode == 0, f"{doc}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}:{c[10:60]}" for d, c in COMMANDS])
def test_documented_command_is_valid(dry_runs, doc, command):
    result = dry_runs[command]
    assert result["code"] == 0, f"{doc}: {command}\n{result['stderr'][-2000:]}"
    assert "dry run: the command is valid" in result["stdout"], f"{doc}: {command}\n{result['stdout'][-2000:]}"


@pytest.mark.slow
def test_cli_reference_is_up_to_date():
    result = run_cli("apps.docs", "--check", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
