"""The Engine.IO v4 server: the HTTP side of `/socket.io/` and the sessions' deadlines.

Requests: `GET ?EIO=4&transport=polling` opens a long-polling session; `GET` with its `sid`
polls, `POST` sends; `GET ?EIO=4&transport=websocket` opens a websocket session, or, with a
`sid`, upgrades a long-polling one. Every error is an HTTP status with the owner's JSON error
body; nothing a client sends raises past this module.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .aiohttp_adapter import ErrorBody, take_transport
from .codes import PARSE_ERROR, SHUTTING_DOWN, TRANSPORT_ERROR, WireCode
from .ids import new_sid
from .limits import ConnectionLimits, OpenConnections, decrement
from .packets import open_packet, text_frame
from .ratelimit import TokenBucket
from .session import EngineSession, SessionListener
from .timewheel import Deadlines
from .websocket import HandshakeError, WebSocketLink, WriteBatcher, accept_key, open_link

# Deadlines fire at most this late: the protocol's heartbeat is exact to well within it.
_RESOLUTION = 0.02
# How often long-polls are checked for clients that went away while waiting.
_POLL_CHECK = 0.25
_POLLING_CONTENT_TYPE = "text/plain; charset=UTF-8"

# (reason, detail, peer) -> a client's mistake, for the owner to log or count
Reporter = Callable[[str, str, str], None]


@dataclass(frozen=True)
class EngineOptions:
    ping_interval: float
    ping_timeout: float
    max_message_bytes: int
    max_backlog: int
    connect_timeout: float
    # A long-polling session with no poll for this long is closed (see EngineSession.poll_due).
    polling_gap: float = 5.0
    cors_origins: list[str] = field(default_factory=list)
    trusted_proxies: frozenset[str] = frozenset()
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    # Put before every sid: a process among several on one port names itself in its sids, so
    # whatever passes connections to them can route a long-polling request by its sid alone.
    sid_prefix: str = ""


class TransportError(Exception):
    """A request the Engine.IO protocol refuses: an HTTP status, a code and a message."""

    def __init__(self, status: int, code: WireCode, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


class EngineServer:
    """Every Engine.IO session of the process (the `SessionHost` of each)."""

    def __init__(
        self,
        options: EngineOptions,
        *,
        listen: Callable[[EngineSession], SessionListener],
        new_bucket: Callable[[], TokenBucket],
        report: Reporter,
        error_body: ErrorBody,
        admit: Callable[[], bool] = lambda: True,
        open_connections: OpenConnections | None = None,
    ) -> None:
        self.options = options
        self.ping_interval = options.ping_interval
        self.ping_timeout = options.ping_timeout
        self.connect_timeout = options.connect_timeout
        self.polling_gap = options.polling_gap
        self.max_backlog = options.max_backlog
        self.max_message_bytes = options.max_message_bytes
        self.sessions: dict[str, EngineSession] = {}
        # For the metrics: sessions ended, by reason; packets refused over a rate limit;
        # new sessions refused while the owner said it was busy, or over a connection limit.
        self.closes: Counter[str] = Counter()
        self.rate_limited = 0
        self.refused_busy = 0
        self.refused_limit = 0
        self.batcher = WriteBatcher()
        self.draining = False
        # Every connection of the process (shared with the runner, which counts HTTP ones),
        # and the sessions per peer that have not connected a namespace yet.
        self.open_connections = open_connections or OpenConnections()
        self._limits = options.limits
        self._pending_by_peer: Counter[str] = Counter()
        self._listen = listen
        self._new_bucket = new_bucket
        self._report = report
        self._error_body = error_body
        # Asked before each new session: False while the process is overloaded.
        self._admit = admit
        self.deadlines: Deadlines[EngineSession] = Deadlines(_RESOLUTION, self._fire)
        self._poll_check: asyncio.TimerHandle | None = None
        self._polling: set[EngineSession] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    # Lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._poll_check = self._loop.call_later(_POLL_CHECK, self._check_polls)
        self.deadlines.start(self._loop)

    def stop(self) -> None:
        if self._poll_check is not None:
            self._poll_check.cancel()
            self._poll_check = None
        self.deadlines.stop()
        self._loop = None

    async def drop_all(self, deadline: float = 3.0) -> None:
        """End every session without a goodbye, so that clients reconnect (to a restarted
        process or another node) and recover what they missed. New requests are refused."""
        self.draining = True
        for session in list(self.sessions.values()):
            session.drop(SHUTTING_DOWN)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        # Long-polls being answered finish on their own; wait for them, bounded.
        while self._polling and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    # SessionHost

    def now(self) -> float:
        loop = self._loop or asyncio.get_running_loop()
        return loop.time()

    def schedule(self, session: EngineSession, due: float) -> None:
        before = session.wheel_at
        if before != due:
            session.wheel_at = due
            self.deadlines.move(session, before, due)

    def awaiting_connect(self, session: EngineSession, awaiting: bool) -> None:
        if awaiting:
            self._pending_by_peer[session.peer] += 1
        else:
            decrement(self._pending_by_peer, session.peer)

    def forget(self, session: EngineSession, reason: str) -> None:
        if session.awaiting_connect:
            self.awaiting_connect(session, False)
        self.closes[reason] += 1
        self.sessions.pop(session.sid, None)
        self._polling.discard(session)
        if session.wheel_at is not None:
            self.deadlines.cancel(session, session.wheel_at)
            session.wheel_at = None

    def report(self, reason: str, detail: str, peer: str) -> None:
        self._report(reason, detail, peer)

    def count_rate_limited(self) -> None:
        self.rate_limited += 1

    def _fire(self, session: EngineSession) -> None:
        if session.closed:
            return
        session.wheel_at = None
        session.on_deadline(self.now())

    def _check_polls(self) -> None:
        assert self._loop is not None
        try:
            for session in [s for s in self._polling if _abandoned(s)]:
                # The client gave up on its poll: whatever that poll would have carried
                # would be lost, so the session ends and the client recovers on reconnect.
                session.close(TRANSPORT_ERROR, notify=False)
        finally:
            self._poll_check = self._loop.call_later(_POLL_CHECK, self._check_polls)

    # Sessions

    def _open(self, request: web.BaseRequest) -> EngineSession:
        if not self._admit():
            # Cheaper than a whole set-up: the client retries after its (jittered) backoff.
            self.refused_busy += 1
            raise TransportError(503, WireCode.BUSY, "the server is busy; retry shortly")
        limits = self._limits
        if self.open_connections.total > limits.max_connections:
            self.refused_limit += 1
            raise TransportError(
                503, WireCode.BUSY, "the server is at its connection limit; retry shortly", limits.retry_after
            )
        peer = self.peer(request)
        if self._pending_by_peer[peer] >= limits.max_pending_per_peer and peer not in limits.exempt:
            self.refused_limit += 1
            raise TransportError(
                429,
                WireCode.RATE_LIMITED,
                "too many sessions from your address are not connected yet; retry shortly",
                limits.retry_after,
            )
        sid = self.options.sid_prefix + new_sid()
        header = request.headers.get("Authorization")
        # Kept even when query tokens are refused: the refusal then says why.
        query_token = request.query.get("token")
        session = EngineSession(self, sid, peer, self._new_bucket(), header, query_token)
        self.sessions[sid] = session
        session.listener = self._listen(session)
        return session

    def _open_packet(self, sid: str, upgrades: list[str]) -> str:
        return open_packet(sid, upgrades, self.ping_interval, self.ping_timeout, self.max_message_bytes)

    def peer(self, request: web.BaseRequest) -> str:
        return peer_of(request, self.options.trusted_proxies)

    # HTTP

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp route for `/socket.io/`."""
        try:
            self._check_origin(request)
            if request.method == "OPTIONS":
                return self._response(request, 200, "")
            if self.draining:
                raise TransportError(503, WireCode.BUSY, "the server is shutting down")
            return await self._route(request)
        except TransportError as exc:
            self._report("bad_transport_request", exc.message, self.peer(request))
            body = self._error_body(exc.code, exc.message)
            response = self._response(request, exc.status, body, "application/json")
            if exc.retry_after is not None:
                response.headers["Retry-After"] = str(exc.retry_after)
            if exc.status == 503:
                response.force_close()
            return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        transport = query.get("transport")
        sid = query.get("sid")
        if transport not in ("polling", "websocket"):
            raise TransportError(400, WireCode.MALFORMED, "transport must be polling or websocket")
        if query.get("EIO") != "4":
            raise TransportError(400, WireCode.UNSUPPORTED, "only Engine.IO 4 (EIO=4) is served")
        if "j" in query:
            raise TransportError(400, WireCode.UNSUPPORTED, "JSONP polling is not supported")
        if transport == "websocket":
            return self._websocket(request, sid)
        if request.method == "GET":
            if sid is None:
                return self._open_polling(request)
            return await self._poll(request, self._session(sid))
        if request.method == "POST" and sid is not None:
            return await self._post(request, self._session(sid))
        raise TransportError(400, WireCode.MALFORMED, f"{request.method} is not a valid request here")

    def _session(self, sid: str) -> EngineSession:
        session = self.sessions.get(sid)
        if session is None:
            raise TransportError(400, WireCode.NOT_FOUND, "unknown or closed session")
        return session

    def _open_polling(self, request: web.Request) -> web.StreamResponse:
        session = self._open(request)
        return self._response(request, 200, self._open_packet(session.sid, ["websocket"]))

    async def _poll(self, request: web.Request, session: EngineSession) -> web.StreamResponse:
        if session.link is not None:
            raise TransportError(400, WireCode.MALFORMED, "the session is on a websocket now")
        if session.poll is not None:
            session.close(TRANSPORT_ERROR)  # the pending poll carries the CLOSE packet
            raise TransportError(400, WireCode.MALFORMED, "a second concurrent poll ends the session")
        if not session.outbox and session.probe is None:
            loop = self._loop or asyncio.get_running_loop()
            session.poll = loop.create_future()
            session.poll_transport = request.transport
            session.poll_started()
            self._polling.add(session)
            try:
                # Woken by the next packet; pings come every interval, so this is bounded.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.shield(session.poll), self.ping_interval + self.ping_timeout
                    )
            finally:
                session.poll = None
                session.poll_transport = None
                self._polling.discard(session)
        if not session.closed:
            session.poll_ended()
        return self._response(request, 200, session.take_outbox())

    async def _post(self, request: web.Request, session: EngineSession) -> web.StreamResponse:
        if session.link is not None:
            raise TransportError(400, WireCode.MALFORMED, "the session is on a websocket now")
        if session.posting:
            session.close(TRANSPORT_ERROR)
            raise TransportError(400, WireCode.MALFORMED, "a second concurrent POST ends the session")
        session.posting = True
        try:
            body = await read_body(request, self.max_message_bytes)
        except TransportError:
            session.close(TRANSPORT_ERROR)
            raise
        finally:
            session.posting = False
        try:
            text = body.decode()
        except UnicodeDecodeError:
            session.protocol_error("a polling payload that is not UTF-8")
            raise TransportError(400, WireCode.MALFORMED, "the payload is not UTF-8") from None
        if text:
            session.receive_payload(text)
        if session.lost_reason == PARSE_ERROR:
            raise TransportError(400, WireCode.MALFORMED, "invalid packet; the session is closed")
        return self._response(request, 200, "ok")

    def _websocket(self, request: web.Request, sid: str | None) -> web.StreamResponse:
        try:
            accept = accept_key(request.method, request.headers)
        except HandshakeError as exc:
            raise TransportError(400, WireCode.MALFORMED, str(exc)) from None
        if sid is not None:
            session = self._session(sid)
            if session.link is not None or session.probe is not None:
                raise TransportError(400, WireCode.MALFORMED, "the session already has a websocket")
            session.start_probe(self._link(request, accept))
        else:
            session = self._open(request)
            # The OPEN packet goes out with the handshake's answer, in one write.
            first = text_frame(self._open_packet(session.sid, []))
            session.attach(self._link(request, accept, first))
        # The connection is ours now; aiohttp's request loop ends with this (unsent) answer.
        return web.Response(status=101)

    def _link(self, request: web.Request, accept: str, first: bytes = b"") -> WebSocketLink:
        try:
            transport, tail = take_transport(request)
        except ConnectionResetError:
            raise TransportError(400, WireCode.MALFORMED, "the connection closed") from None
        return open_link(
            transport,
            tail,
            accept,
            self.batcher,
            self.max_message_bytes,
            self.max_backlog,
            self.peer(request),
            self.open_connections,
            first,
        )

    # Origins and CORS

    def _check_origin(self, request: web.BaseRequest) -> None:
        origin = request.headers.get("Origin")
        if origin is None or self._origin_allowed(request, origin):
            return
        raise TransportError(403, WireCode.FORBIDDEN, f"origin {origin[:100]!r} is not allowed")

    def _origin_allowed(self, request: web.BaseRequest, origin: str) -> bool:
        allowed = self.options.cors_origins
        if allowed == ["*"] or origin in allowed:
            return True
        if allowed:
            return False  # an allow-list is the whole answer: no Host a client chose counts
        # Same origin: the scheme and host the browser used to reach us. Forwarded ones only
        # from a trusted proxy: anyone else can write those headers.
        headers = request.headers
        scheme, host = request.scheme, headers.get("Host", "")
        if request.remote in self.options.trusted_proxies:
            scheme = headers.get("X-Forwarded-Proto", scheme).split(",")[0].strip()
            host = headers.get("X-Forwarded-Host", host).split(",")[0].strip()
        return origin == f"{scheme}://{host}"

    def _response(
        self,
        request: web.BaseRequest,
        status: int,
        body: str | bytes,
        content_type: str = _POLLING_CONTENT_TYPE,
    ) -> web.Response:
        response = web.Response(
            status=status,
            body=body.encode() if isinstance(body, str) else body,
            headers={"Content-Type": content_type},
        )
        origin = request.headers.get("Origin")
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "OPTIONS, GET, POST"
                wanted = request.headers.get("Access-Control-Request-Headers")
                if wanted:
                    response.headers["Access-Control-Allow-Headers"] = wanted
        return response

    # Counts

    def counts(self) -> dict[str, int]:
        websocket = sum(1 for s in self.sessions.values() if s.link is not None)
        return {"websocket": websocket, "polling": len(self.sessions) - websocket}


async def read_body(request: web.BaseRequest, limit: int) -> bytes:
    """The whole request body, however many network reads it arrives in; 413 past `limit`.

    (`content.read(n)` returns what is buffered, not n bytes: a body split by the network
    must be read until its end.)"""
    if request.content_length is not None and request.content_length > limit:
        raise TransportError(413, WireCode.TOO_LARGE, f"the payload is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise TransportError(413, WireCode.TOO_LARGE, f"the payload is over {limit} bytes")
        chunks.append(chunk)


def peer_of(request: web.BaseRequest, trusted_proxies: frozenset[str] = frozenset()) -> str:
    """The client's address as logs show it. From a trusted proxy, the nearest address in
    X-Forwarded-For that is not itself a trusted proxy."""
    remote = request.remote or "unknown"
    if remote not in trusted_proxies:
        return remote
    hops = [hop.strip() for hop in request.headers.get("X-Forwarded-For", "").split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted_proxies:
            return hop[:64]
    return remote


def _abandoned(session: EngineSession) -> bool:
    transport = session.poll_transport
    return transport is None or transport.is_closing()
