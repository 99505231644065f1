"""Delivery of envelopes to the connections in a room: encoded once, handed to each session.

One broadcast becomes one Engine.IO packet (and, on first use, one websocket frame) that every
recipient's session takes as it is, in one pass with no suspension, which also makes the order
of deliveries the order in which envelopes arrive here.

A connection's gate holds its live events while its replay is being prepared, so that the
replay goes first and nothing is delivered twice or skipped at the seam.
"""

from __future__ import annotations

from typing import Any

from ..records import Envelope
from .engine_session import Outbound
from .socket_server import SocketConnection, encode_event

USER_NAMESPACE = "/"
BROADCAST_ROOM = "*"

# A held delivery: the room, the event's offset there, and the encoded packet.
Held = tuple[str, int, Outbound]


class SocketFanOut:
    """Room membership on this node, and the service's way to its connections."""

    def __init__(self) -> None:
        self._rooms: dict[str, dict[SocketConnection, None]] = {}

    # Membership

    def join(self, connection: SocketConnection, room: str) -> None:
        members = self._rooms.get(room)
        if members is None:
            self._rooms[room] = {connection: None}
        else:
            members[connection] = None

    def leave(self, connection: SocketConnection, room: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(connection, None)
            if not members:
                del self._rooms[room]

    def members(self, room: str) -> list[SocketConnection]:
        return list(self._rooms.get(room, ()))

    def has_members(self, room: str) -> bool:
        return room in self._rooms

    def room_count(self) -> int:
        return len(self._rooms)

    def user_connection_count(self) -> int:
        return len(self._rooms.get(BROADCAST_ROOM, ()))

    # Delivery

    def deliver(self, envelope: Envelope) -> None:
        """Send an envelope to every connection in its room on this node."""
        room = envelope["room"]
        members = self._rooms.get(room)
        if not members:
            return
        packet = encode_event(envelope["type"], envelope)
        offset = envelope["offset"]
        # No copy of the member list: nothing below suspends or changes room membership.
        for connection in members:
            gate = connection.gate
            if gate is None:
                connection.session.send(packet)
            else:
                gate.append((room, offset, packet))

    async def emit(self, envelope: Envelope) -> None:
        self.deliver(envelope)

    def send_direct(self, connection: SocketConnection, event: str, data: Any) -> None:
        """An event for one connection only (session, auth.expired), queued in order."""
        if connection.connected:
            connection.session.send(encode_event(event, data, connection.namespace))

    def hold(self, connection: SocketConnection) -> None:
        """Start holding the connection's live events."""
        if connection.gate is None:
            connection.gate = []

    def release(
        self, connection: SocketConnection, first: list[Outbound], positions: dict[str, int]
    ) -> None:
        """Send `first` (the replay), then the held events the replay did not already cover."""
        held, connection.gate = connection.gate or [], None
        if not connection.connected:
            return
        session = connection.session
        for packet in first:
            session.send(packet)
        for room, offset, packet in held:
            if offset > positions.get(room, 0):
                session.send(packet)
