"""A worker's side of `notifier serve --workers N` (the supervisor is `notifier.supervisor`).

- `HandedConnections` takes the connections the supervisor passes over the channel and serves
  them as if this process had accepted them.
- `Siblings` reaches the other workers over their Unix sockets: a long-polling request for a
  session of another worker (it came on a keep-alive connection first handed here for another
  session, which browsers do across tabs) is forwarded to its owner, and `/metrics` and
  `/api/v1/status` gather every worker's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from ..logs import get_logger
from ..metrics import merged
from ..worker_routing import WorkerRole, worker_of_sid

log = get_logger("notifier.workers")

# Connections taken per wake-up of the channel (each message carries one).
_PER_WAKE = 64
# A sibling that does not answer a scrape in this long is left out of it.
_SCRAPE_SECONDS = 2.0
# Headers that belong to one hop, not passed on when forwarding (RFC 9110 section 7.6.1).
_HOP_HEADERS = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Host",
    )
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class HandedConnections:
    """Reads the supervisor's channel: each message carries one accepted TCP socket."""

    def __init__(self, channel: socket.socket, serve: Callable[[], asyncio.BaseProtocol]) -> None:
        self._channel = channel
        self._serve = serve
        self._loop = asyncio.get_running_loop()
        self._pending: set[asyncio.Task[Any]] = set()
        # Called when the channel closes: the supervisor is gone, this worker stops too.
        self.closed_callback: Callable[[], None] = lambda: None
        channel.setblocking(False)

    def start(self) -> None:
        self._loop.add_reader(self._channel.fileno(), self._receive)
        self._channel.send(b"ready")

    def stop(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._channel.fileno())

    def _receive(self) -> None:
        for _ in range(_PER_WAKE):
            try:
                message, fds, _, _ = socket.recv_fds(self._channel, 16, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:
                self.stop()
                log.warning("supervisor_gone", detail="the supervisor's channel closed; this worker stops")
                self.closed_callback()
                return
            for fd in fds:
                connection = socket.socket(fileno=fd)
                connection.setblocking(False)
                task = self._loop.create_task(self._adopt(connection))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _adopt(self, connection: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._serve, connection)
        except OSError:  # the client left while it was being handed over
            connection.close()


class Siblings:
    """The other workers, over their Unix sockets."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self._forward: dict[int, aiohttp.ClientSession] = {}
        self._scrape: dict[int, aiohttp.ClientSession] = {}

    async def start(self) -> None:
        for index in self.role.siblings:
            self._forward[index] = _session(str(self.role.forward_socket(index)))
            self._scrape[index] = _session(str(self.role.scrape_socket(index)))

    async def stop(self) -> None:
        for session in (*self._forward.values(), *self._scrape.values()):
            await session.close()

    def engine_route(self, handle: Handler) -> Handler:
        """The `/socket.io/` route: requests for another worker's long-polling session go to
        it; everything else (websockets included: browsers never send those on a reused
        connection) is this worker's."""

        async def route(request: web.Request) -> web.StreamResponse:
            owner = worker_of_sid(request.query.get("sid"))
            if owner is None or owner == self.role.index or request.query.get("transport") != "polling":
                return await handle(request)
            session = self._forward.get(owner)
            if session is None:
                return await handle(request)  # not a worker of ours: this one says it is unknown
            try:
                return await _forwarded(request, session)
            except (TimeoutError, aiohttp.ClientError, OSError):
                # The owner is gone (restarting): its sessions went with it, so answering here
                # tells the client so, and it reconnects.
                return await handle(request)

        return route

    async def metrics(self, own: bytes) -> bytes:
        answers = await self._gather("/metrics")
        return merged([own, *answers.values()])

    async def statuses(self) -> dict[int, Any]:
        return {index: orjson.loads(body) for index, body in (await self._gather("/worker")).items()}

    async def _gather(self, path: str) -> dict[int, bytes]:
        async def one(index: int, session: aiohttp.ClientSession) -> tuple[int, bytes | None]:
            try:
                async with session.get(f"http://worker{path}", timeout=_timeout()) as response:
                    return index, await response.read() if response.status == 200 else None
            except (TimeoutError, aiohttp.ClientError, OSError):
                return index, None

        results = await asyncio.gather(*(one(i, s) for i, s in self._scrape.items()))
        return {index: body for index, body in results if body is not None}


def _session(path: str) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path), auto_decompress=False)


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=_SCRAPE_SECONDS)


async def _forwarded(request: web.Request, session: aiohttp.ClientSession) -> web.Response:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
    body = await request.read()
    async with session.request(
        request.method, f"http://worker{request.path_qs}", headers=headers, data=body
    ) as answer:
        payload = await answer.read()
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        return web.Response(status=answer.status, body=payload, headers=kept)
