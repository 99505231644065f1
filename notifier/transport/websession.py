"""One Engine.IO websocket session, served by the request's own task and nothing else.

engineio's websocket handler runs a writer task (with a wait_for task on its queue) and a task
per read for every connection: their coroutines, contexts and timers alive for each idle
client were most of the per-connection memory. Here the request's task reads, and the send
queue writes by itself (DirectQueue, one write per connection per loop iteration).

The protocol is engineio's own: the upgrade from long-polling (probe ping, pong, NOOP to end
the poll, UPGRADE), then packets both ways, and the socket is closed when the websocket ends
or stays silent past the ping timeout.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import WSMsgType
from aiohttp.web import WebSocketResponse
from engineio import exceptions as eio_exceptions
from engineio import packet as eio_packet

from .directws import DirectQueue

log = logging.getLogger("notifier.websession")

_DATA = (WSMsgType.TEXT, WSMsgType.BINARY)


async def serve_websocket(socket: Any, websocket: WebSocketResponse) -> None:
    """Run an engineio socket over `websocket` until either side ends it."""
    server = socket.server
    silence_limit = server.ping_interval + server.ping_timeout
    # Connected over long-polling first: this is the upgrade, which may fail and leave the
    # socket on polling.
    if socket.connected and not await _upgraded(socket, websocket, silence_limit):
        await websocket.close()
        return
    socket.connected = True
    socket.upgraded = True
    queue: DirectQueue = socket.queue
    queue.take_over(websocket)
    try:
        while True:
            data = await _receive(websocket, silence_limit, server.max_http_buffer_size)
            if data is None:
                break
            packet = _decoded(data)
            if packet is None:
                log.info("event=malformed_packet sid=%s", socket.sid)
                break
            try:
                await socket.receive(packet)
            except eio_exceptions.UnknownPacketError:
                pass
            except eio_exceptions.SocketIsClosedError:
                break
            except Exception:
                # As engineio: a bug in a handler is logged, and the connection goes on.
                log.exception("event=receive_error sid=%s", socket.sid)
    finally:
        await websocket.close()
        await socket.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)


async def _receive(websocket: WebSocketResponse, timeout: float, max_bytes: int) -> Any:
    """The next text or binary message; None when the websocket ended or went silent."""
    try:
        message = await websocket.receive(timeout=timeout)
    except (TimeoutError, OSError):
        return None
    if message.type not in _DATA or len(message.data) > max_bytes:
        return None
    return message.data


async def _upgraded(socket: Any, websocket: WebSocketResponse, timeout: float) -> bool:
    """engineio's upgrade handshake; False (and the socket stays on polling) if it fails."""
    socket.upgrading = True  # engineio answers polls with NOOP from now on
    max_bytes = socket.server.max_http_buffer_size
    probe = await _receive(websocket, timeout, max_bytes)
    if probe is None or not _is(probe, eio_packet.PING, "probe"):
        socket.upgrading = False
        return False
    await websocket.send_str(eio_packet.Packet(eio_packet.PONG, data="probe").encode())
    socket.queue.put_nowait(eio_packet.Packet(eio_packet.NOOP))  # ends the pending poll
    upgrade = await _receive(websocket, timeout, max_bytes)
    socket.upgrading = False
    return upgrade is not None and _is(upgrade, eio_packet.UPGRADE)


def _decoded(data: Any) -> eio_packet.Packet | None:
    try:
        return eio_packet.Packet(encoded_packet=data)
    except Exception:  # whatever engineio's decoder makes of garbage: not a packet
        return None


def _is(data: Any, packet_type: int, payload: Any = None) -> bool:
    decoded = _decoded(data)
    return bool(
        decoded is not None
        and decoded.packet_type == packet_type
        and (payload is None or decoded.data == payload)
    )
