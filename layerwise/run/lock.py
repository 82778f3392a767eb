"""An exclusive lock on a run directory, held for a whole run and for export and report writes.

Two processes writing one run directory corrupt it without a word: one's ``config.json`` beside
the other's weights, a stage trained on another run's previous stage, records written twice.
:func:`workdir_lock` holds ``fcntl.flock(LOCK_EX)`` on ``WORKDIR/.lock`` (flock(2): an advisory
lock on the open file, released by the kernel when the file is closed or the process ends, however
it ends). A lock left by a killed process therefore never blocks the next run: there is no stale
state to clean up. The file holds the holder's pid and what it is doing, for the refusal message;
its content is informative only, the kernel's lock is the truth.

The lock is re-entrant within a process (``apps.train`` holds it around ``layerwise.fit``, which
takes it too), and never waits: a second process is refused at once with one line naming the
holder. On NFS, Linux implements flock with the server's byte-range locks (flock(2), "NFS
details"), so processes on different machines exclude each other where the server supports locks.
A workdir on another file system (``gs://...``, see ``layerwise.run.files``) has no such lock:
there, one process at a time is the user's promise.

Example:
    >>> with workdir_lock("runs/demo", "training"):
    ...     ...   # nobody else writes runs/demo meanwhile
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from typing import Iterator

from layerwise.errors import StorageError, WorkdirBusyError
from layerwise.run.files import is_local

LOCK_FILE = ".lock"

# Locks this process holds: real path -> [file descriptor, depth]. flock excludes two open files
# even in one process, so a nested request reuses the descriptor it already holds.
_held: dict[str, list[int]] = {}


def _holder(path: str) -> str:
    """Who holds the lock at ``path``, as its file says (``pid 123, training since 10:02``)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.loads(f.read() or "{}")
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return f"pid {int(info['pid'])}, {info['purpose']} since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its pid yet"


def _open(path: str, workdir: str) -> int:
    """A descriptor of the lock file: read-write (created if needed), else read-only (flock works
    on either); a directory where neither is possible is a StorageError."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise StorageError(f"cannot use {workdir} as a run directory ({e.strerror}); pass another --workdir") from None
        try:
            return os.open(path, os.O_RDONLY)
        except OSError:
            raise StorageError(
                f"cannot write in {workdir} ({e.strerror}); make it writable, or copy the run to a writable place"
            ) from None


@contextlib.contextmanager
def workdir_lock(workdir: str, purpose: str) -> Iterator[None]:
    """Holds the run directory ``workdir`` exclusively for the ``with`` block.

    Args:
        workdir: an existing directory.
        purpose: what the holder does (``training``, ``exporting``, ``writing the report``), shown
            to a process that is refused.

    Raises:
        WorkdirBusyError: another process holds it; the message names its pid.
        StorageError: the lock file can be neither created nor opened.
    """
    if not is_local(workdir):  # object stores have no advisory locks
        yield
        return
    key = os.path.realpath(workdir)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    path = os.path.join(workdir, LOCK_FILE)
    fd = _open(path, workdir)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise WorkdirBusyError(
            f"{workdir} is in use by another process ({_holder(path)}); wait for it to finish, or use "
            "another directory (two processes writing one run corrupt it)"
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "purpose": purpose, "since": time.time()}).encode())
    except OSError:
        pass  # a read-only lock file: the lock holds, only the message loses the pid
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # releases the lock
