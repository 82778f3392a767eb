"""Mutation check: break one behaviour at a time and run the tests that should notice.

Each mutant of ``tests/mutation/mutants.py`` replaces one exact piece of source text. For every
mutant this script copies the repository (the files ``git ls-files`` lists, tracked or new but
not ignored) to a temporary directory, applies the mutant there, runs the mutant's tests with
``python -m pytest -x -q`` in that copy and records whether they failed ("killed") or passed
("survived"). The working tree is never modified. A mutant whose original text is not found
exactly once is an error, so that the table cannot go stale silently after code moves.

Usage (from the repository root; not collected by pytest, not run in CI)::

    python tests/mutation/run.py                 # every mutant, after a baseline run
    python tests/mutation/run.py --list          # the table, without running anything
    python tests/mutation/run.py --only decoupled-gradient-leak --only wd-doubled
    python tests/mutation/run.py --jobs 2        # two mutants at a time (one copy each)

Exit status: 0 when every mutant was killed, 1 when some survived, 2 on errors (stale mutant,
a baseline test failing, a test id that collects nothing).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from mutants import MUTANTS, Mutant

# pytest exit codes: 0 passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error,
# 5 nothing collected. Only "passed" and "failed" say anything about a mutant.
PASSED, FAILED, NO_TESTS = 0, 1, 5


def repository_files(repo: str) -> list[str]:
    """Tracked and untracked-but-not-ignored files (what a commit of the work tree would hold)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.decode()
    return [f for f in out.split("\0") if f and os.path.isfile(os.path.join(repo, f))]


def copy_repository(repo: str, files: list[str], destination: str) -> None:
    for name in files:
        target = os.path.join(destination, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(repo, name), target)


