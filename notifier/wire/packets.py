"""Every packet the wire layer writes or reads: Engine.IO packets and payloads, Socket.IO
packets (python-socketio's codec, with orjson), websocket frames.

Socket.IO EVENT packets are built here by string concatenation, which is safe only because
an event name is checked (`is_safe_event_name`) before it is placed between quotes: the
fan-out's hot path puts already-encoded JSON after it without decoding anything.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Iterator
from typing import Any

import orjson
from socketio import packet as sio_packet

from . import jsonlib

# Engine.IO v4 packet types (the first character of a packet).
OPEN, CLOSE, PING, PONG, MESSAGE, UPGRADE, NOOP = "0123456"
PAYLOAD_SEPARATOR = "\x1e"
# python-engineio's client (engineio.payload.Payload.max_decode_packets) takes no more.
MAX_PACKETS_PER_POLL = 16
PROBE = "probe"

# Socket.IO v5 packet types.
CONNECT, DISCONNECT, EVENT, ACK, CONNECT_ERROR, BINARY_EVENT, BINARY_ACK = range(7)

# Websocket opcodes (RFC 6455 section 5.2).
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA

# Names that need no JSON escaping: what may stand between quotes as they are.
_SAFE_EVENT_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")


def is_safe_event_name(name: str) -> bool:
    """True when `name` can be written into a packet as it is (no escaping needed)."""
    return _SAFE_EVENT_NAME.fullmatch(name) is not None


# Websocket frames


def websocket_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """An unmasked, final, uncompressed frame, as servers send."""
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = struct.pack("!BB", first, length)
    elif length < 65536:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


def text_frame(text: str) -> bytes:
    return websocket_frame(text.encode())


def close_frame(code: int) -> bytes:
    return websocket_frame(struct.pack("!H", code), OP_CLOSE)


PING_FRAME = text_frame(PING)
PONG_PROBE_FRAME = text_frame(PONG + PROBE)


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


# Engine.IO


def open_packet(
    sid: str, upgrades: list[str], ping_interval: float, ping_timeout: float, max_payload: int
) -> str:
    """The OPEN packet: sid, upgrades, heartbeat (milliseconds) and the largest message."""
    return (
        OPEN
        + orjson.dumps(
            {
                "sid": sid,
                "upgrades": upgrades,
                "pingInterval": int(ping_interval * 1000),
                "pingTimeout": int(ping_timeout * 1000),
                "maxPayload": max_payload,
            }
        ).decode()
    )


def polling_payload(packets: list[str]) -> str:
    """Packets for one long-poll answer (NOOP when there are none)."""
    return PAYLOAD_SEPARATOR.join(packets) if packets else NOOP


class MalformedPayload(ValueError):
    """A long-polling body that is not a sequence of packets."""


def polling_packets(body: str) -> Iterator[str | bytes]:
    """The packets of a long-polling POST body: separated by \\x1e, binary ones in base64."""
    for part in body.split(PAYLOAD_SEPARATOR):
        if part.startswith("b"):
            try:
                yield base64.b64decode(part[1:], validate=True)
            except binascii.Error:
                raise MalformedPayload("invalid base64 in a polling payload") from None
        else:
            yield part


# Socket.IO


class SocketPacket(sio_packet.Packet):  # type: ignore[misc]
    """A decoded Socket.IO packet (python-socketio's codec)."""

    json = jsonlib  # orjson, without changing python-socketio's process-wide default

    packet_type: Any
    namespace: str | None
    data: Any
    id: int | None
    attachment_count: int


def decode(text: str) -> SocketPacket:
    """A Socket.IO packet from its text; raises on whatever is not one."""
    return SocketPacket(encoded_packet=text)


def encode(packet_type: int, namespace: str, data: Any = None, ack_id: int | None = None) -> str:
    """A Socket.IO packet inside an Engine.IO MESSAGE (`4<type>[<ns>,][<ack id>][<json>]`)."""
    text = MESSAGE + str(packet_type)
    if namespace != "/":
        text += namespace + ","
    if ack_id is not None:
        text += str(ack_id)
    if data is not None:
        text += orjson.dumps(data).decode()
    return text


def _event_prefix(namespace: str) -> str:
    return "42" if namespace == "/" else f"42{namespace},"


def encode_event(event: str, data: Any, namespace: str = "/") -> Outbound:
    """An EVENT for any number of recipients, encoded once."""
    return Outbound(_event_prefix(namespace) + orjson.dumps([event, data]).decode())


def event_with_json(event: str, data_json: str, namespace: str = "/") -> Outbound:
    """An EVENT whose argument is already JSON text (the fan-out: encoded once by whoever
    appended the event). The name must be safe (`is_safe_event_name`): a name that is not is
    encoded the slow way, so the packet is always valid JSON."""
    if not is_safe_event_name(event):
        return Outbound(_event_prefix(namespace) + "[" + orjson.dumps(event).decode() + "," + data_json + "]")
    return Outbound(f'{_event_prefix(namespace)}["{event}",{data_json}]')


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
