"""The single path every room event takes: record it in the room's history, then fan it out."""

from __future__ import annotations

from typing import Any, Protocol

from .clock import Clock, millis
from .records import Envelope, new_id
from .store import Store


class Emitter(Protocol):
    """Delivers envelopes to the connections in their room; lives in the transport."""

    async def emit(self, envelope: Envelope) -> None: ...

    def user_connection_count(self) -> int: ...


class _NoEmitter:
    async def emit(self, envelope: Envelope) -> None:
        return None

    def user_connection_count(self) -> int:
        return 0


class Publisher:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self.emitter: Emitter = _NoEmitter()

    async def publish(self, room: str, event_type: str, data: dict[str, Any]) -> Envelope:
        # Storing first means a client that reconnects can always replay what it missed;
        # nothing is delivered that could not be replayed.
        envelope = await self._store.append_event(
            room, event_type, data, millis(self._clock.now()), new_id()
        )
        await self.emitter.emit(envelope)
        return envelope