def check_applies(mutant: Mutant, root: str) -> str:
    """The mutated text of ``mutant.file``; raises ValueError unless the original occurs once."""
    path = os.path.join(root, mutant.file)
    if not os.path.isfile(path):
        raise ValueError(f"{mutant.id}: {mutant.file} does not exist (re-target the mutant)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    count = text.count(mutant.original)
    if count != 1:
        raise ValueError(
            f"{mutant.id}: the original text occurs {count} times in {mutant.file} (needs exactly 1); "
            "the code changed: update the mutant"
        )
    if mutant.original == mutant.replacement:
        raise ValueError(f"{mutant.id}: the replacement equals the original")
    return text.replace(mutant.original, mutant.replacement)


def run_pytest(root: str, node_ids: list[str], timeout: float) -> tuple[int | None, str, float]:
    """``(exit code or None on timeout, output tail, seconds)`` of the tests in ``root``."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *node_ids],
            cwd=root, capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return None, out[-2000:], time.perf_counter() - start
    return proc.returncode, (proc.stdout + proc.stderr)[-2000:], time.perf_counter() - start


def run_mutant(mutant: Mutant, files: list[str], timeout: float, keep: bool) -> dict:
    work = tempfile.mkdtemp(prefix=f"mutant-{mutant.id}-")
    try:
        copy_repository(REPO, files, work)
        mutated = check_applies(mutant, work)
        with open(os.path.join(work, mutant.file), "w", encoding="utf-8") as f:
            f.write(mutated)
        code, tail, seconds = run_pytest(work, list(mutant.tests), timeout)
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    if code is None:
        status = "killed"  # a hang is a failure the tests notice (slowly)
        how = f"timeout after {timeout:.0f} s"
    elif code == PASSED:
        status, how = "survived", "all tests passed"
    elif code == FAILED:
        status = "killed"
        failed = [line for line in tail.splitlines() if line.startswith("FAILED")]
        how = failed[0][7:90] if failed else "a test failed"
    elif code < 0:  # the test process died of a signal (a crash in TensorFlow): noticed, loudly
        status, how = "killed", f"the tests crashed (signal {-code})"
    else:
        status, how = "error", f"pytest exit code {code}"
    return {"id": mutant.id, "status": status, "how": how, "seconds": seconds, "tail": tail}


def baseline(files: list[str], mutants: list[Mutant], timeout: float) -> None:
    """Every test the mutants name passes on the unmutated copy (else a kill means nothing)."""
    node_ids = list(dict.fromkeys(t for m in mutants for t in m.tests))
    work = tempfile.mkdtemp(prefix="mutant-baseline-")
    try:
        copy_repository(REPO, files, work)
        for mutant in mutants:
            check_applies(mutant, work)
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        env.pop("PYTHONPATH", None)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *node_ids],
            cwd=work, capture_output=True, text=True, timeout=timeout * max(1, len(node_ids)), env=env,
            check=False,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = (proc.stdout + proc.stderr).strip().splitlines()
    print(f"baseline: {len(node_ids)} tests, {summary[-1] if summary else ''} ({time.perf_counter() - start:.0f} s)")
    if proc.returncode != PASSED:
        print("\n".join(summary[-40:]))
        sys.exit(2)


def print_list(mutants: list[Mutant]) -> None:
    width = max(len(m.id) for m in mutants)
    for m in mutants:
        print(f"{m.id:<{width}}  {m.file:<26} {m.description}")
        for t in m.tests:
            print(f"{'':<{width}}    {t}")
    print(f"{len(mutants)} mutants")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="ID",
                        help="run only this mutant (repeatable; comma-separated ids work too)")
    parser.add_argument("--list", action="store_true", help="print the mutants and their tests, run nothing")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at a time (default 1)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per mutant's test run")
    parser.add_argument("--skip_baseline", action="store_true",
                        help="do not first check that the named tests pass unmutated")
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies (for debugging)")
    parser.add_argument("--verbose", action="store_true", help="print the tail of pytest's output for every mutant")
    args = parser.parse_args(argv)

    ids = {i for value in args.only for i in value.split(",") if i}
    known = {m.id for m in MUTANTS}
    if len(known) != len(MUTANTS):
        print("error: duplicate mutant ids", file=sys.stderr)
        return 2
    if ids - known:
        print(f"error: unknown mutant ids {sorted(ids - known)}; see --list", file=sys.stderr)
        return 2
    mutants = [m for m in MUTANTS if not ids or m.id in ids]
    if args.list:
        print_list(mutants)
        return 0

    files = repository_files(REPO)
    start = time.perf_counter()
    try:
        if not args.skip_baseline:
            baseline(files, mutants, args.timeout)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_mutant, m, files, args.timeout, args.keep): m for m in mutants}
        for future in concurrent.futures.as_completed(futures):
            mutant = futures[future]
            try:
                result = future.result()
            except ValueError as e:
                result = {"id": mutant.id, "status": "error", "how": str(e), "seconds": 0.0, "tail": ""}
            results.append(result)
            print(f"{result['status']:<8} {result['id']:<34} {result['seconds']:6.1f} s  {result['how']}", flush=True)
            if args.verbose:
                print(result["tail"])
    order = {m.id: i for i, m in enumerate(mutants)}
    results.sort(key=lambda r: order[r["id"]])
    total = time.perf_counter() - start

    print("\n| mutant | file | result | seconds |\n|---|---|---|---|")
    by_id = {m.id: m for m in mutants}
    for r in results:
        print(f"| {r['id']} | {by_id[r['id']].file} | {r['status']} | {r['seconds']:.0f} |")
    killed = sum(r["status"] == "killed" for r in results)
    survived = [r["id"] for r in results if r["status"] == "survived"]
    errors = [r["id"] for r in results if r["status"] == "error"]
    print(f"\nkilled {killed} of {len(results)} mutants: kill rate {killed / max(1, len(results)):.1%}; "
          f"total {total / 60:.1f} min")
    if survived:
        print("survived: " + ", ".join(survived))
    if errors:
        print("errors: " + ", ".join(errors))
        return 2
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
