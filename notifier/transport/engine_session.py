"""One Engine.IO session (protocol v4): packets in and out, heartbeat, upgrade, close.

A session starts on long-polling or directly on a websocket. Packets are plain strings
(`<type digit><payload>`; binary Socket.IO attachments are bytes), so the framing is done
here; the Socket.IO layer above (`SessionHandler`) sees only the payloads of MESSAGE packets.

Where python-engineio deviates from the protocol document, this does what the document says:
a malformed or unexpected packet ends the session at once (one INFO line, no traceback); a
client's CLOSE is honoured at once; a second concurrent GET poll closes the session; a
session that never connects a Socket.IO namespace is closed after the connect timeout.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING, Any, Protocol

from ..ratelimit import TokenBucket, Verdict
from .websocket import WebSocketLink, text_frame

if TYPE_CHECKING:
    from .engine import EngineServer

OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
PAYLOAD_SEPARATOR = "\x1e"
# python-engineio's client (engineio.payload.Payload.max_decode_packets) takes no more.
MAX_PACKETS_PER_POLL = 16

_PING_FRAME = text_frame(PING)

# Why sessions end, in the words Socket.IO clients and logs use.
CLIENT_CLOSE = "client close"
TRANSPORT_CLOSE = "transport close"
TRANSPORT_ERROR = "transport error"
PING_TIMEOUT = "ping timeout"
PARSE_ERROR = "parse error"
CONNECT_TIMEOUT = "connect timeout"
SERVER_CLOSE = "server close"
SHUTTING_DOWN = "server shutting down"
SLOW_CONSUMER = "slow consumer"
FLOODING = "rate limit exceeded"


class Outbound:
    """One MESSAGE packet for any number of recipients: its text (for long-polling) and its
    websocket frame, each built once, the frame on first use."""

    __slots__ = ("_frame", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    @property
    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = text_frame(self.text)
        return frame


class SessionHandler(Protocol):
    """The Socket.IO layer, as the Engine.IO session sees it."""

    def on_message(self, session: EngineSession, data: str | bytes) -> None: ...

    def on_refused(self, session: EngineSession, data: str | bytes) -> None:
        """A message over the session's rate limit: answer it, do not process it."""

    def on_flood(self, session: EngineSession) -> None:
        """Still over the rate limit after the flood period: the session must end."""

    def on_close(self, session: EngineSession, reason: str) -> None: ...


