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
        for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
            lines += block.replace("\\\n", " ").splitlines()
        lines += re.findall(r"`(python -m apps\.\w[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            for part in line.split("&&"):
                part = part.split(" #")[0].strip()
                if part in failing:
                    continue
                if part.startswith("python -m apps.") and (os.path.relpath(path, REPO), part) not in found:
                    found.append((os.path.relpath(path, REPO), part))
    return found


COMMANDS = documented_commands()


def test_the_docs_have_commands():
    assert any("apps.train" in command for _, command in COMMANDS)


def test_every_documented_bad_input_is_a_tested_case():
    """The bad-input table of docs/trust.md shows only cases that tests/test_cli.py runs."""
    from test_cli import BAD_FLAGS, BAD_INPUT_BY_APP

    def normalized(args):
        args = [a.replace("{tmp}", "runs") for a in args]
        if "--workdir" in args:
            i = args.index("--workdir")
            del args[i: i + 2]
        return args

    tested = {(" ".join(["apps.train"] + flags), message) for flags, message in BAD_FLAGS}
    tested |= {(" ".join(normalized(args)), message) for args, message in BAD_INPUT_BY_APP}
    rows = bad_input_rows()
    assert len(rows) >= 10
    for command, message in rows:
        assert (command.removeprefix("python -m "), message) in tested, command


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
