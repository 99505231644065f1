"""The wire layer's own small vocabulary: why a request or packet was refused, and why a
session ended.

The owner maps `WireCode` to its own error codes (notifier: `transport/wire_errors.py`); the
close reasons are the words Socket.IO clients and logs use.
"""

from __future__ import annotations

from enum import StrEnum


class WireCode(StrEnum):
    """Why the wire layer refused something."""

    MALFORMED = "malformed"  # not a valid request, packet or payload
    NOT_FOUND = "not_found"  # unknown or closed session, unknown namespace
    TOO_LARGE = "too_large"  # over the largest message
    RATE_LIMITED = "rate_limited"  # over the session's rate limit
    UNSUPPORTED = "unsupported"  # binary payloads, JSONP, other protocol versions
    FORBIDDEN = "forbidden"  # an origin that is not allowed
    BUSY = "busy"  # the owner refused new sessions for now (admission, shutdown)
    TIMED_OUT = "timed_out"  # request headers that did not arrive in time
    INTERNAL = "internal"  # a handler of the owner's failed


# Why sessions end.
CLIENT_CLOSE = "client close"
TRANSPORT_CLOSE = "transport close"
TRANSPORT_ERROR = "transport error"
PING_TIMEOUT = "ping timeout"
# A long-polling client that did not poll again in time (it left, or a proxy moved it).
POLLING_GAP = "poll timeout"
PARSE_ERROR = "parse error"
CONNECT_TIMEOUT = "connect timeout"
SERVER_CLOSE = "server close"
SHUTTING_DOWN = "server shutting down"
SLOW_CONSUMER = "slow consumer"
FLOODING = "rate limit exceeded"

# Why a namespace connection ended, as python-socketio names it for disconnect handlers.
CLIENT_DISCONNECT = "client namespace disconnect"
SERVER_DISCONNECT = "server namespace disconnect"
