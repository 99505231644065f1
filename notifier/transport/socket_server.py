"""The Socket.IO v5 layer over Engine.IO sessions: namespaces, events and acknowledgements.

Packets are decoded with python-socketio's own packet class. What the protocol document
requires, this does: a session's first packet must be a CONNECT; an unknown namespace gets
CONNECT_ERROR (with a code in `data`); an EVENT whose payload is not a non-empty array with a
string first, an unknown packet type or a malformed ack id ends the session. Packets for a
namespace whose connect handler is still running wait (a bounded number) and are handled in
order after it.

Every event is handled in a task of its own, as python-socketio does: a slow handler never
holds up a connection's other events. Handlers get the event's arguments and return the ack's
payload, or None when there is nothing to answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from enum import Enum
from typing import Any, Protocol

import orjson
from socketio import packet as sio_packet

from ..errors import ErrorCode, NotifierError, error_body
from ..logs import get_logger
from ..metrics import Tally
from . import jsonlib
from .engine_session import FLOODING, MESSAGE, TRANSPORT_CLOSE, EngineSession, Outbound
from .session_ids import new_sid

log = get_logger("notifier.sockets")

CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

# Packets a client may send for a namespace while its CONNECT is being handled.
_MAX_WAITING_PACKETS = 64
_MAX_ATTACHMENTS = 10

# Why a namespace connection ended, as python-socketio names it for disconnect handlers.
CLIENT_DISCONNECT = "client namespace disconnect"
SERVER_DISCONNECT = "server namespace disconnect"


class _Packet(sio_packet.Packet):  # type: ignore[misc]
    json = jsonlib  # orjson, without changing python-socketio's process-wide default


class Refused(Exception):
    """A connect handler's refusal: becomes CONNECT_ERROR `{message, data: {code, message}}`."""

    def __init__(self, error: NotifierError) -> None:
        super().__init__(error.message)
        self.error = error


class State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


class SocketConnection:
    """One client's connection to one namespace."""

    __slots__ = ("data", "gate", "namespace", "session", "sid", "state", "waiting")

    def __init__(self, session: EngineSession, namespace: str) -> None:
        self.sid = new_sid()
        self.session = session
        self.namespace = namespace
        self.state = State.CONNECTING
        self.waiting: list[str | bytes] | None = []
        # Live deliveries held while a replay is prepared (see fanout).
        self.gate: list[Any] | None = None
        # What the namespace's handler keeps for this connection.
        self.data: Any = None

    @property
    def connected(self) -> bool:
        return self.state is State.CONNECTED


class Namespace(Protocol):
    """What a namespace's handler implements (see transport.sockets)."""

    async def connect(self, connection: SocketConnection, auth: dict[str, Any] | None) -> None:
        """Accept (return) or refuse (raise Refused)."""

    def connected(self, connection: SocketConnection) -> None:
        """Called right after the CONNECT answer is queued: the first moment to send."""

    def event(self, connection: SocketConnection, name: str, args: list[Any]) -> Awaitable[Any]:
        """Handle an event; the result (None for nothing) is the ack's payload."""
        ...

    def disconnected(self, connection: SocketConnection, reason: str) -> None: ...

    def flooding(self, connection: SocketConnection) -> None:
        """The session is closed for flooding; tell the client why (before it goes)."""


