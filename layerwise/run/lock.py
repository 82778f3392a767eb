"""An exclusive lock on a run directory, held for a whole run and for export and report writes.

Two processes writing one run directory corrupt it without a word: one's ``config.json`` beside
the other's weights, a stage trained on another run's previous stage, records written twice.
:func:`workdir_lock` holds ``fcntl.flock(LOCK_EX)`` on ``WORKDIR/.lock`` (flock(2): an advisory
lock on the open file, released by the kernel when the file is closed or the process ends, however
it ends). A lock left by a killed process therefore never blocks the next run: there is no stale
state to clean up. The file holds the holder's pid and what it is doing, for the refusal message;
its content is informative only, the kernel's lock is the truth.

flock excludes two open files but not two threads sharing one, and a process holds one descriptor
per directory, so this module also keeps a registry of the directories it holds (by real path: a
symlink to a held directory is the same directory), guarded by a ``threading.Lock``, with the
thread holding each. The lock is re-entrant within that thread (``apps.train`` holds it around
``layerwise.fit``, which takes it too) and excludes every other thread of the process as it does
another process. It never waits: a second process or thread is refused at once with one line
naming the holder. On NFS, Linux implements flock with the server's byte-range locks (flock(2), "NFS
details"), so processes on different machines exclude each other where the server supports locks.
A workdir on another file system (``gs://...``, see ``layerwise.files``) has no such lock:
there, one process at a time is the user's promise.

Example:
    >>> with workdir_lock("runs/demo", "training"):
    ...     ...   # nobody else writes runs/demo meanwhile
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import threading
import time
from typing import Iterator

from layerwise.errors import StorageError, WorkdirBusyError
from layerwise.files import is_local

LOCK_FILE = ".lock"



@dataclasses.dataclass
class _Hold:
    """A lock this process holds: its descriptor, the thread holding it and how deeply."""

    fd: int
    thread: threading.Thread
    purpose: str
    since: float
    depth: int = 1

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"thread {self.thread.name!r} of this process, {self.purpose} since {since}"


# Locks this process holds, by real path. flock excludes two open files even in one process, so a
# nested request of the holding thread reuses the descriptor it holds; other threads are refused.
_held: dict[str, _Hold] = {}
_held_guard = threading.Lock()  # one thread at a time reads or changes _held (and takes flocks)


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
            to a process or thread that is refused.

    Raises:
        WorkdirBusyError: another process (the message names its pid) or another thread of this
            process (named) holds it.
        StorageError: the lock file can be neither created nor opened.
    """
    if not is_local(workdir):  # object stores have no advisory locks
        yield
        return
    key = os.path.realpath(workdir)
    with _held_guard:
        hold = _held.get(key)
        if hold is None:
            hold = _held[key] = _acquire(workdir, purpose)
        elif hold.thread is threading.current_thread():
            hold.depth += 1
        else:
            raise WorkdirBusyError(
                f"{workdir} is in use by another thread ({hold.describe()}); wait for it to finish, or use another "
                "directory (two writers of one run corrupt it)"
            )
    try:
        yield
    finally:
        with _held_guard:
            hold.depth -= 1
            if hold.depth == 0:
                del _held[key]
                os.close(hold.fd)  # releases the lock


def _acquire(workdir: str, purpose: str) -> _Hold:
    """Takes the flock of ``workdir`` for the current thread, or refuses at once."""
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
    hold = _Hold(fd, threading.current_thread(), purpose, time.time())
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "purpose": purpose, "since": hold.since}).encode())
    except OSError:
        pass  # a read-only lock file: the lock holds, only the message loses the pid
    return hold
