"""The connections of a run's server, held to a fixed number so that no client, with or without
the key, can take the file descriptors the training needs (checkpoints, logs, the plot, the
data files and torch's own).

At most ``MAX_CONNECTIONS`` (64) are open at once: a few studios and OpenAI clients use a
handful each (a long poll, a reply being written, a command), so 64 is room for a dozen
attached clients and still a small share of any descriptor limit. When a new connection
would pass the cap, the oldest one that is not answering a request with the key (an idle or
half-sent connection, keyless ones first) is closed to make room; when every open connection
is answering such a request, the newcomer is closed at once, unread. A flood of connections
therefore costs the run at most ``MAX_CONNECTIONS`` + ``BACKLOG`` descriptors, whatever its size.

Requests the HTTP parser refuses (a malformed or oversized request line or header) are
answered in OpenAI's error shape, never echoing what was sent (it may hold the key), and
never logged with a traceback. Bodies are never inflated: a compressed body is refused by
the API (see ``RunService.guard``), so a small upload cannot become a large one here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import weakref

from aiohttp import web

MAX_CONNECTIONS = 64
BACKLOG = 64  # connections the kernel holds for us, and the most accepted in one go
FD_RESERVE = 256  # descriptors kept for the run itself (a nano run on a CPU uses about 15)
MAX_LINE_BYTES = 8190  # a request line, and each header
IDLE_CONNECTION_S = 15.0  # a connection that sends no (complete) request is closed after this long
LINGER_S = 2.0  # an unread body is read and dropped this long, so the client sees the answer

_quiet = logging.getLogger("gemma_core.serve.connections")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False  # a client's malformed request is not this process's error


def connection_cap() -> int:
    """``MAX_CONNECTIONS``, or fewer where the descriptor limit is too low to keep the reserve.
    The soft limit is raised to the hard one first, where the system allows it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft - FD_RESERVE - 2 * BACKLOG))


class Connection(web.RequestHandler):
    """One client connection: never inflates a body, answers what the parser refuses in
    OpenAI's shape, and tells the cap whether it may be closed to make room."""

    def __init__(self, cap: "ConnectionCap", server: web.Server, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(server, loop=loop, keepalive_timeout=IDLE_CONNECTION_S, access_log=None,
                         logger=_quiet, max_line_size=MAX_LINE_BYTES, max_field_size=MAX_LINE_BYTES, auto_decompress=False,
                         lingering_time=LINGER_S)
        self.cap = cap
        self.trusted = False  # has sent the key
        self.busy = 0  # requests with the key being answered now

    def connection_lost(self, exc: BaseException | None) -> None:
        self.cap.forget(self)
        super().connection_lost(exc)

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("the reply had begun; the connection is closed instead")
        if status == 400:
            body = refusal(400, f"the request line or a header is malformed or longer than "
                                f"{MAX_LINE_BYTES:,} bytes (or there are too many headers)", code="bad_request")
        elif status == 504:
            body = refusal(504, "the request took too long", kind="server_error", code="timeout")
        else:
            body = refusal(status, "internal error while answering; the run is unaffected",
                           kind="server_error")
        response = web.Response(text=json.dumps(body), status=status, content_type="application/json")
        response.force_close()
        return response


@contextlib.contextmanager
def answering_with_key(request: web.Request):
    """While a request that carried the key (or a signed-in page's session) is answered, its
    connection is never closed to make room for others: a studio's websocket lives in one."""
    connection = request.protocol
    if not isinstance(connection, Connection):
        yield
        return
    connection.trusted = True
    connection.busy += 1
    try:
        yield
    finally:
        connection.busy -= 1


def refusal(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


class _Refused(asyncio.Protocol):
    """A connection past the cap: closed unread."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.abort()


class ConnectionCap:
    """Makes ``Connection``s for ``server`` while fewer than ``limit`` are open."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self.server, self.limit = server, limit
        self._open: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Connection: None, oldest first

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self.limit and not self._make_room():
            return _Refused()
        connection = Connection(self, self.server, asyncio.get_running_loop())
        self._open[connection] = None
        return connection

    def forget(self, connection: Connection) -> None:
        self._open.pop(connection, None)

    def _make_room(self) -> bool:
        # One still being made has no transport yet to close: it is left alone.
        idle = [c for c in self._open if not c.busy and c.transport is not None]
        if not idle:
            return False
        victim = next((c for c in idle if not c.trusted), idle[0])
        self.forget(victim)
        victim.force_close()
        return True


class CappedSite(web.BaseSite):
    """A TCP site whose connections ``ConnectionCap`` makes."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, limit: int) -> None:
        super().__init__(runner, backlog=BACKLOG)
        self._host, self._port, self._limit = host, port, limit

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        cap = ConnectionCap(self._runner.server, self._limit)
        self._server = await asyncio.get_running_loop().create_server(
            cap, self._host, self._port, backlog=self._backlog, reuse_address=True)
