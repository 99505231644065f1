"""Replay of a room's missed events from a client's last known position."""

from __future__ import annotations

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


async def replay_since(
    broker: Broker, room: str, since: Position | None, up_to: int | None, limit: int
) -> Replay:
    """Events of `room` after `since` (and at most `up_to`), or why they cannot be had.

    A client positioned in another epoch, or beyond the head, is looking at a history this
    server no longer has; one positioned before the oldest retained event has a gap we cannot
    fill. Both must reload their state rather than trust a partial replay.
    """
    head, first_retained = await broker.bounds(room)
    if since is None:
        return Replay(position=head)
    if since.epoch != head.epoch or since.offset > head.offset:
        return Replay(position=head, recovered=False, reason=EPOCH_CHANGED)
    if since.offset + 1 < first_retained:
        return Replay(position=head, recovered=False, reason=HISTORY_TRUNCATED)
    # Read after the bounds: with a broker shared by several processes, events appended in
    # between come back too, and the position must then cover them (or their live copies would
    # pass the seam a second time).
    events = [event for event in await broker.read(room, since.offset, limit)
              if event["epoch"] == head.epoch]
    if up_to is not None:
        events = [event for event in events if event["offset"] <= up_to]
    last = events[-1]["offset"] if events else since.offset
    if up_to is None:
        position = StreamPosition(head.epoch, max(head.offset, last))
    else:
        position = StreamPosition(head.epoch, max(last, up_to))
    return Replay(position=position, events=events, recovered=True)
