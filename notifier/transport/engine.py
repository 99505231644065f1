"""The Engine.IO v4 server: the HTTP side of `/socket.io/` and the sessions' deadlines.

Requests: `GET ?EIO=4&transport=polling` opens a long-polling session; `GET` with its `sid`
polls, `POST` sends; `GET ?EIO=4&transport=websocket` opens a websocket session, or, with a
`sid`, upgrades a long-polling one. Every error is an HTTP status with notifier's JSON error
shape; nothing a client sends raises past this module.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..errors import ErrorCode
from ..logs import ClientErrorLog
from ..metrics import Tally
from ..ratelimit import TokenBucket
from .engine_session import (
    OPEN,
    PARSE_ERROR,
    SHUTTING_DOWN,
    TRANSPORT_CLOSE,
    TRANSPORT_ERROR,
    EngineSession,
    SessionHandler,
)
from .session_ids import new_sid
from .timewheel import TimeWheel
from .websocket import (
    HandshakeError,
    WriteBatcher,
    accept_key,
    open_link,
    peer_of,
    text_frame,
)

log = logging.getLogger("notifier.engine")

_TICK = 0.25  # seconds between sweeps of the deadlines; heartbeats are whole seconds
_POLLING_CONTENT_TYPE = "text/plain; charset=UTF-8"

BucketFactory = Callable[[], TokenBucket]


class TransportError(Exception):
    """A request the Engine.IO protocol refuses: an HTTP status and our error body."""

    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class EngineServer:
    def __init__(
        self,
        handler: SessionHandler,
        *,
        ping_interval: float,
        ping_timeout: float,
        max_message_bytes: int,
        max_backlog: int,
        connect_timeout: float,
        cors_origins: list[str],
        new_bucket: BucketFactory,
        client_errors: ClientErrorLog,
        trusted_proxies: frozenset[str] = frozenset(),
        admit: Callable[[], bool] = lambda: True,
    ) -> None:
        self.handler = handler
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.max_message_bytes = max_message_bytes
        self.max_backlog = max_backlog
        self.connect_timeout = connect_timeout
        self.sessions: dict[str, EngineSession] = {}
        # For the metrics: sessions ended, by reason; packets refused over a rate limit.
        self.closes = Tally()
        self.rate_limited = 0
        self.batcher = WriteBatcher()
        self.draining = False
        self._cors_origins = cors_origins
        self._new_bucket = new_bucket
        self._client_errors = client_errors
        self._trusted_proxies = trusted_proxies
        # Asked before each new session: False while the process is overloaded.
        self._admit = admit
        self.refused_busy = 0
        self._wheel: TimeWheel[EngineSession] = TimeWheel(_TICK)
        self._polling: set[EngineSession] = set()
        self._ticker: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._open_payload = orjson.dumps({
            "sid": "", "upgrades": [], "pingInterval": int(ping_interval * 1000),
            "pingTimeout": int(ping_timeout * 1000), "maxPayload": max_message_bytes,
        })

    # Lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._ticker = self._loop.call_later(_TICK, self._tick)

    def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

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

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # Deadlines

    def schedule(self, session: EngineSession, due: float) -> None:
        if session.wheel_at is None or due < session.wheel_at:
            session.wheel_at = due
            self._wheel.add(session, due)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        try:
            self._wheel.sweep(now, self._fire)
            for session in [s for s in self._polling if _abandoned(s)]:
                # The client gave up on its poll: whatever that poll would have carried
                # would be lost, so the session ends and the client recovers on reconnect.
                session.close(TRANSPORT_ERROR, notify=False)
        finally:
            self._ticker = self._loop.call_later(_TICK, self._tick)

    def _fire(self, session: EngineSession) -> None:
        now = self.now()
        if session.closed or session.wheel_at is None or session.wheel_at > now:
            return  # closed, or an earlier entry that a later deadline replaced
        session.wheel_at = None
        session.on_deadline(now)

    # Sessions

    def _open(self, request: web.BaseRequest) -> EngineSession:
        if not self._admit():
            # Cheaper than a whole set-up: the client retries after its (jittered) backoff.
            self.refused_busy += 1
            raise TransportError(503, ErrorCode.UNAVAILABLE, "the server is busy; retry shortly")
        sid = new_sid()
        header = request.headers.get("Authorization")
        # Kept even when query tokens are refused: the refusal then says why.
        query_token = request.query.get("token")
        session = EngineSession(
            self, sid, peer_of(request, self._trusted_proxies), self._new_bucket(), header, query_token
        )
        self.sessions[sid] = session
        self.schedule(session, session.next_deadline())
        return session

    def forget(self, session: EngineSession, reason: str) -> None:
        self.closes.add(reason)
        self.sessions.pop(session.sid, None)
        self._polling.discard(session)

    def open_packet(self, sid: str, upgrades: list[str]) -> str:
        """The OPEN packet's JSON: sid, upgrades, heartbeat and the largest message."""
        payload = self._open_payload.replace(b'"sid":""', orjson.dumps({"sid": sid})[1:-1], 1)
        if upgrades:
            payload = payload.replace(b'"upgrades":[]', b'"upgrades":["websocket"]', 1)
        return OPEN + payload.decode()

    def client_error(self, reason: str, detail: str, peer: str, **extra: Any) -> None:
        self._client_errors.note(reason, detail, peer, **extra)

    # HTTP

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp route for `/socket.io/`."""
        try:
            self._check_origin(request)
            if request.method == "OPTIONS":
                return self._response(request, 200, "")
            if self.draining:
                raise TransportError(503, ErrorCode.UNAVAILABLE, "the server is shutting down")
            return await self._route(request)
        except TransportError as exc:
            self.client_error("bad_transport_request", exc.message, peer_of(request, self._trusted_proxies))
            body = orjson.dumps({"error": {"code": exc.code.value, "message": exc.message}})
            response = self._response(request, exc.status, body, "application/json")
            if exc.status == 503:
                response.force_close()
            return response

    async def _route(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        transport = query.get("transport")
        sid = query.get("sid")
        if transport not in ("polling", "websocket"):
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "transport must be polling or websocket")
        if query.get("EIO") != "4":
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "only Engine.IO 4 (EIO=4) is served")
        if "j" in query:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "JSONP polling is not supported")
        if transport == "websocket":
            return self._websocket(request, sid)
        if request.method == "GET":
            if sid is None:
                return self._open_polling(request)
            return await self._poll(request, self._session(sid))
        if request.method == "POST" and sid is not None:
            return await self._post(request, self._session(sid))
        raise TransportError(400, ErrorCode.INVALID_PAYLOAD, f"{request.method} is not a valid request here")

    def _session(self, sid: str) -> EngineSession:
        session = self.sessions.get(sid)
        if session is None:
            raise TransportError(400, ErrorCode.NOT_FOUND, "unknown or closed session")
        return session

    def _open_polling(self, request: web.Request) -> web.StreamResponse:
        session = self._open(request)
        self.handler_opened(session)
        return self._response(request, 200, self.open_packet(session.sid, ["websocket"]))

    def handler_opened(self, session: EngineSession) -> None:
        """A new session exists; the Socket.IO layer waits for its CONNECT packet."""

    async def _poll(self, request: web.Request, session: EngineSession) -> web.StreamResponse:
        if session.link is not None:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "the session is on a websocket now")
        if session.poll is not None:
            session.close(TRANSPORT_ERROR)  # the pending poll carries the CLOSE packet
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "a second concurrent poll ends the session")
        if not session.outbox and session.probe is None:
            assert self._loop is not None
            session.poll = self._loop.create_future()
            session.poll_transport = request.transport
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
        return self._response(request, 200, session.take_outbox())

    async def _post(self, request: web.Request, session: EngineSession) -> web.StreamResponse:
        if session.link is not None:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "the session is on a websocket now")
        if session.posting:
            session.close(TRANSPORT_ERROR)
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "a second concurrent POST ends the session")
        session.posting = True
        try:
            body = await _read_limited(request, self.max_message_bytes)
        except TransportError:
            session.close(TRANSPORT_ERROR)
            raise
        finally:
            session.posting = False
        try:
            text = body.decode()
        except UnicodeDecodeError:
            session.protocol_error("a polling payload that is not UTF-8")
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "the payload is not UTF-8") from None
        if text:
            session.receive_payload(text)
        if session.lost_reason == PARSE_ERROR:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "invalid packet; the session is closed")
        return self._response(request, 200, "ok")

    def _websocket(self, request: web.Request, sid: str | None) -> web.StreamResponse:
        try:
            accept = accept_key(request)
        except HandshakeError as exc:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, str(exc)) from None
        if sid is not None:
            session = self._session(sid)
            if session.link is not None or session.probe is not None:
                raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "the session already has a websocket")
            link = self._link(request, accept)
            session.start_probe(link)
        else:
            session = self._open(request)
            # The OPEN packet goes out with the handshake's answer, in one write.
            link = self._link(request, accept, text_frame(self.open_packet(session.sid, [])))
            session.attach(link)
        # The connection is ours now; aiohttp's request loop ends with this (unsent) answer.
        return web.Response(status=101)

    def _link(self, request: web.Request, accept: str, first: bytes = b"") -> Any:
        try:
            return open_link(request, accept, self.batcher, self.max_message_bytes,
                             self.max_backlog, peer_of(request, self._trusted_proxies), first)
        except ConnectionResetError:
            raise TransportError(400, ErrorCode.INVALID_PAYLOAD, "the connection closed") from None

    # Origins and CORS

    def _check_origin(self, request: web.BaseRequest) -> None:
        origin = request.headers.get("Origin")
        if origin is None or self._origin_allowed(request, origin):
            return
        raise TransportError(403, ErrorCode.FORBIDDEN, f"origin {origin[:100]!r} is not allowed")

    def _origin_allowed(self, request: web.BaseRequest, origin: str) -> bool:
        if self._cors_origins == ["*"]:
            return True
        if origin in self._cors_origins:
            return True
        # Same origin: the scheme and host the browser used to reach us (through a proxy,
        # the forwarded ones).
        headers = request.headers
        scheme = headers.get("X-Forwarded-Proto", request.scheme).split(",")[0].strip()
        host = headers.get("X-Forwarded-Host", headers.get("Host", "")).split(",")[0].strip()
        return origin == f"{scheme}://{host}"

    def _response(
        self, request: web.BaseRequest, status: int, body: str | bytes,
        content_type: str = _POLLING_CONTENT_TYPE,
    ) -> web.Response:
        response = web.Response(
            status=status, body=body.encode() if isinstance(body, str) else body,
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


async def _read_limited(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise TransportError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the payload is over {limit} bytes")
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise TransportError(413, ErrorCode.PAYLOAD_TOO_LARGE, f"the payload is over {limit} bytes")
    return body


def _abandoned(session: EngineSession) -> bool:
    transport = session.poll_transport
    return transport is None or transport.is_closing()


__all__ = ["TRANSPORT_CLOSE", "EngineServer", "TransportError"]