class SocketServer:
    """The Socket.IO side of every Engine.IO session (a `SessionHandler`)."""

    def __init__(self, max_event_bytes: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.namespaces: dict[str, Namespace] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # For the metrics: acks sent, by namespace and result (`ok` or the error code).
        self.acks = Tally()

    def register(self, name: str, namespace: Namespace) -> None:
        self.namespaces[name] = namespace

    # Sending

    def send_event(self, connection: SocketConnection, event: str, data: Any) -> None:
        if connection.state is not State.CLOSED:
            connection.session.send(encode_event(event, data, connection.namespace))

    def _send(self, session: EngineSession, packet_type: int, namespace: str, data: Any = None,
              ack_id: int | None = None) -> None:
        text = MESSAGE + encode(packet_type, namespace, data, ack_id)
        session.send(Outbound(text))

    def _ack(self, session: EngineSession, namespace: str, reply: Any, ack_id: int) -> None:
        error = reply.get("error") if isinstance(reply, dict) else None
        self.acks.add((namespace, error.get("code", "?") if isinstance(error, dict) else "ok"))
        self._send(session, ACK, namespace, [reply], ack_id)

    def disconnect(self, connection: SocketConnection) -> None:
        """End the connection to its namespace (the Engine.IO session stays)."""
        if connection.state is State.CLOSED:
            return
        self._send(connection.session, DISCONNECT, connection.namespace)
        self._end(connection, SERVER_DISCONNECT)

    # SessionHandler

    def on_message(self, session: EngineSession, data: str | bytes) -> None:
        if isinstance(data, bytes):
            if session.attachments_due:
                session.attachments_due -= 1  # an attachment of a refused binary event
            else:
                session.protocol_error("a binary message outside a binary event")
            return
        if len(data) > self.max_event_bytes and data[:1] == "2":
            self._too_large(session, data)
            return
        try:
            packet = _Packet(encoded_packet=data)
        except Exception:  # whatever the decoder makes of garbage: not a packet
            session.protocol_error(f"malformed Socket.IO packet {data[:40]!r}")
            return
        self._handle(session, packet, data)

    def on_refused(self, session: EngineSession, data: str | bytes) -> None:
        """Over the rate limit: an event that wants an ack gets RATE_LIMITED, cheaply."""
        if isinstance(data, str) and data[:1] == "2":
            header = event_header(data)
            if header is not None and header[1] is not None:
                namespace, ack_id = header
                connection = (session.sockets or {}).get(namespace)
                if connection is not None and connection.connected:
                    reply = error_body(ErrorCode.RATE_LIMITED, "too many events; slow down")
                    self._ack(session, namespace, reply, ack_id)

    def on_flood(self, session: EngineSession) -> None:
        for connection in list((session.sockets or {}).values()):
            if connection.connected:
                self.namespaces[connection.namespace].flooding(connection)
        session.close(FLOODING)

    def on_close(self, session: EngineSession, reason: str) -> None:
        sockets, session.sockets = session.sockets, None
        for connection in (sockets or {}).values():
            self._end(connection, reason)

    # Packets

    def _handle(self, session: EngineSession, packet: _Packet, raw: str) -> None:
        kind, namespace = packet.packet_type, packet.namespace or "/"
        if not isinstance(kind, int) or not 0 <= kind <= BINARY_ACK or namespace[:1] != "/":
            session.protocol_error(f"invalid Socket.IO packet {raw[:40]!r}")
            return
        connection = (session.sockets or {}).get(namespace)
        if kind == CONNECT:
            self._connect(session, namespace, packet.data, connection)
            return
        if connection is None:
            if not session.sockets:
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
        self, session: EngineSession, namespace: str, auth: Any,
        connection: SocketConnection | None,
    ) -> None:
        handler = self.namespaces.get(namespace)
        if handler is None:
            error = NotifierError(ErrorCode.NOT_FOUND, f"no namespace {namespace[:64]!r}; use "
                                  + " or ".join(repr(n) for n in self.namespaces))
            session.engine.client_error("connect_refused", error.message, session.peer,
                                        namespace=namespace[:64], code=error.code.value)
            self._send(session, CONNECT_ERROR, namespace,
                       {"message": "Invalid namespace", "data": error.to_dict()})
            return
        if auth is not None and not isinstance(auth, dict):
            session.protocol_error("a CONNECT payload that is not an object")
            return
        if connection is not None:
            session.protocol_error(f"a second CONNECT to {namespace}")
            return
        connection = SocketConnection(session, namespace)
        if session.sockets is None:
            session.sockets = {}
        session.sockets[namespace] = connection
        self._spawn(self._run_connect(handler, connection, auth))

    async def _run_connect(
        self, handler: Namespace, connection: SocketConnection, auth: dict[str, Any] | None
    ) -> None:
        try:
            await handler.connect(connection, auth)
        except Refused as refused:
            self._refuse(connection, refused.error)
            return
        except Exception:
            log.exception("connect_handler_failed", namespace=connection.namespace)
            self._refuse(connection, NotifierError(ErrorCode.INTERNAL, "connection set-up failed"))
            return
        if connection.state is not State.CONNECTING:
            # The session ended while the handler ran: undo what it set up.
            handler.disconnected(connection, TRANSPORT_CLOSE)
            return
        session = connection.session
        connection.state = State.CONNECTED
        self._send(session, CONNECT, connection.namespace, {"sid": connection.sid})
        handler.connected(connection)
        waiting, connection.waiting = connection.waiting, None
        for raw in waiting or ():
            if session.closed or connection.state is not State.CONNECTED:
                break
            self.on_message(session, raw)

    def _refuse(self, connection: SocketConnection, error: NotifierError) -> None:
        session = connection.session
        if connection.state is State.CLOSED:
            return
        connection.state = State.CLOSED
        sockets = session.sockets
        if sockets is not None and sockets.get(connection.namespace) is connection:
            del sockets[connection.namespace]
        self._send(session, CONNECT_ERROR, connection.namespace,
                   {"message": error.message, "data": error.to_dict()})
        if not sockets and not session.closed:
            session.restart_connect_timer()

    def _event(self, connection: SocketConnection, ack_id: int | None, data: Any, raw: str) -> None:
        if not isinstance(data, list) or not data or not isinstance(data[0], str):
            connection.session.protocol_error(f"an EVENT whose payload is not [name, ...]: {raw[:40]!r}")
            return
        handler = self.namespaces[connection.namespace]
        self._spawn(self._run_event(connection, handler.event(connection, data[0], data[1:]), ack_id))

    async def _run_event(
        self, connection: SocketConnection, handling: Awaitable[Any], ack_id: int | None
    ) -> None:
        reply = await handling
        if ack_id is not None and connection.state is State.CONNECTED:
            self._ack(connection.session, connection.namespace, reply, ack_id)

    def _binary_event(self, connection: SocketConnection, packet: _Packet) -> None:
        # Binary payloads are not part of notifier's protocol (events are JSON): answered, not
        # processed. Its attachments follow as binary messages and are read past.
        count = packet.attachment_count
        if count > _MAX_ATTACHMENTS:
            connection.session.protocol_error("too many binary attachments")
            return
        if packet.id is not None:
            reply = error_body(ErrorCode.INVALID_PAYLOAD, "binary payloads are not supported")
            self._ack(connection.session, connection.namespace, reply, packet.id)
        connection.session.attachments_due = count

    def _too_large(self, session: EngineSession, data: str) -> None:
        header = event_header(data)
        if header is None:
            session.protocol_error("an oversized, malformed event")
            return
        namespace, ack_id = header
        connection = (session.sockets or {}).get(namespace)
        log.info("payload_too_large", bytes=len(data), namespace=namespace)
        if ack_id is not None and connection is not None and connection.connected:
            reply = error_body(ErrorCode.PAYLOAD_TOO_LARGE,
                               f"event is {len(data)} bytes; the limit is {self.max_event_bytes}")
            self._ack(session, namespace, reply, ack_id)

    def _end(self, connection: SocketConnection, reason: str) -> None:
        if connection.state is State.CLOSED:
            return
        was_connected = connection.state is State.CONNECTED
        connection.state = State.CLOSED
        session = connection.session
        sockets = session.sockets
        if sockets is not None and sockets.get(connection.namespace) is connection:
            del sockets[connection.namespace]
            if not sockets and not session.closed:
                session.restart_connect_timer()
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


