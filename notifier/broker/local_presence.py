"""Presence within one process (the in-process broker): counts in memory."""

from __future__ import annotations

from . import Member


class LocalPresence:
    def __init__(self, grace_seconds: float) -> None:
        self._grace = grace_seconds
        self._rooms: dict[str, dict[str, int]] = {}
        self._mine: dict[Member, int] = {}
        self._leaving: dict[Member, float] = {}  # no connection left: absent at this time

    async def change(self, deltas: dict[Member, int], now: float) -> list[Member]:
        joined = []
        for member, delta in deltas.items():
            mine = self._mine.get(member, 0)
            delta = max(delta, -mine)  # never below what this node added
            if not delta:
                continue
            self._mine[member] = mine + delta
            if not self._mine[member]:
                del self._mine[member]
            if self._add(member, delta, now):
                joined.append(member)
        return joined

    def _add(self, member: Member, delta: int, now: float) -> bool:
        """Apply a delta to the room's count; True if the user was absent until now."""
        room, user = member
        users = self._rooms.setdefault(room, {})
        before = users.get(user)
        after = max((before or 0) + delta, 0)
        users[user] = after
        if after == 0:
            self._leaving[member] = now + self._grace
        return before is None and after > 0

    async def sweep(self, now: float) -> list[Member]:
        left = []
        for member, due in list(self._leaving.items()):
            if due > now:
                continue
            del self._leaving[member]
            room, user = member
            users = self._rooms.get(room)
            if users is not None and users.get(user) == 0:
                del users[user]
                if not users:
                    del self._rooms[room]
                left.append(member)
        return left

    async def members(self, room: str) -> dict[str, int]:
        return dict(self._rooms.get(room, {}))

    async def heartbeat(self, now: float) -> bool:
        return True  # one process: its entries cannot be dropped without it

    async def replace_mine(self, counts: dict[Member, int], now: float) -> list[Member]:
        await self.remove_mine(now)
        return await self.change(counts, now)

    async def remove_mine(self, now: float) -> None:
        await self.change({member: -count for member, count in self._mine.items()}, now)
