"""Replay of a room's missed events from a client's last known position.

Replays of one room that are asked for in the same loop iteration share one read of the
room's bounds and history (`SharedReplays`): a reconnect storm of N clients in a room costs
one read of that room, not N. Only requests made before a read starts share it: a client that
joins a room first and then asks for its replay must get a read made after it joined, or an
event appended in between would be neither replayed nor delivered live to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .broker import Broker
from .models import Position
from .records import Envelope, StreamPosition

EPOCH_CHANGED = "epoch_changed"
HISTORY_TRUNCATED = "history_truncated"


@dataclass
class Replay:
    """What a client missed in one room. `recovered` is None when it asked for no replay."""

    position: StreamPosition
    events: list[Envelope] = field(default_factory=list)
    recovered: bool | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class _Request:
    since: Position | None
    up_to: int | None
    answer: asyncio.Future[Replay]


class SharedReplays:
    def __init__(self, broker: Broker, limit: int) -> None:
        self._broker = broker
        self._limit = limit
        self._waiting: dict[str, list[_Request]] = {}
        self._reading: set[asyncio.Task[None]] = set()

    async def replay(self, room: str, since: Position | None, up_to: int | None) -> Replay:
        if since is None and not self._broker.shared:
            # Only the head, which the in-process broker has in memory: nothing to share.
            head, _ = await self._broker.bounds(room)
            return Replay(position=head)
        loop = asyncio.get_running_loop()
        request = _Request(since, up_to, loop.create_future())
        waiting = self._waiting.get(room)
        if waiting is None:
            self._waiting[room] = [request]
            loop.call_soon(self._start, room)
        else:
            waiting.append(request)
        return await request.answer

    def _start(self, room: str) -> None:
        requests = self._waiting.pop(room)
        task = asyncio.get_running_loop().create_task(self._read(room, requests))
        self._reading.add(task)
        task.add_done_callback(self._reading.discard)

    async def _read(self, room: str, requests: list[_Request]) -> None:
        try:
            head, first_retained = await self._broker.bounds(room)
            afters = [
                r.since.offset
                for r in requests
                if r.since is not None and _replayable(r.since, head, first_retained)
            ]
            events: list[Envelope] = []
            if afters:
                # After the bounds: with a broker shared by several processes, events appended
                # in between come back too, and positions must then cover them.
                events = [
                    event
                    for event in await self._broker.read(room, min(afters), self._limit)
                    if event["epoch"] == head.epoch
                ]
        except BaseException as exc:
            for request in requests:
                if not request.answer.done():
                    request.answer.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for request in requests:
            if not request.answer.done():
                request.answer.set_result(_replay_for(request, head, first_retained, events))


def _replayable(since: Position, head: StreamPosition, first_retained: int) -> bool:
    return since.epoch == head.epoch and since.offset <= head.offset and since.offset + 1 >= first_retained


def _replay_for(
    request: _Request, head: StreamPosition, first_retained: int, events: list[Envelope]
) -> Replay:
    """One client's replay from a shared read.

    A client positioned in another epoch, or beyond the head, is looking at a history this
    server no longer has; one positioned before the oldest retained event has a gap we cannot
    fill. Both must reload their state rather than trust a partial replay.
    """
    since, up_to = request.since, request.up_to
    if since is None:
        return Replay(position=head)
    if since.epoch != head.epoch or since.offset > head.offset:
        return Replay(position=head, recovered=False, reason=EPOCH_CHANGED)
    if since.offset + 1 < first_retained:
        return Replay(position=head, recovered=False, reason=HISTORY_TRUNCATED)
    mine = [
        event
        for event in events
        if event["offset"] > since.offset and (up_to is None or event["offset"] <= up_to)
    ]
    last = mine[-1]["offset"] if mine else since.offset
    if up_to is None:
        position = StreamPosition(head.epoch, max(head.offset, events[-1]["offset"] if events else 0, last))
    else:
        position = StreamPosition(head.epoch, max(last, up_to))
    return Replay(position=position, events=mine, recovered=True)
