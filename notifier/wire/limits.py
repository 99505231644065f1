"""How many connections the process holds, and from whom: the numbers admission decides on.

HTTP connections are counted by the runner's server (`aiohttp_adapter.GuardedRunner`) while
aiohttp holds them; a websocket, once it leaves aiohttp, by the engine. The limits keep one
peer, or one process's worth of sockets, from taking every file descriptor: past them, new
sessions are refused with a status and `Retry-After` while the descriptors kept in reserve
still serve health checks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def decrement(counts: Counter[str], key: str) -> None:
    """One less under `key`; a key at zero is dropped (so counts of many peers stay small)."""
    left = counts[key] - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


@dataclass(frozen=True)
class ConnectionLimits:
    # Every TCP connection the application serves (HTTP and websockets); past it new
    # Engine.IO sessions get 503 and kept-alive HTTP connections are closed after one answer.
    max_connections: int = 1_000_000
    # Open HTTP connections from one address (refused at once past it).
    max_http_per_peer: int = 1_000_000
    # Engine.IO sessions from one address that have not connected a namespace yet.
    max_pending_per_peer: int = 1_000_000
    # Addresses exempt from the per-peer limits (proxies: their clients are many).
    exempt: frozenset[str] = frozenset()
    # What `Retry-After` says, in seconds.
    retry_after: int = 2


@dataclass
class OpenConnections:
    http: int = 0
    websockets: int = 0
    http_by_peer: Counter[str] = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return self.http + self.websockets

    def http_opened(self, peer: str) -> None:
        self.http += 1
        self.http_by_peer[peer] += 1

    def http_closed(self, peer: str) -> None:
        self.http -= 1
        decrement(self.http_by_peer, peer)
