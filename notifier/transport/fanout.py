"""Delivery of envelopes to the connections in a room: encoded once, handed to each session.

One broadcast becomes one Engine.IO packet (and, on first use, one websocket frame) that every
recipient's session takes as it is, in one pass with no suspension, which also makes the order
of deliveries the order in which envelopes arrive here.

A connection's gate holds its live events while its replay is being prepared, so that the
replay goes first and nothing is delivered twice or skipped at the seam.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from ..broker import UNKEPT, Delivery
from ..logs import get_logger
from ..metrics import Tally
from ..rooms import ALL_PROJECTS_ROOM, BROADCAST_ROOM
from ..wire import Outbound, SocketConnection, encode_event, event_with_json

log = get_logger("notifier.fanout")

USER_NAMESPACE = "/"

# A held delivery: the room, the event's offset there, and the encoded packet.
Held = tuple[str, int, Outbound]


class SocketFanOut:
    """Room membership on this node, and the service's way to its connections (`Transport`).

    Seams: a connection joins a room by reading its history up to a position. If this node's
    delivery of that room is still behind that position (a broker delivering across nodes can
    be), the connection must skip what its replay already had: it gets a floor, checked only
    while one is set for the room, and dropped once delivery has passed it.
    """

    def __init__(self) -> None:
        self._rooms: dict[str, dict[SocketConnection, None]] = {}
        # Told when the last connection here leaves a room (the broker stops following it).
        self.on_room_empty: Callable[[str], None] = lambda room: None
        # Per room with members: the (epoch, offset) delivered last, and the floors set.
        self._through: dict[str, tuple[str, int]] = {}
        self._floors: dict[str, dict[SocketConnection, tuple[str, int]]] = {}
        # For the metrics: events handed to connections here, by type; deliveries that raised.
        self.delivered = Tally()
        self.failures = 0

    # Membership

    def join(self, connection: SocketConnection, room: str) -> bool:
        """Add the connection to the room; True if it is the room's first here."""
        members = self._rooms.get(room)
        if members is None:
            self._rooms[room] = {connection: None}
            return True
        members[connection] = None
        return False

    def leave(self, connection: SocketConnection, room: str) -> None:
        members = self._rooms.get(room)
        if members is not None:
            members.pop(connection, None)
            floors = self._floors.get(room)
            if floors is not None:
                floors.pop(connection, None)
            if not members:
                del self._rooms[room]
                self._through.pop(room, None)
                self._floors.pop(room, None)
                self.on_room_empty(room)

    def members(self, room: str) -> list[SocketConnection]:
        return list(self._rooms.get(room, ()))

    def has_members(self, room: str) -> bool:
        return room in self._rooms

    def room_count(self) -> int:
        return len(self._rooms)

    def user_connection_count(self) -> int:
        return len(self._rooms.get(BROADCAST_ROOM, ()))

    # Delivery

    def deliver(self, delivery: Delivery) -> None:
        """Send an event to every connection in its room on this node."""
        room = delivery.room
        members = self._rooms.get(room)
        if room[:8] == "project:" and ALL_PROJECTS_ROOM in self._rooms:
            self._deliver_to_all_projects(delivery, members)
        if not members:
            return
        packet = event_with_json(delivery.type, delivery.text)
        offset = delivery.offset
        self.delivered.add(delivery.type, len(members))
        if not delivery.kept:  # not in the history: no seam with a replay to mind
            for connection in members:
                try:
                    if connection.gate is None:
                        connection.session.send(packet)
                    else:
                        connection.gate.append((room, offset, packet))
                except Exception:
                    self._failed(connection)
            return
        self._through[room] = (delivery.epoch, offset)
        floors = self._floors.get(room)
        if floors is not None:
            self._deliver_past_floors(members, floors, delivery, packet)
            return
        # No copy of the member list: nothing below suspends or changes room membership.
        # (A failure costs only its connection; `try` costs nothing until something raises.)
        for connection in members:
            try:
                gate = connection.gate
                if gate is None:
                    connection.session.send(packet)
                else:
                    gate.append((room, offset, packet))
            except Exception:
                self._failed(connection)

    def _deliver_to_all_projects(
        self,
        delivery: Delivery,
        members: dict[SocketConnection, None] | None,
    ) -> None:
        """The all-projects feed: live only, and once for a connection also in the room."""
        packet = event_with_json(delivery.type, delivery.text)
        for connection in self._rooms[ALL_PROJECTS_ROOM]:
            if members is not None and connection in members:
                continue
            try:
                if connection.gate is None:
                    connection.session.send(packet)
                else:
                    connection.gate.append((delivery.room, UNKEPT, packet))
            except Exception:
                self._failed(connection)

    def _deliver_past_floors(
        self,
        members: dict[SocketConnection, None],
        floors: dict[SocketConnection, tuple[str, int]],
        delivery: Delivery,
        packet: Outbound,
    ) -> None:
        room, epoch, offset = delivery.room, delivery.epoch, delivery.offset
        for connection in members:
            floor = floors.get(connection)
            if floor is not None and floor[0] == epoch and offset <= floor[1]:
                continue  # its replay had this one
            try:
                gate = connection.gate
                if gate is None:
                    connection.session.send(packet)
                else:
                    gate.append((room, offset, packet))
            except Exception:
                self._failed(connection)
        for connection, (floor_epoch, floor_offset) in list(floors.items()):
            if floor_epoch != epoch or floor_offset <= offset:
                del floors[connection]
        if not floors:
            del self._floors[room]

    def _failed(self, connection: SocketConnection) -> None:
        """Handing an event to this connection raised (a defect, not the client's doing): it
        alone ends, and recovers what it missed when it reconnects. Logged once a process:
        this runs inside a commit and must not flood the log either. The session is dropped
        after this pass, not during it: leaving its rooms now would change the member list
        being walked."""
        self.failures += 1
        if self.failures == 1:
            log.exception(
                "delivery_failed",
                sid=connection.sid,
                detail="the connection is dropped; further failures are counted only",
            )
        asyncio.get_running_loop().call_soon(_drop_quietly, connection)

    def drop_members(self, room: str, reason: str) -> None:
        """End the sessions of the room's connections here without a goodbye: their clients
        reconnect and recover (or are told they cannot)."""
        for connection in list(self._rooms.get(room, ())):
            connection.drop(reason)

    def send_direct(self, connection: SocketConnection, event: str, data: Any) -> None:
        """An event for one connection only (session, auth.expired), queued in order."""
        if connection.connected:
            connection.send(encode_event(event, data, connection.namespace))

    def hold(self, connection: SocketConnection) -> None:
        """Start holding the connection's live events."""
        if connection.gate is None:
            connection.gate = []

    def release(
        self,
        connection: SocketConnection,
        first: list[Outbound],
        positions: dict[str, tuple[str, int]],
    ) -> None:
        """Send `first` (the replay), then the held events the replay did not already cover."""
        held, connection.gate = connection.gate or [], None
        if not connection.connected:
            return
        send = connection.session.send
        for packet in first:
            send(packet)
        for room, offset, packet in held:
            position = positions.get(room)
            if position is None or offset > position[1] or offset == UNKEPT:
                send(packet)
        for room, (epoch, offset) in positions.items():
            through = self._through.get(room)
            if through is None or through[0] != epoch or through[1] < offset:
                self._floors.setdefault(room, {})[connection] = (epoch, offset)


def _drop_quietly(connection: SocketConnection) -> None:
    with contextlib.suppress(Exception):
        connection.drop("delivery failed")
