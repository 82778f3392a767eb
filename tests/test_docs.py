"""The docs do not rot: every ``python -m apps.*`` command (``bash`` blocks and inline code) of README.md and
docs/*.md is checked with ``--dry_run`` (flags parse, names exist, the configuration validates),
and docs/cli.md matches the flag definitions."""

import glob
import os
import re
import shlex

import pytest

from conftest import REPO, run_cli

DOC_FILES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))


def documented_commands() -> list[tuple[str, str]]:
    found = []
    for path in DOC_FILES:
        text = open(path).read()
        lines = []
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            lines += block.replace("\\\n", " ").splitlines()
        lines += re.findall(r"`(python -m apps\.\w[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part.startswith("python -m apps.") and (os.path.relpath(path, REPO), part) not in found:
                    found.append((os.path.relpath(path, REPO), part))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert any("apps.train" in command for _, command in COMMANDS)


@pytest.mark.slow
@pytest.mark.parametrize("doc, command", COMMANDS, ids=[f"{d}:{c[10:60]}" for d, c in COMMANDS])
def test_documented_command_is_valid(doc, command):
    args = shlex.split(command)[2:]  # drop "python -m"
    result = run_cli(*args, "--dry_run", timeout=300)
    assert result.returncode == 0, f"{doc}: {command}\n{result.stderr[-2000:]}"
    assert "dry run: the command is valid" in result.stdout


@pytest.mark.slow
def test_cli_reference_is_up_to_date():
    result = run_cli("apps.docs", "--check", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
