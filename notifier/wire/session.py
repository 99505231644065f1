"""One Engine.IO session (protocol v4): packets in and out, heartbeat, upgrade, close.

A session starts on long-polling or directly on a websocket. Packets are plain strings
(`<type digit><payload>`; binary Socket.IO attachments are bytes), so the framing is done
here; the layer above (a `SessionListener`, one per session) sees only the payloads of
MESSAGE packets. The session asks its host (`SessionHost`, the engine) for the time, for its
deadlines and to be forgotten; it knows nothing else of it.

Where python-engineio deviates from the protocol document, this does what the document says:
a malformed or unexpected packet ends the session at once (one report, no traceback); a
client's CLOSE is honoured at once; a second concurrent GET poll closes the session; a
session that never connects a Socket.IO namespace is closed after the connect timeout.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Protocol

from .codes import (
    CLIENT_CLOSE,
    CONNECT_TIMEOUT,
    FLOODING,
    PARSE_ERROR,
    PING_TIMEOUT,
    POLLING_GAP,
    SLOW_CONSUMER,
    TRANSPORT_CLOSE,
)
from .packets import (
    CLOSE,
    MAX_PACKETS_PER_POLL,
    MESSAGE,
    NOOP,
    PING,
    PING_FRAME,
    PONG,
    PONG_PROBE_FRAME,
    PROBE,
    UPGRADE,
    MalformedPayload,
    Outbound,
    polling_packets,
    polling_payload,
    text_frame,
)
from .ratelimit import TokenBucket, Verdict
from .websocket import CLOSE_PROTOCOL_ERROR, WebSocketLink


class SessionListener(Protocol):
    """The layer above (Socket.IO), as one Engine.IO session sees it."""

    def on_message(self, data: str | bytes) -> None: ...

    def on_refused(self, data: str | bytes) -> None:
        """A message over the session's rate limit: answer it, do not process it."""

    def on_flood(self) -> None:
        """Still over the rate limit after the flood period: the session is about to end."""

    def on_close(self, reason: str) -> None: ...


class SessionHost(Protocol):
    """What a session may ask of the engine that serves it."""

    ping_interval: float
    ping_timeout: float
    connect_timeout: float
    polling_gap: float
    max_backlog: int

    def now(self) -> float: ...

    def schedule(self, session: EngineSession, due: float) -> None:
        """Call `session.on_deadline` at `due` (replacing the deadline set before)."""

    def awaiting_connect(self, session: EngineSession, awaiting: bool) -> None:
        """The session starts (True) or stops (False) waiting for a namespace to connect."""

    def forget(self, session: EngineSession, reason: str) -> None:
        """The session ended: drop it and its deadline."""

    def report(self, reason: str, detail: str, peer: str) -> None:
        """Something the client did wrong (logged a few times per peer, then counted)."""

    def count_rate_limited(self) -> None: ...


class _NoListener:
    """Until the layer above takes the session."""

    def on_message(self, data: str | bytes) -> None:
        pass

    def on_refused(self, data: str | bytes) -> None:
        pass

    def on_flood(self) -> None:
        pass

    def on_close(self, reason: str) -> None:
        pass


_NO_LISTENER = _NoListener()


