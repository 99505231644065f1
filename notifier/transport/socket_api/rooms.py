"""A connection's rooms: joining with a replay of what it missed, leaving, presence feeds.

A join holds the connection's live events (the fan-out's gate) while its replay is read, then
sends the replay first and the held events it did not cover, so nothing is delivered twice or
skipped at the seam.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ...auth import ALL_PROJECTS, Claims
from ...errors import ErrorCode, NotifierError
from ...metrics import Tally
from ...models import Position, SubscribeRequest, UnsubscribeRequest
from ...presence import tracked
from ...rooms import ALL_PROJECTS_ROOM, BROADCAST_ROOM, presence_feed, room_for_user
from ...service import Notifier
from ...settings import Settings
from ...wire import Outbound, SocketConnection, encode_event
from ..acks import Connection, Reply, claims_of, state_of
from ..fanout import USER_NAMESPACE, SocketFanOut

# Replayed packets kept for reuse: the newest events of the rooms being recovered.
_REPLAY_PACKETS = 20_000


@dataclass
class JoinBatch:
    """What a subscribe (or a connect with positions) joined, and the replay it owes."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    packets: list[Outbound] = field(default_factory=list)
    positions: dict[str, tuple[str, int]] = field(default_factory=dict)


class RoomMembership:
    def __init__(self, notifier: Notifier, fanout: SocketFanOut, settings: Settings) -> None:
        self._notifier = notifier
        self._fanout = fanout
        self._room_limit = settings.max_rooms_per_connection
        self._privileged_room_limit = settings.max_rooms_per_privileged_connection
        self._join_locks: dict[SocketConnection, asyncio.Lock] = {}
        self._replay_packets: OrderedDict[tuple[str, int, str], Outbound] = OrderedDict()
        # For the metrics: rooms clients asked to recover, by outcome and reason.
        self.replays = Tally()

    def room_limit(self, claims: Claims) -> int:
        """How many rooms a connection with these claims may be in: publishers, admins and
        `projects: *` tokens follow many more."""
        privileged = claims.can_publish or ALL_PROJECTS in claims.projects
        return self._privileged_room_limit if privileged else self._room_limit

    def join_lock(self, connection: SocketConnection) -> asyncio.Lock:
        """Held by whatever changes the connection's rooms (subscribe, renewal)."""
        return self._join_locks.setdefault(connection, asyncio.Lock())

    # Joining

    async def join(
        self,
        connection: SocketConnection,
        rooms: list[str],
        since: Mapping[str, Position | None],
        batch: JoinBatch,
        presence: frozenset[str] = frozenset(),
    ) -> None:
        """Join the rooms (with the presence feeds of those in `presence`), replaying what
        `since` asks for into `batch`."""
        state = state_of(connection)
        own = (BROADCAST_ROOM, room_for_user(state.claims.sub))  # everyone's, and the user's
        limit = self.room_limit(state.claims)
        for room in dict.fromkeys(rooms):
            if room not in state.joined and len(state.joined) >= limit:
                error = NotifierError(
                    ErrorCode.LIMIT_REACHED,
                    f"a connection may be in {limit} rooms "
                    "(NOTIFIER_MAX_ROOMS_PER_CONNECTION); leave some first",
                )
                batch.results[room] = {"joined": False, "error": error.to_dict()}
                continue
            try:
                task = None if room in own else await self._notifier.authorize_room(state.claims, room)
            except NotifierError as exc:
                batch.results[room] = {"joined": False, "error": exc.to_dict()}
                continue
            joined_at = state.joined.get(room)
            if room == ALL_PROJECTS_ROOM:  # live only: nothing to replay
                if joined_at is None:
                    state.joined[room] = 0
                    if self._fanout.join(connection, room):
                        await self._notifier.follow(room)
                batch.results[room] = {"joined": True, "live_only": True}
                continue
            if joined_at is None:
                # Enter first (and have the broker deliver the room here), then read the
                # history: an event appended after the read is held by the gate and delivered
                # live; one before it is in the replay.
                if self._fanout.join(connection, room):
                    await self._notifier.follow(room)
            replay = await self._notifier.replay(room, since.get(room), up_to=joined_at)
            if joined_at is None:
                state.joined[room] = replay.position.offset
                self._entered(connection, room)
            if room in presence and tracked(room):
                await self._follow_feed(connection, room)
            result: dict[str, Any] = {"joined": True, **replay.position.to_dict()}
            if replay.recovered is not None:
                result["recovered"] = replay.recovered
                result["replayed"] = len(replay.events)
                if replay.reason:
                    result["reason"] = replay.reason
                self.replays.add(("recovered" if replay.recovered else "not_recovered", replay.reason or ""))
            if task is not None:
                result["task"] = task.to_dict()
            batch.results[room] = result
            batch.positions[room] = (replay.position.epoch, replay.position.offset)
            self._notifier.observe(room, replay.position)
            for event in replay.events:
                batch.packets.append(self._replayed(event))

    def _replayed(self, event: dict[str, Any]) -> Outbound:
        """The packet of a replayed event, encoded once for every client that recovers it (a
        reconnect storm replays the same events to many)."""
        key = (event["room"], event["offset"], event["epoch"])
        packet = self._replay_packets.get(key)
        if packet is None:
            packet = encode_event(event["type"], {**event, "replayed": True})
            self._replay_packets[key] = packet
            if len(self._replay_packets) > _REPLAY_PACKETS:
                self._replay_packets.popitem(last=False)
        return packet

    async def _follow_feed(self, connection: SocketConnection, room: str) -> None:
        state = state_of(connection)
        feed = presence_feed(room)
        if state.feeds is None:
            state.feeds = set()
        if feed not in state.feeds:
            state.feeds.add(feed)
            if self._fanout.join(connection, feed):
                await self._notifier.follow(feed)

    # Leaving

    def leave_all(self, connection: SocketConnection) -> None:
        self._join_locks.pop(connection, None)
        state: Connection | None = connection.data
        if state is None:
            return
        for room in state.joined:
            self._fanout.leave(connection, room)
            self._exited(connection, room)
        state.joined.clear()
        for feed in state.feeds or ():
            self._fanout.leave(connection, feed)
        state.feeds = None

    def leave(self, connection: SocketConnection, room: str) -> bool:
        """Leave a room (and its presence feed); False if the connection was not in it."""
        state = state_of(connection)
        if state.joined.pop(room, None) is None:
            return False
        self._fanout.leave(connection, room)
        self._exited(connection, room)
        feed = presence_feed(room)
        if state.feeds and feed in state.feeds:
            state.feeds.discard(feed)
            self._fanout.leave(connection, feed)
        return True

    def _present(self, connection: SocketConnection, room: str) -> str | None:
        """The user whose presence in `room` counts (project and task rooms; their own room
        too while the service tells the application who is online)."""
        if connection.namespace != USER_NAMESPACE:
            return None
        user = claims_of(connection).sub
        if tracked(room) or (self._notifier.follows_users_online and room == room_for_user(user)):
            return user
        return None

    def _entered(self, connection: SocketConnection, room: str) -> None:
        if (user := self._present(connection, room)) is not None:
            self._notifier.presence.enter(room, user)

    def _exited(self, connection: SocketConnection, room: str) -> None:
        if (user := self._present(connection, room)) is not None:
            self._notifier.presence.exit(room, user)

    # The events

    async def subscribe(self, connection: SocketConnection, request: SubscribeRequest) -> Reply:
        batch = JoinBatch()
        async with self.join_lock(connection):
            self._fanout.hold(connection)
            try:
                presence = frozenset(request.rooms) if request.presence else frozenset()
                await self.join(connection, request.rooms, request.since, batch, presence)
            finally:
                self._fanout.release(connection, batch.packets, batch.positions)
        return {"rooms": batch.results}

    async def unsubscribe(self, connection: SocketConnection, request: UnsubscribeRequest) -> Reply:
        state = state_of(connection)
        personal = {BROADCAST_ROOM, room_for_user(state.claims.sub)}
        results: dict[str, Any] = {}
        async with self.join_lock(connection):
            for room in request.rooms:
                if room in personal:
                    error = NotifierError(ErrorCode.FORBIDDEN, "your own rooms cannot be left")
                    results[room] = {"left": False, "error": error.to_dict()}
                elif self.leave(connection, room):
                    results[room] = {"left": True}
                else:
                    results[room] = {
                        "left": False,
                        "error": {"code": ErrorCode.NOT_FOUND.value, "message": "not subscribed"},
                    }
        return {"rooms": results}
