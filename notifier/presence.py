"""Who is in a project or task room: users, each with a count of connections.

Connections enter and leave here; the backend (in-process, or Redis for a cluster) keeps the
counts of every node. A user becomes present with their first connection anywhere
(`presence.joined`) and absent once their last one has been gone for the grace period
(`presence.left`), so a device that drops and reconnects, to this node or another, causes no
leave/join pair. Both are published into the room like any event.

Changes are coalesced per loop iteration (net counts per room and user: a connection that
comes and goes in one iteration costs nothing) and sent as one batch. A backend that lost this
node's entries (it was thought dead, or Redis lost its data) is given them again from the
counts kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .broker import EntriesLost, Member, PresenceBackend
from .errors import ErrorCode, NotifierError
from .logs import get_logger
from .rooms import ALL_PROJECTS_ROOM, RoomKind, parse_room

log = get_logger("notifier.presence")

PRESENCE_KINDS = frozenset({RoomKind.PROJECT, RoomKind.TASK})
Announce = Callable[[str, Sequence[Member]], Awaitable[None]]


def tracked(room: str) -> bool:
    """Presence is kept for project and task rooms (not the all-projects feed)."""
    return room != ALL_PROJECTS_ROOM and parse_room(room).kind in PRESENCE_KINDS


def check_tracked(room: str) -> None:
    if not tracked(room):
        raise NotifierError(
            ErrorCode.INVALID_PAYLOAD, f"room: presence is kept for project and task rooms, not {room!r}"
        )


class Presence:
    def __init__(
        self,
        backend: PresenceBackend,
        announce: Announce,
        *,
        ttl_seconds: float,
        sweep_seconds: float = 1.0,
    ) -> None:
        self._backend = backend
        self._announce = announce
        self._failure: str | None = None  # logged once, until presence works again
        self._ttl = ttl_seconds
        self._sweep_every = sweep_seconds
        self._counts: dict[Member, int] = {}
        self._pending: dict[Member, int] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._lost = False  # the backend may have lost our entries: give them all again
        self._timer: asyncio.Task[None] | None = None

    # Connections

    def enter(self, room: str, user: str) -> None:
        self._change((room, user), 1)

    def exit(self, room: str, user: str) -> None:
        self._change((room, user), -1)

    def _change(self, member: Member, delta: int) -> None:
        count = self._counts.get(member, 0) + delta
        if count > 0:
            self._counts[member] = count
        else:
            self._counts.pop(member, None)
        net = self._pending.get(member, 0) + delta
        if net:
            self._pending[member] = net
        else:
            self._pending.pop(member, None)
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending or self._lost:
                if self._lost:
                    self._pending.clear()
                    joined = await self._backend.replace_mine(dict(self._counts), time.time())
                    self._lost = False
                else:
                    deltas, self._pending = self._pending, {}
                    try:
                        joined = await self._backend.change(deltas, time.time())
                    except EntriesLost:
                        log.warning("presence_resync", entries=len(self._counts))
                        self._lost = True  # the counts here include these deltas
                        continue
                    except BaseException:
                        for member, delta in deltas.items():  # kept for the next attempt
                            self._pending[member] = self._pending.get(member, 0) + delta
                        raise
                await self._tell("presence.joined", joined)
        except NotifierError as exc:
            self._failed(f"presence could not be updated: {exc.message}")
        except Exception:
            log.exception("presence_update_failed")
        finally:
            self._flushing = None

    def _failed(self, detail: str) -> None:
        # The broker's own health reports the outage; presence catches up when it ends.
        if self._failure is None:
            log.warning("presence_unavailable", detail=detail)
        self._failure = detail

    async def _tell(self, event_type: str, members: Sequence[Member]) -> None:
        if members:
            await self._announce(event_type, members)

    # Reading

    async def members(self, room: str) -> list[dict[str, Any]]:
        check_tracked(room)
        users = await self._backend.members(room)
        return [{"user_id": user, "connections": count} for user, count in sorted(users.items())]

    async def stats(self, room: str) -> dict[str, int]:
        check_tracked(room)
        users = await self._backend.members(room)
        return {"users": len(users), "connections": sum(users.values())}

    # Upkeep: sweeping expired graces, heartbeats

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._upkeep(), name="presence")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        if self._flushing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._flushing), 2)
        with contextlib.suppress(NotifierError):
            await self._backend.remove_mine(time.time())

    async def _upkeep(self) -> None:
        beat_every = max(self._ttl / 3, self._sweep_every)
        next_beat = 0.0
        while True:
            try:
                now = time.time()
                if now >= next_beat:
                    next_beat = now + beat_every
                    if not await self._backend.heartbeat(now) and self._counts:
                        log.warning("presence_resync", entries=len(self._counts))
                        self._lost = True
                        if self._flushing is None:
                            self._flushing = asyncio.get_running_loop().create_task(self._flush())
                await self._tell("presence.left", await self._backend.sweep(now))
                if self._failure is not None:
                    self._failure = None
                    log.info("presence_recovered")
                    if self._pending and self._flushing is None:
                        self._flushing = asyncio.get_running_loop().create_task(self._flush())
            except NotifierError as exc:
                self._failed(f"presence upkeep failed: {exc.message}")
            except Exception:
                log.exception("presence_upkeep_failed")
            await asyncio.sleep(self._sweep_every)
