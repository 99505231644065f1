"""An Engine.IO v4 / Socket.IO v5 server over asyncio and aiohttp's handshake (README.md).

It imports nothing of notifier: its owner hands it callbacks and small Protocols, and maps
its codes (`WireCode`) to its own.
"""

from .aiohttp_adapter import GuardedRunner
from .codes import WireCode
from .engine import EngineOptions, EngineServer, TransportError
from .packets import Outbound, encode_event, event_with_json, is_safe_event_name
from .ratelimit import TokenBucket, Verdict
from .session import EngineSession
from .sockets import ErrorShapes, Namespace, Refused, SocketConnection, SocketServer
from .timewheel import TimeWheel

__all__ = [
    "EngineOptions",
    "EngineServer",
    "EngineSession",
    "ErrorShapes",
    "GuardedRunner",
    "Namespace",
    "Outbound",
    "Refused",
    "SocketConnection",
    "SocketServer",
    "TimeWheel",
    "TokenBucket",
    "TransportError",
    "Verdict",
    "WireCode",
    "encode_event",
    "event_with_json",
    "is_safe_event_name",
]
