"""HTTP requests with a total deadline: connecting, the status line, the headers and the body.

A socket timeout bounds each read, not the request: a server that sends one byte every 1.5 s
never trips ``timeout=2`` and keeps a caller waiting as long as it likes. Here a timer started
when the connection opens shuts the socket down at the deadline, whatever read is then under way
(the urllib handlers below build the connections, so the timer sees the socket), and the caller
gets :class:`DeadlineExceeded`.

urllib's handler API: https://docs.python.org/3/library/urllib.request.html#basehandler-objects.
"""

from __future__ import annotations

import dataclasses
import functools
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

CHUNK_BYTES = 64 * 1024


class DeadlineExceeded(TimeoutError):
    """The whole request did not finish within its deadline."""


class DeadlineRequest(urllib.request.Request):
    """A request that must be answered, body included, within ``timeout`` seconds of its creation."""

    def __init__(self, url: str, timeout: float, data: bytes | None = None, headers: dict | None = None):
        super().__init__(url, data=data, headers=headers or {})
        self.deadline = time.monotonic() + timeout
        self.expired = threading.Event()
        self._timers: list[threading.Timer] = []

    def remaining(self) -> float:
        """Seconds left (a small positive number once the deadline has passed: sockets refuse 0)."""
        return max(self.deadline - time.monotonic(), 1e-3)

    def watch(self, sock: socket.socket) -> None:
        """Shuts ``sock`` down at the deadline, ending any read or write then blocked on it."""
        timer = threading.Timer(self.deadline - time.monotonic(), self._expire, args=(sock,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _expire(self, sock: socket.socket) -> None:
        self.expired.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # already closed: nothing is waiting on it
            pass

    def finish(self) -> None:
        for timer in self._timers:
            timer.cancel()


class _Watched:
    """A connection whose socket the request's deadline watches from the moment it connects."""

    def __init__(self, *args, request: DeadlineRequest, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline_request = request

    def connect(self):
        super().connect()
        self._deadline_request.watch(self.sock)


class _HTTPConnection(_Watched, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Watched, http.client.HTTPSConnection):
    pass


class DeadlineHTTPHandler(urllib.request.HTTPHandler):
    """``http://`` through connections watched by the request's deadline."""

    def http_open(self, req):
        return self.do_open(functools.partial(_HTTPConnection, request=req), req)


class DeadlineHTTPSHandler(urllib.request.HTTPSHandler):
    """``https://`` through connections watched by the request's deadline."""

    def https_open(self, req):
        return self.do_open(functools.partial(_HTTPSConnection, request=req), req, context=self._context)


def _read_all(response: http.client.HTTPResponse) -> bytes:
    """The whole body, in chunks (each read ends at the deadline); a body shorter than its
    Content-Length raises ``IncompleteRead`` (``read(amt)`` alone returns what came)."""
    chunks = []
    while chunk := response.read(CHUNK_BYTES):
        chunks.append(chunk)
    body = b"".join(chunks)
    if response.length:  # bytes the Content-Length promised that never came
        raise http.client.IncompleteRead(body, response.length)
    return body


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Any
    body: bytes


def fetch(opener: urllib.request.OpenerDirector, request: DeadlineRequest) -> Answer:
    """The answer to ``request`` through ``opener``, error statuses included (a 4xx or 5xx body is
    read under the same deadline).

    Raises:
        DeadlineExceeded: the deadline passed before the whole answer arrived.
        urllib.error.URLError, OSError, http.client.HTTPException: as urllib raises them.
    """
    try:
        try:
            with opener.open(request, timeout=request.remaining()) as response:
                answer = Answer(response.status, response.reason, response.headers, _read_all(response))
        except urllib.error.HTTPError as error:
            answer = Answer(error.code, str(error.reason), error.headers or {}, _read_all(error.fp) if error.fp else b"")
    except (OSError, http.client.HTTPException):
        if request.expired.is_set():
            raise DeadlineExceeded() from None
        raise
    finally:
        request.finish()
    if request.expired.is_set():
        raise DeadlineExceeded()
    return answer
