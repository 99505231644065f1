"""Per-connection token buckets, with a verdict for clients that never stop flooding."""

from __future__ import annotations

from enum import Enum
from typing import Protocol

# A pause in rejections this long ends a flood: the client has slowed down to its limit.
_FLOOD_QUIET_SECONDS = 1.0


class MonotonicClock(Protocol):
    def monotonic(self) -> float: ...


class Verdict(Enum):
    ALLOW = "allow"
    REJECT = "reject"
    DISCONNECT = "disconnect"


class TokenBucket:
    """`rate` events per second with bursts up to `burst`.

    A client that is still being rejected `flood_seconds` after its first rejection (with no
    quiet second in between) gets DISCONNECT: it is not slowing down, so it is not listening.
    """

    __slots__ = (
        "_burst",
        "_clock",
        "_flood_seconds",
        "_flood_started",
        "_last_rejected",
        "_rate",
        "_tokens",
        "_updated",
    )

    def __init__(self, rate: float, burst: int, flood_seconds: float, clock: MonotonicClock) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._flood_seconds = flood_seconds
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock.monotonic()
        self._flood_started: float | None = None
        self._last_rejected = 0.0

    def raise_to(self, rate: float, burst: int) -> None:
        """Allow more from now on (a connection that proved it may publish)."""
        if rate > self._rate:
            self._rate = rate
        if burst > self._burst:
            self._tokens += burst - self._burst
            self._burst = float(burst)

    def take(self) -> Verdict:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1.0 - 1e-9:  # float refill of exactly one token must count
            self._tokens -= 1.0
            return Verdict.ALLOW
        if self._flood_started is None or now - self._last_rejected > _FLOOD_QUIET_SECONDS:
            self._flood_started = now
        self._last_rejected = now
        if now - self._flood_started >= self._flood_seconds:
            return Verdict.DISCONNECT
        return Verdict.REJECT
