"""The Socket.IO v5 layer over Engine.IO sessions: namespaces, events and acknowledgements.

Packets are decoded with python-socketio's own codec (`packets`). What the protocol document
requires, this does: a session's first packet must be a CONNECT; an unknown namespace gets
CONNECT_ERROR (with a code in `data`); an EVENT whose payload is not a non-empty array with a
string first, an unknown packet type or a malformed ack id ends the session. Packets for a
namespace whose connect handler is still running wait (a bounded number) and are handled in
order after it.

Every event is handled in a task of its own, as python-socketio does: a slow handler never
holds up a connection's other events. Handlers get the event's arguments and return the ack's
payload. Refusals of the wire's own (rate limit, size, binary) are shaped by the owner
(`ErrorShapes`), so clients see one error format.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from enum import Enum
from typing import Any, Protocol

from .codes import CLIENT_DISCONNECT, SERVER_DISCONNECT, TRANSPORT_CLOSE, WireCode
from .ids import new_sid
from .packets import (
    ACK,
    BINARY_ACK,
    BINARY_EVENT,
    CONNECT,
    CONNECT_ERROR,
    DISCONNECT,
    EVENT,
    Outbound,
    SocketPacket,
    decode,
    encode,
    event_header,
)
from .session import EngineSession

log = logging.getLogger(__name__)

# Packets a client may send for a namespace while its CONNECT is being handled.
_MAX_WAITING_PACKETS = 64
_MAX_ATTACHMENTS = 10


class Refused(Exception):
    """A connect handler's refusal: CONNECT_ERROR `{message, data}`."""

    def __init__(self, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class ErrorShapes(Protocol):
    """How the owner words the wire's refusals."""

    def connect_error(self, code: WireCode, message: str) -> Any:
        """The `data` of a CONNECT_ERROR the wire sends (unknown namespace)."""

    def ack_error(self, code: WireCode, message: str) -> Any:
        """The payload of an ack the wire answers itself (over the limit, too large...)."""


class State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class SocketConnection:
    """One client's connection to one namespace."""

    __slots__ = ("client", "data", "gate", "namespace", "session", "sid", "state", "waiting")

    def __init__(self, client: SocketClient, namespace: str) -> None:
        self.sid = new_sid()
        self.client = client
        # The Engine.IO session: `session.send(packet)` queues a packet (the fan-out's hot
        # path calls it directly, one attribute away).
        self.session = client.session
        self.namespace = namespace
        self.state = State.CONNECTING
        self.waiting: list[str | bytes] | None = []
        # While not None, the owner holds this connection's deliveries here (a replay is
        # being prepared); the owner decides what the list holds.
        self.gate: list[Any] | None = None
        # What the namespace's handler keeps for this connection.
        self.data: Any = None

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED

    def send(self, packet: Outbound) -> None:
        self.session.send(packet)

    @property
    def peer(self) -> str:
        return self.session.peer

    @property
    def auth_header(self) -> str | None:
        return self.session.auth_header

    @property
    def query_token(self) -> str | None:
        return self.session.query_token

    @property
    def transport_name(self) -> str:
        return self.session.transport_name

    def raise_rate_limit(self, rate: float, burst: int) -> None:
        """Allow this connection's session more packets (a proven publisher)."""
        self.session.raise_rate_limit(rate, burst)

    def charge(self, packets: int) -> bool:
        """Count work worth `packets` packets against the session's rate limit."""
        return self.session.charge(packets)

    def drop(self, reason: str) -> None:
        """End the whole session without a goodbye: the client reconnects and recovers."""
        self.session.drop(reason)


class Namespace(Protocol):
    """What a namespace's handler implements."""

    async def connect(self, connection: SocketConnection, auth: dict[str, Any] | None) -> None:
        """Accept (return) or refuse (raise Refused)."""

    def connected(self, connection: SocketConnection) -> None:
        """Called right after the CONNECT answer is queued: the first moment to send."""

    def event(self, connection: SocketConnection, name: str, args: list[Any]) -> Awaitable[Any]:
        """Handle an event; the result is the ack's payload."""
        ...

    def disconnected(self, connection: SocketConnection, reason: str) -> None: ...

    def flooding(self, connection: SocketConnection) -> None:
        """The session is closed for flooding; tell the client why (before it goes)."""


class SocketClient(dict[str, SocketConnection]):
    """The Socket.IO side of one Engine.IO session (its `SessionListener`): the namespaces it
    has joined, by name. (A dict itself: one object per session, not two.)"""

    __slots__ = ("attachments_due", "server", "session")

    def __init__(self, server: SocketServer, session: EngineSession) -> None:
        super().__init__()
        self.server = server
        self.session = session
        self.attachments_due = 0  # binary attachments still to come for a refused event

    # A dict compared by identity: each session's is its own.
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return self is other

    def on_message(self, data: str | bytes) -> None:
        self.server.receive(self, data)

    def on_refused(self, data: str | bytes) -> None:
        self.server.refused(self, data)

    def on_flood(self) -> None:
        self.server.flooded(self)

    def on_close(self, reason: str) -> None:
        self.server.closed(self, reason)


class SocketServer:
    """Namespaces and their connections, over every Engine.IO session."""

    def __init__(self, max_event_bytes: int, shapes: ErrorShapes) -> None:
        self.max_event_bytes = max_event_bytes
        self.namespaces: dict[str, Namespace] = {}
        self._shapes = shapes
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Told of every ack sent: (namespace, payload).
        self.on_ack: Callable[[str, Any], None] = lambda namespace, reply: None
        # Told of a client's mistake: (reason, detail, peer, extra fields).
        self.on_refusal: Callable[[str, str, str, dict[str, Any]], None] = (
            lambda reason, detail, peer, extra: None
        )

    def register(self, name: str, namespace: Namespace) -> None:
        self.namespaces[name] = namespace

    def listen(self, session: EngineSession) -> SocketClient:
        """The engine's `listen`: a new session's Socket.IO side."""
        return SocketClient(self, session)

    # Sending

    def _send(
        self,
        client: SocketClient,
        packet_type: int,
        namespace: str,
        data: Any = None,
        ack_id: int | None = None,
    ) -> None:
        client.session.send(Outbound(encode(packet_type, namespace, data, ack_id)))

    def _ack(self, client: SocketClient, namespace: str, reply: Any, ack_id: int) -> None:
        self.on_ack(namespace, reply)
        self._send(client, ACK, namespace, [reply], ack_id)

    def disconnect(self, connection: SocketConnection) -> None:
        """End the connection to its namespace (the Engine.IO session stays)."""
        if connection.state is State.CLOSED:
            return
        self._send(connection.client, DISCONNECT, connection.namespace)
        self._end(connection, SERVER_DISCONNECT)

    # From the sessions

    def receive(self, client: SocketClient, data: str | bytes) -> None:
        session = client.session
        if isinstance(data, bytes):
            if client.attachments_due:
                client.attachments_due -= 1  # an attachment of a refused binary event
            else:
                session.protocol_error("a binary message outside a binary event")
            return
        if len(data) > self.max_event_bytes and data[:1] == "2":
            self._too_large(client, data)
            return
        try:
            packet = decode(data)
        except Exception:  # whatever the decoder makes of garbage: not a packet
            session.protocol_error(f"malformed Socket.IO packet {data[:40]!r}")
            return
        self._handle(client, packet, data)

    def refused(self, client: SocketClient, data: str | bytes) -> None:
        """Over the rate limit: an event that wants an ack gets RATE_LIMITED, cheaply."""
        if isinstance(data, str) and data[:1] == "2":
            header = event_header(data)
            if header is not None:
                namespace, ack_id = header
                connection = client.get(namespace)
                if ack_id is None:
                    return
                if connection is not None and connection.connected:
                    reply = self._shapes.ack_error(WireCode.RATE_LIMITED, "too many events; slow down")
                    self._ack(client, namespace, reply, ack_id)

    def flooded(self, client: SocketClient) -> None:
        for connection in list(client.values()):
            if connection.connected:
                self.namespaces[connection.namespace].flooding(connection)

    def closed(self, client: SocketClient, reason: str) -> None:
        connections = list(client.values())
        client.clear()
        for connection in connections:
            self._end(connection, reason)

    # Packets

    def _handle(self, client: SocketClient, packet: SocketPacket, raw: str) -> None:
        session = client.session
        kind, namespace = packet.packet_type, packet.namespace or "/"
        if not isinstance(kind, int) or not 0 <= kind <= BINARY_ACK or namespace[:1] != "/":
            session.protocol_error(f"invalid Socket.IO packet {raw[:40]!r}")
            return
        connection = client.get(namespace)
        if kind == CONNECT:
            self._connect(client, namespace, packet.data, connection)
            return
        if connection is None:
            if not client:
                # "If the server does not receive a CONNECT packet first, then it MUST close."
                session.protocol_error("a packet before any CONNECT")
            return  # a namespace this session has left: ignored, as the reference server does
        if connection.state is State.CONNECTING:
            waiting = connection.waiting
            if waiting is None or len(waiting) >= _MAX_WAITING_PACKETS:
                session.protocol_error("too many packets before the CONNECT was answered")
            else:
                waiting.append(raw)
            return
        if kind == DISCONNECT:
            self._end(connection, CLIENT_DISCONNECT)
        elif kind == EVENT:
            self._event(connection, packet.id, packet.data, raw)
        elif kind == ACK:
            if not isinstance(packet.data, list):
                session.protocol_error("an ACK whose payload is not an array")
            # The server asks clients for no acks: nothing waits for this one.
        elif kind == BINARY_EVENT:
            self._binary_event(connection, packet)
        else:  # CONNECT_ERROR and BINARY_ACK never come from a client
            session.protocol_error(f"a client may not send packet type {kind}")

    def _connect(
        self,
        client: SocketClient,
        namespace: str,
        auth: Any,
        connection: SocketConnection | None,
    ) -> None:
        session = client.session
        handler = self.namespaces.get(namespace)
        if handler is None:
            message = f"no namespace {namespace[:64]!r}; use " + " or ".join(repr(n) for n in self.namespaces)
            self.on_refusal(
                "connect_refused",
                message,
                session.peer,
                {"namespace": namespace[:64], "code": WireCode.NOT_FOUND.value},
            )
            self._send(
                client,
                CONNECT_ERROR,
                namespace,
                {
                    "message": "Invalid namespace",
                    "data": self._shapes.connect_error(WireCode.NOT_FOUND, message),
                },
            )
            return
        if auth is not None and not isinstance(auth, dict):
            session.protocol_error("a CONNECT payload that is not an object")
            return
        if connection is not None:
            session.protocol_error(f"a second CONNECT to {namespace}")
            return
        connection = SocketConnection(client, namespace)
        client[namespace] = connection
        self._spawn(self._run_connect(handler, connection, auth))

    async def _run_connect(
        self, handler: Namespace, connection: SocketConnection, auth: dict[str, Any] | None
    ) -> None:
        try:
            await handler.connect(connection, auth)
        except Refused as refused:
            self._refuse(connection, refused)
            return
        except Exception:
            log.exception("connect_handler_failed namespace=%s", connection.namespace)
            self._refuse(
                connection,
                Refused(
                    "connection set-up failed",
                    self._shapes.connect_error(WireCode.INTERNAL, "connection set-up failed"),
                ),
            )
            return
        if connection.state is not State.CONNECTING:
            # The session ended while the handler ran: undo what it set up.
            handler.disconnected(connection, TRANSPORT_CLOSE)
            return
        client = connection.client
        connection.state = State.CONNECTED
        client.session.namespace_connected()
        self._send(client, CONNECT, connection.namespace, {"sid": connection.sid})
        handler.connected(connection)
        waiting, connection.waiting = connection.waiting, None
        for raw in waiting or ():
            if client.session.closed or connection.state is not State.CONNECTED:
                break
            self.receive(client, raw)

    def _refuse(self, connection: SocketConnection, refused: Refused) -> None:
        if connection.state is State.CLOSED:
            return
        connection.state = State.CLOSED
        client = connection.client
        if client.get(connection.namespace) is connection:
            del client[connection.namespace]
        self._send(
            client, CONNECT_ERROR, connection.namespace, {"message": refused.message, "data": refused.data}
        )

    def _event(self, connection: SocketConnection, ack_id: int | None, data: Any, raw: str) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            connection.client.session.protocol_error(
                f"an EVENT whose payload is not [name, ...]: {raw[:40]!r}"
            )
            return
        handler = self.namespaces[connection.namespace]
        self._spawn(self._run_event(connection, handler.event(connection, data[0], data[1:]), ack_id))

    async def _run_event(
        self, connection: SocketConnection, handling: Awaitable[Any], ack_id: int | None
    ) -> None:
        reply = await handling
        if ack_id is not None and connection.state is State.CONNECTED:
            self._ack(connection.client, connection.namespace, reply, ack_id)

    def _binary_event(self, connection: SocketConnection, packet: SocketPacket) -> None:
        # Binary payloads are not part of this protocol (events are JSON): answered, not
        # processed. Its attachments follow as binary messages and are read past.
        client = connection.client
        count = packet.attachment_count
        if count > _MAX_ATTACHMENTS:
            client.session.protocol_error("too many binary attachments")
            return
        if packet.id is not None:
            reply = self._shapes.ack_error(WireCode.UNSUPPORTED, "binary payloads are not supported")
            self._ack(client, connection.namespace, reply, packet.id)
        client.attachments_due = count

    def _too_large(self, client: SocketClient, data: str) -> None:
        header = event_header(data)
        if header is None:
            client.session.protocol_error("an oversized, malformed event")
            return
        namespace, ack_id = header
        connection = client.get(namespace)
        self.on_refusal(
            "payload_too_large",
            f"an event of {len(data)} bytes",
            client.session.peer,
            {"namespace": namespace[:64]},
        )
        if ack_id is not None and connection is not None and connection.connected:
            reply = self._shapes.ack_error(
                WireCode.TOO_LARGE, f"event is {len(data)} bytes; the limit is {self.max_event_bytes}"
            )
            self._ack(client, namespace, reply, ack_id)

    def _end(self, connection: SocketConnection, reason: str) -> None:
        if connection.state is State.CLOSED:
            return
        was_connected = connection.state is State.CONNECTED
        connection.state = State.CLOSED
        client = connection.client
        if client.get(connection.namespace) is connection:
            del client[connection.namespace]
            if was_connected and not any(c.connected for c in client.values()):
                client.session.namespaces_left()
        if was_connected:
            self.namespaces[connection.namespace].disconnected(connection, reason)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self, timeout: float) -> None:
        """Wait (bounded) for the handlers still running, at shutdown."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    # Counts

    @staticmethod
    def connection_counts(sessions: Iterable[EngineSession]) -> Counter[tuple[str, str]]:
        """Connected namespaces by (namespace, transport)."""
        counts: Counter[tuple[str, str]] = Counter()
        for session in sessions:
            client = session.listener
            if isinstance(client, SocketClient):
                transport = session.transport_name
                for namespace, connection in client.items():
                    if connection.connected:
                        counts[(namespace, transport)] += 1
        return counts
