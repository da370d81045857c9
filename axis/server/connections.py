"""What keeps connections from exhausting the server: a cap below the descriptor limit, and a
log that does not flood when the system runs out of resources anyway.

Every connection holds a file descriptor, and so do the database, the blobs being read, the
verification workers' pipes and the push process's sockets. Past the process's descriptor limit
``accept()`` fails, the store cannot open a file and requests end in 500s. So the listener takes
at most ``cap`` connections, ``cap`` being below the limit by a reserve for everything else; a
connection beyond it is answered ``503 request.overloaded`` at once and closed. Idle and
slowly-sent connections are closed by aiohttp's keep-alive timeout (``[server] idle_timeout``),
which runs from a connection's start and from each answer, whatever arrives meanwhile; a body
that stops arriving is cut by ``[server] body_timeout`` (``app.read_body``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger("axis.server")
RESERVE = 256
"""Descriptors kept for the store, blobs, workers and the push process when the cap is derived."""
LOW_HEADROOM = 0.9
"""Open descriptors above this share of the limit make ``/readyz`` fail."""
REPEAT_WINDOW = 10.0
"""Seconds during which the same loop error is logged once."""


def descriptor_limit() -> int:
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def open_descriptors() -> int | None:
    """How many descriptors the process holds now (None where /proc is not there)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


def derived_cap(configured: int, limit: int) -> int:
    """``configured`` when set, else the descriptor limit less the reserve (at least 16)."""
    return configured if configured > 0 else max(16, limit - RESERVE)


OVERLOADED = (
    "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\nRetry-After: 5\r\n"
    "Connection: close\r\nContent-Length: {length}\r\n\r\n{body}"
)


def _overloaded_answer() -> bytes:
    body = json.dumps(
        {
            "type": "urn:axis:refusal:request.overloaded",
            "title": "Service Unavailable",
            "status": 503,
            "code": "request.overloaded",
            "detail": "the axis holds as many connections as it may; retry shortly",
        }
    )
    return OVERLOADED.format(length=len(body), body=body).encode()


@dataclass
class Connections:
    """The connections a listener holds, up to ``cap``."""

    cap: int
    open: int = 0
    refused: int = 0
    answer: bytes = field(default_factory=_overloaded_answer)

    def protocol(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server``: ``factory``'s protocol, or a refusal."""
        return lambda: _Capped(self, factory)


class _Capped(asyncio.Protocol):
    """aiohttp's protocol for one connection, created only once the connection is admitted."""

    def __init__(self, connections: Connections, factory: Callable[[], asyncio.Protocol]) -> None:
        self.connections, self.factory = connections, factory
        self.inner: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        connections = self.connections
        if connections.open >= connections.cap:
            connections.refused += 1
            assert isinstance(transport, asyncio.Transport)
            transport.write(connections.answer)
            transport.close()
            return
        connections.open += 1
        self.inner = self.factory()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.inner is not None:
            self.connections.open -= 1
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()


class CappedSite(web.TCPSite):
    """``web.TCPSite`` whose connections go through ``connections``."""

    def __init__(self, runner: web.BaseRunner, connections: Connections, *args: Any, **kwargs: Any) -> None:
        super().__init__(runner, *args, **kwargs)
        self.connections = connections

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            self.connections.protocol(server),
            self._host,
            self._port,
            ssl=self._ssl_context,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


@dataclass
class QuietLoopErrors:
    """A loop exception handler that logs each kind of error once per ``REPEAT_WINDOW`` seconds
    (then how many were left out): ``accept() out of system resource`` repeats for every
    connection attempt while descriptors are exhausted, 55 MB of log in 20 s otherwise."""

    default: Callable[[dict[str, Any]], None]
    seen: dict[str, tuple[float, int]] = field(default_factory=dict)

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        key = f"{context.get('message')}:{type(context.get('exception')).__name__}"
        now = time.monotonic()
        last, skipped = self.seen.get(key, (-REPEAT_WINDOW, 0))
        if now - last < REPEAT_WINDOW:
            self.seen[key] = (last, skipped + 1)
            return
        self.seen[key] = (now, 0)
        if skipped:
            context = {**context, "message": f"{context.get('message')} ({skipped} more like it in {now - last:.0f} s)"}
        self.default(context)


class QuietBadRequests(logging.Filter):
    """aiohttp logs a request it cannot parse (bad method, bad header, stray bytes) at ERROR with a
    traceback; anyone on the network can send one, so it becomes one INFO line saying why."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = (error.message or type(error).__name__).strip().splitlines()[0].rstrip(":")
            record.msg = f"{record.msg} (answered {error.code}): %s"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()), reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


QUIET_BAD_REQUESTS = QuietBadRequests()