class EngineSession:
    __slots__ = (
        "attachments_due", "auth_header", "bucket", "closed", "connect_by", "engine", "flooding", "link",
        "lost_reason", "outbox", "peer", "ping_at", "poll", "poll_transport", "pong_by",
        "posting", "probe", "query_token", "rejections", "sid", "sockets", "wheel_at",
    )

    def __init__(
        self, engine: EngineServer, sid: str, peer: str, bucket: TokenBucket,
        auth_header: str | None, query_token: str | None,
    ) -> None:
        self.engine = engine
        self.sid = sid
        self.peer = peer
        # What the Socket.IO layer may authenticate with, kept instead of the whole request.
        self.auth_header = auth_header
        self.query_token = query_token
        self.bucket = bucket
        self.rejections = 0
        self.flooding = False
        self.link: WebSocketLink | None = None  # the websocket, once the session is on it
        self.probe: WebSocketLink | None = None  # a websocket being upgraded to
        self.outbox: list[str] | None = []  # long-polling: packets the next poll takes
        self.poll: asyncio.Future[None] | None = None
        self.poll_transport: asyncio.BaseTransport | None = None
        self.posting = False
        self.closed = False
        self.lost_reason: str | None = None
        now = engine.now()
        self.ping_at = now + engine.ping_interval
        self.pong_by = 0.0
        self.connect_by = now + engine.connect_timeout
        self.wheel_at: float | None = None
        # The Socket.IO layer's state for this session: namespace -> connection, and binary
        # attachments still to come for a binary event.
        self.sockets: dict[str, Any] | None = None
        self.attachments_due = 0

    # Sending

    def send(self, packet: Outbound) -> None:
        """Queue a MESSAGE packet (the fan-out's hot path)."""
        link = self.link
        if link is not None:
            link.queue(packet.frame)
        elif not self.closed:
            self._enqueue(packet.text)

    def _send_control(self, text: str, frame: bytes) -> None:
        link = self.link
        if link is not None:
            link.queue(frame)
        elif not self.closed:
            self._enqueue(text)

    def _enqueue(self, text: str) -> None:
        outbox = self.outbox
        if outbox is None or self.lost_reason is not None:
            return
        if len(outbox) >= self.engine.max_backlog and self.poll is None:
            # Not closed here: this may run in the middle of a fan-out over a room.
            self.lost_reason = SLOW_CONSUMER
            asyncio.get_running_loop().call_soon(self.close, SLOW_CONSUMER, notify=False)
            return
        outbox.append(text)
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    def take_outbox(self) -> str:
        """What is queued for a long-poll, as one payload (NOOP if there is nothing).

        At most MAX_PACKETS_PER_POLL packets: python-engineio's client refuses a payload with
        more (and drops the connection); the rest go with the next poll, which follows at once.
        """
        outbox = self.outbox
        if not outbox:
            return NOOP
        taken = outbox[:MAX_PACKETS_PER_POLL]
        del outbox[:MAX_PACKETS_PER_POLL]
        return PAYLOAD_SEPARATOR.join(taken)

    @property
    def backlog(self) -> int:
        link = self.link
        return link.backlog if link is not None else len(self.outbox or ())

    # Receiving

    def receive_websocket(self, link: WebSocketLink, data: str | bytes) -> None:
        if link is self.link:
            self.receive(data)
        elif link is self.probe:
            self._receive_probe(link, data)

    def receive_payload(self, body: str) -> None:
        """A long-polling POST body: packets separated by \\x1e, binary ones in base64."""
        for part in body.split(PAYLOAD_SEPARATOR):
            if self.closed:
                return
            if part.startswith("b"):
                try:
                    self.receive(base64.b64decode(part[1:], validate=True))
                except binascii.Error:
                    self.protocol_error("invalid base64 in a polling payload")
            else:
                self.receive(part)

    def receive(self, data: str | bytes) -> None:
        """One Engine.IO packet from the client. Every packet counts against its rate limit."""
        if self.closed:
            return
        verdict = self.bucket.take()
        if verdict is Verdict.ALLOW:
            self.flooding = False
        else:
            self.rejections += 1
            self.engine.rate_limited += 1
            self.flooding = True
            if verdict is Verdict.DISCONNECT:
                self.engine.client_error(FLOODING, "over the rate limit for too long", self.peer)
                self.engine.handler.on_flood(self)
                return
        if isinstance(data, bytes):  # a binary MESSAGE (a Socket.IO attachment)
            self._message(verdict, data)
            return
        kind = data[:1]
        if kind == MESSAGE:
            self._message(verdict, data[1:])
        elif kind == PONG and len(data) == 1:
            # Taken even over the rate limit: a heartbeat is never the flood.
            if self.pong_by:
                self.pong_by = 0.0
                self.ping_at = self.engine.now() + self.engine.ping_interval
                self.engine.schedule(self, self.ping_at)
        elif kind == CLOSE and len(data) == 1:
            self.close(CLIENT_CLOSE, notify=False)
        elif kind == NOOP and len(data) == 1:
            pass
        elif kind == PING:
            self.protocol_error("the client sent a ping (in Engine.IO v4 only servers ping)")
        else:
            self.protocol_error(f"unexpected Engine.IO packet {data[:16]!r}")

    def _message(self, verdict: Verdict, data: str | bytes) -> None:
        if verdict is Verdict.ALLOW:
            self.engine.handler.on_message(self, data)
        else:
            self.engine.handler.on_refused(self, data)

    def protocol_error(self, detail: str, peer: str | None = None) -> None:
        self.engine.client_error(PARSE_ERROR, detail, peer or self.peer)
        self.lost_reason = PARSE_ERROR
        self.close(PARSE_ERROR)

    # Upgrade from long-polling to websocket

    def start_probe(self, link: WebSocketLink) -> None:
        self.probe = link
        link.session = self
        link.on_lost = self._probe_lost

    def _receive_probe(self, link: WebSocketLink, data: str | bytes) -> None:
        if data == PING + "probe":
            link.send_now(text_frame(PONG + "probe"))
            # Ends the pending poll, so the client can complete the upgrade.
            poll = self.poll
            if poll is not None and not poll.done():
                poll.set_result(None)
        elif data == UPGRADE:
            self.probe = None
            self._switch_to(link)
        else:
            self.engine.client_error(PARSE_ERROR, f"unexpected packet during upgrade {data!r:.40}",
                                     self.peer)
            self.probe = None
            link.close(1002)

    def _probe_lost(self, link: WebSocketLink) -> None:
        if self.probe is link:
            self.probe = None  # the upgrade failed; the session stays on long-polling

    def attach(self, link: WebSocketLink) -> None:
        """A session opened directly on a websocket."""
        link.session = self
        self._switch_to(link)

    def _switch_to(self, link: WebSocketLink) -> None:
        outbox, self.outbox = self.outbox or [], None
        self.link = link
        link.on_lost = self._link_lost
        # What waited for the next poll goes first, in order, on the websocket.
        for text in outbox:
            link.queue(text_frame(text))
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)  # the last poll ends (NOOP)

    def _link_lost(self, link: WebSocketLink) -> None:
        self.close(self.lost_reason or TRANSPORT_CLOSE, notify=False)

    # Deadlines (swept by the engine's time wheel)

    def next_deadline(self) -> float:
        due = self.pong_by or self.ping_at
        if self.sockets is None or not self.sockets:
            due = min(due, self.connect_by)
        return due

    def on_deadline(self, now: float) -> None:
        if self.pong_by and now >= self.pong_by:
            self.close(PING_TIMEOUT)
            return
        if not self.sockets and now >= self.connect_by:
            self.engine.client_error(CONNECT_TIMEOUT, "no Socket.IO CONNECT in time", self.peer)
            self.close(CONNECT_TIMEOUT)
            return
        if not self.pong_by and now >= self.ping_at:
            self.pong_by = now + self.engine.ping_timeout
            self._send_control(PING, _PING_FRAME)
        self.engine.schedule(self, self.next_deadline())

    def restart_connect_timer(self) -> None:
        """No namespace is connected any more: the client has the connect timeout to join one."""
        self.connect_by = self.engine.now() + self.engine.connect_timeout
        self.engine.schedule(self, self.connect_by)

    # Closing

    def close(self, reason: str, *, notify: bool = True) -> None:
        """End the session. `notify`: send a CLOSE packet first (server-initiated closes)."""
        self._end(reason, graceful=True, notify=notify)

    def drop(self, reason: str) -> None:
        """End the session without a goodbye, so that clients reconnect (server shutdown)."""
        self._end(reason, graceful=False, notify=False)

    def _end(self, reason: str, *, graceful: bool, notify: bool) -> None:
        if self.closed:
            return
        self.closed = True
        self.engine.forget(self, reason)
        self.engine.handler.on_close(self, reason)
        # As Engine.IO's reference server: a websocket is simply closed; a long-polling client
        # is told with a CLOSE packet on its pending poll.
        for link in (self.link, self.probe):
            if link is not None:
                link.on_lost = None
                if graceful:
                    link.close(1000)
                else:
                    link.abort(reason)
        poll = self.poll
        if poll is not None and not poll.done():
            if notify and self.outbox is not None:
                self.outbox.append(CLOSE)
            poll.set_result(None)

