"""ProgressCoalescer and TokenBucket on a manual clock: no sleeping, exact arithmetic."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from notifier.clock import ManualClock
from notifier.coalescer import ProgressCoalescer
from notifier.wire.ratelimit import TokenBucket, Verdict


@dataclass
class ManualTimers:
    """Timers that fire only when the test says the time has come."""

    clock: ManualClock
    pending: list[tuple[float, Callable[[], None], list[bool]]] = field(default_factory=list)

    def schedule(self, delay: float, callback: Callable[[], None]) -> ManualTimers.Handle:
        cancelled = [False]
        self.pending.append((self.clock.monotonic() + delay, callback, cancelled))
        return ManualTimers.Handle(cancelled)

    def fire_due(self) -> None:
        due = [t for t in self.pending if t[0] <= self.clock.monotonic()]
        self.pending = [t for t in self.pending if t not in due]
        for _, callback, cancelled in due:
            if not cancelled[0]:
                callback()

    @dataclass
    class Handle:
        cancelled: list[bool]

        def cancel(self) -> None:
            self.cancelled[0] = True


@dataclass
class CoalescerRig:
    """A coalescer at 10 updates/s on a manual clock, recording the progress it emits."""

    clock: ManualClock = field(default_factory=ManualClock)
    sent: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.timers = ManualTimers(self.clock)
        self.coalescer = ProgressCoalescer(10, self.clock, self._emit, self.timers.schedule)

    async def _emit(self, task_id: str, snapshot: dict) -> None:
        self.sent.append(snapshot["progress"])

    async def advance(self, seconds: float) -> None:
        """Let `seconds` pass, fire the timers due, and let what they started run."""
        self.clock.advance(seconds)
        self.timers.fire_due()
        for _ in range(5):
            await asyncio.sleep(0)


async def test_first_value_goes_out_at_once_then_at_most_the_rate() -> None:
    rig = CoalescerRig()
    await rig.coalescer.offer("t", {"progress": 1})
    for value in range(2, 50):
        await rig.coalescer.offer("t", {"progress": value})
    assert rig.sent == [1]

    await rig.advance(0.09)
    assert rig.sent == [1], "never before the task's interval has passed"
    await rig.advance(0.04)
    assert rig.sent == [1, 49], "only the newest pending value is sent"


async def test_finish_flushes_the_pending_value_before_returning() -> None:
    rig = CoalescerRig()
    await rig.coalescer.offer("t", {"progress": 10})
    await rig.coalescer.offer("t", {"progress": 20})
    await rig.coalescer.finish("t")

    assert rig.sent == [10, 20]
    await rig.advance(1)
    assert rig.sent == [10, 20], "a cancelled timer sends nothing after finish"


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate=10, burst=5, flood_seconds=3, clock=clock)

    assert [bucket.take() for _ in range(6)] == [Verdict.ALLOW] * 5 + [Verdict.REJECT]
    clock.advance(0.1)
    assert bucket.take() is Verdict.ALLOW
    assert bucket.take() is Verdict.REJECT


def test_token_bucket_disconnects_a_client_that_floods_for_too_long() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate=10, burst=5, flood_seconds=3, clock=clock)
    verdicts = []
    for _ in range(400):  # 100 events a second for 4 seconds, ten times the rate
        verdicts.append(bucket.take())
        clock.advance(0.01)
    assert Verdict.DISCONNECT in verdicts
    assert verdicts.index(Verdict.DISCONNECT) >= 300


def test_token_bucket_forgives_a_client_that_slows_down() -> None:
    clock = ManualClock()
    bucket = TokenBucket(rate=10, burst=5, flood_seconds=3, clock=clock)
    for _ in range(20):
        bucket.take()
    for _ in range(100):  # then exactly at its rate for 10 seconds
        clock.advance(0.1)
        assert bucket.take() is Verdict.ALLOW
