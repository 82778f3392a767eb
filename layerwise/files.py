"""Run-directory I/O through ``tf.io.gfile``, so that a workdir may live on any file system
TensorFlow reads and writes: a local path, ``gs://bucket/run`` (built into TensorFlow), ``s3://``
or ``hdfs://`` (with the ``tensorflow-io`` package), ``ram://`` (in memory, for tests).

Atomic replacement is a write to a temporary name and a rename: a reader sees the old file or
the whole new one where the file system renames atomically (local disks; on object stores a
rename is a copy, and the checksums of ``layerwise.run.checkpoints`` catch a torn file). Each
write has its own temporary name, so two writers of one file (threads of one process included)
never write into each other's temporary file: the last rename wins, whole. Local
files are also ``fsync``-ed before the rename, so a power cut cannot leave a renamed but empty
file. See https://www.tensorflow.org/api_docs/python/tf/io/gfile.
"""

from __future__ import annotations

import os
import posixpath
import uuid

import tensorflow as tf

from layerwise.errors import StorageError

gfile = tf.io.gfile
OpError = tf.errors.OpError  # what gfile raises (NotFoundError, PermissionDeniedError, ...)


def is_local(path: str) -> bool:
    """True for a path of the local file system (no ``scheme://``)."""
    return "://" not in path


def join(path: str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/``-joined for URLs (``gs://b/run`` + ``config.json``)."""
    return os.path.join(path, *parts) if is_local(path) else posixpath.join(path, *parts)


def exists(path: str) -> bool:
    return gfile.exists(path)


def isdir(path: str) -> bool:
    return gfile.isdir(path)


def listdir(path: str) -> list[str]:
    """The entries of directory ``path`` (without trailing ``/``), or ``[]`` when it is none."""
    if not gfile.isdir(path):
        return []
    return sorted(name.rstrip("/") for name in gfile.listdir(path))


def makedirs(path: str) -> None:
    gfile.makedirs(path)


def remove(path: str) -> None:
    """Removes a file; a file already gone is fine."""
    try:
        gfile.remove(path)
    except tf.errors.NotFoundError:
        pass


def rmtree(path: str) -> None:
    """Removes a directory tree; one already gone is fine."""
    if gfile.exists(path):
        gfile.rmtree(path)


def rename(source: str, target: str) -> None:
    """Renames ``source`` to ``target``, replacing it."""
    gfile.rename(source, target, overwrite=True)


def read_bytes(path: str) -> bytes:
    """The bytes of file ``path``.

    Raises:
        FileNotFoundError: no such file.
        OSError: it cannot be read.
    """
    try:
        with gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.NotFoundError as e:
        raise FileNotFoundError(2, "No such file or directory", path) from e
    except tf.errors.OpError as e:
        raise OSError(first_line(e)) from e


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def first_line(error: Exception) -> str:
    """The first line of an ``OSError``'s or ``tf.errors.OpError``'s reason."""
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    return str(reason).splitlines()[0][:200] if reason else type(error).__name__


def temporary_name(path: str) -> str:
    """A name beside ``path`` that no other writer uses, in this process or another:
    ``path.tmp-<pid>-<random hex>`` (two threads of one process share the pid)."""
    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex}"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the whole new one.

    Raises:
        StorageError: it could not be written (full disk, permissions, an unreachable bucket);
            ``path`` is as it was.
    """
    tmp = temporary_name(path)
    try:
        parent = os.path.dirname(path) if is_local(path) else posixpath.dirname(path)
        if parent:
            gfile.makedirs(parent)
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        if is_local(tmp):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        gfile.rename(tmp, path, overwrite=True)
    except (OSError, tf.errors.OpError) as e:
        raise StorageError(
            f"could not write {path} ({first_line(e)}); free disk space or fix permissions, then "
            "rerun the same command: everything written before is intact and the run resumes"
        ) from e
    finally:
        try:
            if gfile.exists(tmp):
                gfile.remove(tmp)
        except tf.errors.OpError:
            pass


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
