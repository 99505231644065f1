"""Delivery of envelopes to the connections in a room: encoded once, handed to each socket.

python-socketio's own emit starts an asyncio task per recipient; here one broadcast encodes one
packet (and one websocket frame, see directws) and hands that same object to every recipient's
send queue, in one pass with no suspension, which also makes the order of deliveries the order
of publishes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

from ..records import Envelope
from .directws import FramedPacket

log = logging.getLogger("notifier.fanout")

USER_NAMESPACE = "/"

# A connection whose unsent backlog passes this many packets has stopped reading; it is
# disconnected (it recovers what it missed on reconnect) instead of growing server memory.
# (On a websocket, packets count here only once the transport's buffer is full: directws.)
DEFAULT_MAX_BACKLOG = 2000


class SocketFanOut:
    """The service's Emitter over a python-socketio server, with per-connection gates.

    A gate holds a connection's live events while its replay is being prepared, so that the
    replay goes first and nothing is delivered twice or skipped at the seam.
    """

    def __init__(self, sio: socketio.AsyncServer, max_backlog: int = DEFAULT_MAX_BACKLOG) -> None:
        self._sio = sio
        self._max_backlog = max_backlog
        self._gates: dict[str, list[tuple[str, int, eio_packet.Packet]]] = {}
        self._evicting: dict[str, asyncio.Task[None]] = {}

    def encode(self, event: str, data: Any, namespace: str = USER_NAMESPACE) -> FramedPacket:
        """One Engine.IO packet, and its websocket frame, for every recipient."""
        pkt = self._sio.packet_class(sio_packet.EVENT, namespace=namespace, data=[event, data])
        return FramedPacket(pkt.encode())

    async def emit(self, envelope: Envelope) -> None:
        room = envelope["room"]
        packet = self.encode(envelope["type"], envelope)
        offset = envelope["offset"]
        members = self._sio.manager.rooms.get(USER_NAMESPACE, {}).get(room)
        if not members:
            return
        gates = self._gates
        # No copy of the member list: nothing below suspends or changes room membership.
        for sid, eio_sid in members.items():
            gate = gates.get(sid) if gates else None
            if gate is not None:
                gate.append((room, offset, packet))
            else:
                self._queue(eio_sid, packet)

    def send_direct(
        self, sid: str, event: str, data: Any, namespace: str = USER_NAMESPACE
    ) -> None:
        """An event for one connection only (session, auth.expired), queued in order."""
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, namespace)
        if eio_sid is not None:
            self._queue(eio_sid, self.encode(event, data, namespace))

    def user_connection_count(self) -> int:
        return len(self._sio.manager.rooms.get(USER_NAMESPACE, {}).get(None, {}))

    def hold(self, sid: str) -> None:
        """Start holding the connection's live events."""
        self._gates[sid] = []

    def release(
        self, sid: str, first: list[eio_packet.Packet], positions: dict[str, int]
    ) -> None:
        """Send `first` (the replay), then the held events the replay did not already cover."""
        held = self._gates.pop(sid, [])
        eio_sid = self._sio.manager.eio_sid_from_sid(sid, USER_NAMESPACE)
        if eio_sid is None:
            return
        for packet in first:
            self._queue(eio_sid, packet)
        for room, offset, packet in held:
            if offset > positions.get(room, 0):
                self._queue(eio_sid, packet)

    def drop(self, sid: str) -> None:
        self._gates.pop(sid, None)

    def _queue(self, eio_sid: str, packet: eio_packet.Packet) -> None:
        socket = self._sio.eio.sockets.get(eio_sid)
        if socket is None or socket.closed:
            return
        if socket.queue.qsize() >= self._max_backlog:
            self._evict(eio_sid)
            return
        socket.queue.put_nowait(packet)

    def _evict(self, eio_sid: str) -> None:
        if eio_sid in self._evicting:
            return
        log.warning("event=slow_consumer_disconnected eio_sid=%s", eio_sid)
        task = asyncio.get_running_loop().create_task(self._drop(eio_sid))
        self._evicting[eio_sid] = task
        task.add_done_callback(lambda _: self._evicting.pop(eio_sid, None))

    async def _drop(self, eio_sid: str) -> None:
        # Not engineio's disconnect: it waits for the backlog to drain, which never happens.
        socket = self._sio.eio.sockets.get(eio_sid)
        if socket is None:
            return
        await socket.close(wait=False, abort=True, reason=self._sio.eio.reason.TRANSPORT_ERROR)
        if socket.upgraded:
            socket.queue.abort()  # a websocket: drop the transport, unsent frames and all
        else:
            socket.queue.put_nowait(None)  # a pending long-poll returns
