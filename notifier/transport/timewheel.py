"""Deadlines for many connections at once, served by one timer.

A timer handle per connection per deadline (ping, pong, connect timeout, token expiry) was
measured at about 200 bytes each; idle connections are most of a notification service's, so
their deadlines are kept here instead: buckets of `resolution` seconds, swept by one loop
timer. A deadline fires at most `resolution` late, never early.

Entries are not removed when a deadline moves: the owner keeps the deadline it means, and
a stale entry is recognised (and dropped) when its bucket is swept.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class TimeWheel(Generic[T]):
    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._buckets: dict[int, set[T]] = {}
        self._swept = -1  # buckets up to this one are done

    def add(self, item: T, due: float) -> None:
        key = max(math.ceil(due / self.resolution), self._swept + 1)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = {item}
        else:
            bucket.add(item)

    def sweep(self, now: float, fire: Callable[[T], None]) -> None:
        """Call `fire(item)` for every entry due by `now` (the item checks its own deadline)."""
        last = math.floor(now / self.resolution)
        if self._swept < 0:
            self._swept = min(self._buckets, default=last) - 1
        while self._swept < last:
            self._swept += 1
            bucket = self._buckets.pop(self._swept, None)
            if bucket:
                for item in bucket:
                    fire(item)

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())