def encode(packet_type: int, namespace: str, data: Any = None, ack_id: int | None = None) -> str:
    """A Socket.IO packet, as text (`<type>[<namespace>,][<ack id>][<json>]`)."""
    text = str(packet_type)
    if namespace != "/":
        text += namespace + ","
    if ack_id is not None:
        text += str(ack_id)
    if data is not None:
        text += orjson.dumps(data).decode()
    return text


def encode_event(event: str, data: Any, namespace: str = "/") -> Outbound:
    """An EVENT for any number of recipients, encoded once."""
    prefix = "42" if namespace == "/" else f"42{namespace},"
    return Outbound(prefix + orjson.dumps([event, data]).decode())


def event_header(encoded: str) -> tuple[str, int | None] | None:
    """Namespace and ack id of an encoded EVENT packet (`2[/ns,][id][...]`), without decoding
    its JSON; None when it is not one."""
    if not encoded.startswith("2"):
        return None
    position = 1
    namespace = "/"
    if encoded.startswith("/", position):
        comma = encoded.find(",", position, position + 200)
        if comma < 0:
            return None
        namespace = encoded[position:comma]
        position = comma + 1
    end = position
    while end < len(encoded) and encoded[end].isdigit() and end - position < 18:
        end += 1
    ack_id = int(encoded[position:end]) if end > position else None
    return namespace, ack_id
