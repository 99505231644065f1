"""Deadlines for many items at once, in buckets of `resolution` seconds.

A timer handle per connection per deadline (ping, pong, connect timeout, token expiry) was
measured at about 200 bytes each; idle connections are most of a notification service's, so
their deadlines are kept here instead (`TimeWheel`), and one loop timer is armed for the
earliest bucket (`Deadlines`). A deadline fires no earlier than due and at most `resolution`
late.

The owner keeps the deadline it set for an item and `discard`s it when the deadline moves or
the item ends, so the wheel never holds an item that has nothing left to time: a closed
connection is freed at once.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class TimeWheel(Generic[T]):
    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._buckets: dict[int, set[T]] = {}
        self._keys: list[int] = []  # a heap of the buckets' keys (each key once)
        # Buckets up to this one are swept; None until the first sweep, which starts at
        # whatever is due by then (never at a bucket in the future).
        self._swept: int | None = None

    def _key(self, due: float) -> int:
        key = math.ceil(due / self.resolution)
        swept = self._swept
        # A deadline already past is due at the next sweep.
        return key if swept is None or key > swept else swept + 1

    def add(self, item: T, due: float) -> None:
        key = self._key(due)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = {item}
            heapq.heappush(self._keys, key)
        else:
            bucket.add(item)

    def discard(self, item: T, due: float) -> None:
        """Forget the item's entry for `due` (the deadline it was added with)."""
        key = self._key(due)
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(item)

    def next_due(self) -> float | None:
        """When the earliest bucket with entries is due (None when there is none)."""
        keys, buckets = self._keys, self._buckets
        while keys:
            key = keys[0]
            if buckets.get(key):
                return key * self.resolution
            heapq.heappop(keys)  # a bucket whose entries were all discarded
            buckets.pop(key, None)
        return None

    def sweep(self, now: float, fire: Callable[[T], None]) -> None:
        """Call `fire(item)` for every entry due by `now`; each entry fires once. What `fire`
        adds lands in a later bucket, so a sweep always ends."""
        last = math.floor(now / self.resolution)
        if self._swept is None or last > self._swept:
            self._swept = last
        keys, buckets = self._keys, self._buckets
        while keys and keys[0] <= last:
            bucket = buckets.pop(heapq.heappop(keys), None)
            for item in bucket or ():
                fire(item)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


class Deadlines(Generic[T]):
    """A time wheel with one loop timer, armed for its earliest bucket: `fire(item)` runs no
    earlier than the item's deadline and at most `resolution` (plus the loop's own lateness)
    after it. The owner keeps each item's current deadline and passes it back to move or
    cancel it."""

    def __init__(self, resolution: float, fire: Callable[[T], None]) -> None:
        self._wheel: TimeWheel[T] = TimeWheel(resolution)
        self._fire = fire
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._loop = None

    def move(self, item: T, before: float | None, due: float) -> None:
        """The item's deadline is now `due` (it was `before`, None for none)."""
        if before is not None:
            self._wheel.discard(item, before)
        self._wheel.add(item, due)
        if self._loop is not None and (self._timer is None or due < self._timer_at):
            self._arm()

    def cancel(self, item: T, due: float) -> None:
        self._wheel.discard(item, due)

    def __len__(self) -> int:
        return len(self._wheel)

    def _arm(self) -> None:
        loop = self._loop
        if loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        due = self._wheel.next_due()
        if due is not None:
            self._timer_at = due
            self._timer = loop.call_at(due, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        try:
            self._wheel.sweep(loop.time(), self._fire)
        finally:
            self._arm()
