"""The wire layer's time wheel on its own, driven by hypothesis: random adds, moves, discards
and sweeps. No deadline fires early, none later than the resolution, none is lost or fires
twice, a discarded one never fires, and the wheel keeps nothing it no longer times."""

from __future__ import annotations

import asyncio
import gc
import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from notifier.wire.timewheel import Deadlines, TimeWheel

RESOLUTION = 0.25


class Timed:
    """Something with a deadline (as a session is): hashable by identity."""

    __slots__ = ("__weakref__", "name")

    def __init__(self, name: int) -> None:
        self.name = name


class WheelMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.wheel: TimeWheel[Timed] = TimeWheel(RESOLUTION)
        self.now = 0.0
        self.due: dict[Timed, float] = {}  # what the owner set and has not seen fire
        # The bucket each must fire in: its deadline's, or the next one to sweep when that
        # one is swept already (a deadline set in the past is due at once).
        self.bucket: dict[Timed, int] = {}
        self.swept: int | None = None
        self.fired: list[tuple[Timed, float]] = []
        self.names = 0

    def _fire(self, item: Timed) -> None:
        assert item in self.due, "an entry fired that was discarded, moved or already fired"
        due = self.due.pop(item)
        assert self.now >= due, f"fired {due - self.now:.3f} s early"
        self.fired.append((item, due))

    def _set(self, item: Timed, due: float) -> None:
        self.due[item] = due
        bucket = math.ceil(due / RESOLUTION)
        self.bucket[item] = bucket if self.swept is None or bucket > self.swept else self.swept + 1
        # Never more than one resolution after the deadline (or after now, if it is past).
        assert self.bucket[item] * RESOLUTION - max(due, self.now) <= RESOLUTION + 1e-9
        self.wheel.add(item, due)

    @rule(delay=st.floats(min_value=-5.0, max_value=60.0, allow_nan=False))
    def add(self, delay: float) -> None:
        self.names += 1
        item = Timed(self.names)
        self._set(item, self.now + delay)

    @precondition(lambda self: bool(self.due))
    @rule(data=st.data(), delay=st.floats(min_value=0.0, max_value=60.0, allow_nan=False))
    def move(self, data: st.DataObject, delay: float) -> None:
        item = data.draw(st.sampled_from(sorted(self.due, key=lambda t: t.name)))
        self.wheel.discard(item, self.due[item])
        self._set(item, self.now + delay)

    @precondition(lambda self: bool(self.due))
    @rule(data=st.data())
    def discard(self, data: st.DataObject) -> None:
        item = data.draw(st.sampled_from(sorted(self.due, key=lambda t: t.name)))
        self.wheel.discard(item, self.due.pop(item))

    @rule(step=st.floats(min_value=0.0, max_value=20.0, allow_nan=False))
    def sweep(self, step: float) -> None:
        self.now += step
        self.wheel.sweep(self.now, self._fire)
        self.swept = max(self.swept or 0, math.floor(self.now / RESOLUTION))
        # Whatever is still pending has its bucket after this sweep: nothing was left behind.
        for item in self.due:
            assert self.bucket[item] > self.swept, (
                f"item {item.name} due at {self.due[item]:.3f} has not fired at {self.now:.3f}"
            )

    @invariant()
    def the_wheel_holds_exactly_what_is_timed(self) -> None:
        assert len(self.wheel) == len(self.due)

    @invariant()
    def next_due_is_the_earliest_bucket(self) -> None:
        upcoming = self.wheel.next_due()
        if not self.due:
            assert upcoming is None
        else:
            earliest = min(self.due.values())
            assert upcoming is not None and upcoming >= min(earliest, self.now) - 1e-9


TestTimeWheel = WheelMachine.TestCase
TestTimeWheel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_the_first_sweep_never_starts_in_the_future() -> None:
    """The defect of the first round: a far deadline added before the first sweep made the
    wheel skip ahead, and every later deadline landed an hour away."""
    wheel: TimeWheel[str] = TimeWheel(1.0)
    fired: list[str] = []
    wheel.add("an hour-long token", 3600.0)
    wheel.sweep(1.0, fired.append)
    wheel.add("a six-second token", 7.0)
    wheel.sweep(7.0, fired.append)
    assert fired == ["a six-second token"]


def test_a_discarded_item_is_not_referenced() -> None:
    wheel: TimeWheel[Timed] = TimeWheel(1.0)
    item = Timed(1)
    wheel.add(item, 10.0)
    wheel.discard(item, 10.0)
    gc.collect()
    assert not [r for r in gc.get_referrers(item) if isinstance(r, set)]


async def test_deadlines_fire_on_the_loop_within_the_resolution() -> None:
    loop = asyncio.get_running_loop()
    fired: dict[int, float] = {}
    deadlines: Deadlines[Timed] = Deadlines(0.02, lambda item: fired.setdefault(item.name, loop.time()))
    deadlines.start(loop)
    start = loop.time()
    items = [Timed(n) for n in range(20)]
    dues = {item.name: start + 0.05 + 0.013 * item.name for item in items}
    for item in reversed(items):  # added latest first: the timer must move earlier each time
        deadlines.move(item, None, dues[item.name])
    deadlines.cancel(items[3], dues[3])
    try:
        await asyncio.wait_for(_until(lambda: len(fired) == 19), 2)
    finally:
        deadlines.stop()
    assert 3 not in fired
    for name, at in fired.items():
        assert dues[name] <= at < dues[name] + 0.02 + 0.03, (name, at - dues[name])


async def _until(condition: object) -> None:
    while not condition():  # type: ignore[operator]  # noqa: ASYNC110
        await asyncio.sleep(0.005)