class EngineSession:
    __slots__ = (
        "auth_header",
        "awaiting_connect",
        "bucket",
        "closed",
        "connect_by",
        "flooding",
        "host",
        "link",
        "listener",
        "lost_reason",
        "outbox",
        "peer",
        "ping_at",
        "poll",
        "poll_due",
        "poll_transport",
        "pong_by",
        "posting",
        "probe",
        "query_token",
        "rejections",
        "sid",
        "wheel_at",
    )

    def __init__(
        self,
        host: SessionHost,
        sid: str,
        peer: str,
        bucket: TokenBucket,
        auth_header: str | None,
        query_token: str | None,
    ) -> None:
        self.host = host
        self.sid = sid
        self.peer = peer
        now = host.now()
        self.listener: SessionListener = _NO_LISTENER
        # What the layer above may authenticate with, kept instead of the whole request.
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
        # Long-polling: a client polls again as soon as a poll is answered; one that has not
        # by `poll_due` went away (closed its tab, or was moved to another node by a proxy),
        # and the session ends long before its heartbeat would tell.
        self.poll_due = now + host.polling_gap
        self.posting = False
        self.closed = False
        self.lost_reason: str | None = None
        self.ping_at = now + host.ping_interval
        self.pong_by = 0.0
        # Until a namespace is connected: the session must connect one by `connect_by`.
        self.awaiting_connect = True
        self.connect_by = now + host.connect_timeout
        self.wheel_at: float | None = None  # the deadline the host has for this session
        host.awaiting_connect(self, True)
        host.schedule(self, self.next_deadline())

    @property
    def transport_name(self) -> str:
        return "polling" if self.link is None else "websocket"

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
        if len(outbox) >= self.host.max_backlog and self.poll is None:
            # A client that stopped polling. Not closed here: this may run in the middle of
            # a fan-out over a room (or inside a commit).
            self.lost_reason = SLOW_CONSUMER
            asyncio.get_running_loop().call_soon(functools.partial(self.close, SLOW_CONSUMER, notify=False))
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
        return polling_payload(taken)

    @property
    def backlog(self) -> int:
        link = self.link
        return link.backlog if link is not None else len(self.outbox or ())

    # Receiving

    def receive_payload(self, body: str) -> None:
        """A long-polling POST body."""
        try:
            for packet in polling_packets(body):
                if self.closed:
                    return
                self.receive(packet)
        except MalformedPayload as exc:
            self.protocol_error(str(exc))

    def receive(self, data: str | bytes) -> None:
        """One Engine.IO packet from the client. Every packet counts against its rate limit."""
        if self.closed:
            return
        verdict = self._take()
        if verdict is None:
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
                self.ping_at = self.host.now() + self.host.ping_interval
                self.host.schedule(self, self.next_deadline())
        elif kind == CLOSE and len(data) == 1:
            self.close(CLIENT_CLOSE, notify=False)
        elif kind == NOOP and len(data) == 1:
            pass
        elif kind == PING:
            self.protocol_error("the client sent a ping (in Engine.IO v4 only servers ping)")
        else:
            self.protocol_error(f"unexpected Engine.IO packet {data[:16]!r}")

    def _take(self) -> Verdict | None:
        """Charge one packet to the rate limit; None when the session ends for flooding."""
        verdict = self.bucket.take()
        if verdict is Verdict.ALLOW:
            self.flooding = False
            return verdict
        self.rejections += 1
        self.host.count_rate_limited()
        self.flooding = True
        if verdict is Verdict.DISCONNECT:
            self.host.report(FLOODING, "over the rate limit for too long", self.peer)
            self.listener.on_flood()
            self.close(FLOODING)
            return None
        return verdict

    def _message(self, verdict: Verdict, data: str | bytes) -> None:
        if verdict is Verdict.ALLOW:
            self.listener.on_message(data)
        else:
            self.listener.on_refused(data)

    def protocol_error(self, detail: str) -> None:
        self.host.report(PARSE_ERROR, detail, self.peer)
        self.lost_reason = PARSE_ERROR
        self.close(PARSE_ERROR)

    def raise_rate_limit(self, rate: float, burst: int) -> None:
        self.bucket.raise_to(rate, burst)

    def charge(self, packets: int) -> bool:
        """Count `packets` more against the rate limit (work a packet asks for that is worth
        several); False when they are over it."""
        for _ in range(packets):
            if self.bucket.take() is not Verdict.ALLOW:
                self.rejections += 1
                self.host.count_rate_limited()
                return False
        return True

    # The websocket (LinkOwner)

    def link_message(self, link: WebSocketLink, data: str | bytes) -> None:
        if link is self.link:
            self.receive(data)
        elif link is self.probe:
            self._receive_probe(link, data)

    def link_control(self, link: WebSocketLink) -> bool:
        if self.closed:
            return False
        verdict = self._take()
        return verdict is Verdict.ALLOW

    def link_failed(self, link: WebSocketLink, detail: str) -> None:
        self.host.report(PARSE_ERROR, detail, self.peer)
        if link is self.link:
            self.lost_reason = PARSE_ERROR
            self.close(PARSE_ERROR)

    def link_lost(self, link: WebSocketLink, reason: str | None) -> None:
        if link is self.probe:
            self.probe = None  # the upgrade failed; the session stays on long-polling
            if self.poll is None:
                self.poll_ended()
        elif link is self.link:
            self.close(reason or self.lost_reason or TRANSPORT_CLOSE, notify=False)

    # Upgrade from long-polling to websocket

    def start_probe(self, link: WebSocketLink) -> None:
        self.probe = link
        link.owner = self

    def _receive_probe(self, link: WebSocketLink, data: str | bytes) -> None:
        if data == PING + PROBE:
            link.send_now(PONG_PROBE_FRAME)
            # Ends the pending poll, so the client can complete the upgrade.
            self._wake_poll()
        elif data == UPGRADE:
            self.probe = None
            self._switch_to(link)
        else:
            self.host.report(PARSE_ERROR, f"unexpected packet during upgrade {data!r:.40}", self.peer)
            self.probe = None
            link.owner = None
            link.close(CLOSE_PROTOCOL_ERROR)

    def attach(self, link: WebSocketLink) -> None:
        """A session opened directly on a websocket."""
        self._switch_to(link)

    def _switch_to(self, link: WebSocketLink) -> None:
        outbox, self.outbox = self.outbox or [], None
        self.link = link
        self.poll_due = 0.0
        link.owner = self
        # What waited for the next poll goes first, in order, on the websocket.
        for text in outbox:
            link.queue(text_frame(text))
        self._wake_poll()  # the last poll ends (NOOP)

    def _wake_poll(self) -> None:
        poll = self.poll
        if poll is not None and not poll.done():
            poll.set_result(None)

    # Long-polls (the engine tells when one starts and ends)

    def poll_started(self) -> None:
        self.poll_due = 0.0

    def poll_ended(self) -> None:
        self.poll_due = self.host.now() + self.host.polling_gap
        self.host.schedule(self, self.next_deadline())

    def _awaiting_poll(self) -> bool:
        # Not while upgrading: the client stops polling once its probe is answered.
        return bool(self.poll_due) and self.link is None and self.probe is None

    # Deadlines (swept by the host's time wheel)

    def next_deadline(self) -> float:
        due = self.pong_by or self.ping_at
        if self.awaiting_connect:
            due = min(due, self.connect_by)
        if self._awaiting_poll():
            due = min(due, self.poll_due)
        return due

    def on_deadline(self, now: float) -> None:
        if self.pong_by and now >= self.pong_by:
            self.close(PING_TIMEOUT)
            return
        if self._awaiting_poll() and now >= self.poll_due:
            self.close(POLLING_GAP, notify=False)
            return
        if self.awaiting_connect and now >= self.connect_by:
            self.host.report(CONNECT_TIMEOUT, "no Socket.IO CONNECT in time", self.peer)
            self.close(CONNECT_TIMEOUT)
            return
        if not self.pong_by and now >= self.ping_at:
            self.pong_by = now + self.host.ping_timeout
            self._send_control(PING, PING_FRAME)
        self.host.schedule(self, self.next_deadline())

    def namespace_connected(self) -> None:
        """A namespace is connected: the connect timeout no longer applies."""
        if self.awaiting_connect:
            self.awaiting_connect = False
            self.host.awaiting_connect(self, False)
            self.host.schedule(self, self.next_deadline())

    def namespaces_left(self) -> None:
        """The last connected namespace left: the client has the connect timeout to join one
        again. (A refused CONNECT does not restart it: the first deadline stands.)"""
        if not self.awaiting_connect and not self.closed:
            self.awaiting_connect = True
            self.host.awaiting_connect(self, True)
            self.connect_by = self.host.now() + self.host.connect_timeout
            self.host.schedule(self, self.next_deadline())

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
        self.host.forget(self, reason)
        listener, self.listener = self.listener, _NO_LISTENER
        listener.on_close(reason)
        # As Engine.IO's reference server: a websocket is simply closed; a long-polling client
        # is told with a CLOSE packet on its pending poll.
        for link in (self.link, self.probe):
            if link is not None:
                link.owner = None
                if graceful:
                    link.close()
                else:
                    link.abort(reason)
        self.link = self.probe = None
        poll = self.poll
        if poll is not None and not poll.done():
            if notify and self.outbox is not None:
                self.outbox.append(CLOSE)
            poll.set_result(None)
