"""The relay of the transactional outbox (`store/postgres_outbox.py`): what applications
published inside their own transactions reaches the rooms' histories once they commit, in
commit order per room, exactly once per event id, whichever node relays."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from .broker import NewEvent
from .errors import NotifierError
from .logs import get_logger
from .models import PublishRequest
from .rooms import parse_room
from .store import OutboxEvent, Relay

log = get_logger("notifier.service")

Publish = Callable[[Sequence[NewEvent]], Awaitable[Any]]
# How often a node looks at the outbox when no commit woke it (a LISTEN for the NOTIFY of
# `notifier_publish` wakes it at once): the most a lost wake-up can delay an event.
_EVERY_SECONDS = 0.2
_BATCH = 500


class OutboxSource(Protocol):
    """Where the outbox is: the PostgreSQL store, or the application's database."""

    async def relay_outbox(self, relay: Relay, limit: int) -> int: ...

    async def wait_for_outbox(self, timeout: float) -> None: ...


class OutboxRelay:
    def __init__(self, store: OutboxSource, publish: Publish) -> None:
        self._store = store
        self._publish = publish
        self._task: asyncio.Task[None] | None = None
        # For the metrics: relayed here, and refused (not a room, or a type of the service's).
        self.relayed = 0
        self.refused = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def relay_once(self) -> int:
        return await self._store.relay_outbox(self._append, _BATCH)

    async def _append(self, events: list[OutboxEvent]) -> list[OutboxEvent]:
        valid: list[NewEvent] = []
        for event in events:
            try:
                PublishRequest(room=event.room, type=event.type, data=event.data)
                parse_room(event.room)
            except (ValidationError, NotifierError) as exc:
                self.refused += 1
                log.warning(
                    "outbox_event_refused", seq=event.seq, room=event.room[:100], detail=str(exc)[:200]
                )
                continue
            valid.append(NewEvent(event.room, event.type, event.data, event.id, event.created_at, once=True))
        if valid:
            await self._publish(valid)
            self.relayed += len(valid)
        return events  # all of them leave the outbox: the refused ones are logged

    async def _loop(self) -> None:
        while True:
            try:
                while await self.relay_once() == _BATCH:
                    pass
            except NotifierError as exc:
                log.warning("outbox_relay_deferred", detail=exc.message)
            except Exception:
                log.exception("outbox_relay_failed")
            await self._store.wait_for_outbox(_EVERY_SECONDS)
