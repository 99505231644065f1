"""Durable jobs, run once however many processes try: each process claims due jobs of a kind
with a lease and hands them to a handler; a process that dies leaves its claimed jobs to the
others once the lease ends. The handler finishes, retries or fails each job itself."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .clock import Clock, millis
from .errors import NotifierError
from .logs import get_logger
from .records import Job, JobState
from .store import Store

log = get_logger("notifier.service")

Handle = Callable[[Job], Awaitable[None]]
# How long jobs wait before looking again whether the loop is still busy.
_BUSY_PAUSE = 0.05
# One pass of the loop's ready queue taking longer than this means live work is queued.
_QUEUE_WAIT = 0.002
_CONCURRENCY = 16


def retry_delay(attempts: int, base: float, most: float) -> float:
    """Seconds before the next attempt: exponential, capped, with jitter (so receivers that
    come back are not met by every sender at once)."""
    return float(min(most, base * 2**attempts) * random.uniform(0.5, 1.0))


@dataclass(frozen=True)
class Retries:
    """How a delivery job (webhook, push, mail) that failed is tried again."""

    max_attempts: int
    base_seconds: float
    max_seconds: float

    async def after_failure(self, store: Store, clock: Clock, job: Job, error: str) -> bool:
        """Schedule the next attempt, or fail the job after its last one; True if it failed."""
        if job.attempts + 1 >= self.max_attempts:
            await store.finish_job(job.id, JobState.FAILED, error)
            return True
        delay = retry_delay(job.attempts, self.base_seconds, self.max_seconds)
        await store.retry_job(job.id, millis(clock.now() + delay), error)
        return False


class JobRunner:
    def __init__(
        self,
        store: Store,
        kind: str,
        handle: Handle,
        clock: Clock,
        *,
        every_seconds: float = 0.5,
        lease_seconds: float = 30.0,
        batch: int = 100,
        serial: Callable[[Job], str] | None = None,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        """`serial`: jobs of one claimed batch with the same key run one after another, in
        the order claimed (due first); the others concurrently. `busy`: true while the event
        loop is late; jobs then wait, so that live delivery keeps the loop (an escalation a
        fraction of a second later matters less than every connected client's events)."""
        self.kind = kind
        self._store = store
        self._handle = handle
        self._clock = clock
        self._every = every_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self._batch = batch
        self._serial = serial
        self._busy = busy
        # Jobs in progress at once: small bites, so that live work never waits long.
        self._running = asyncio.Semaphore(_CONCURRENCY)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"jobs-{self.kind}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def poke(self) -> None:
        """Look for due jobs now, not at the next period (one was just added)."""
        self._wake.set()

    async def run_due(self) -> int:
        """Claim and run one batch of due jobs; how many there were."""
        now = millis(self._clock.now())
        jobs = await self._store.claim_jobs(self.kind, now, now + self._lease_ms, self._batch)
        lanes: dict[str, list[Job]] = {}
        for job in jobs:
            lanes.setdefault(self._serial(job) if self._serial else job.id, []).append(job)
        await asyncio.gather(*(self._run_lane(lane) for lane in lanes.values()))
        return len(jobs)

    async def _yield_to_live_traffic(self) -> None:
        """Wait while the loop is late, or has a queue of callbacks (a fan-out in progress):
        one pass of the ready queue (`sleep(0)`) that takes longer than a couple of
        milliseconds means live work is waiting."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0)
            if loop.time() - started < _QUEUE_WAIT and not self._busy():
                return
            await asyncio.sleep(_BUSY_PAUSE)

    async def _run_lane(self, lane: list[Job]) -> None:
        for job in lane:
            async with self._running:
                await self._yield_to_live_traffic()
                await self._run_one(job)

    async def _run_one(self, job: Job) -> None:
        try:
            await self._handle(job)
        except NotifierError as exc:
            # The store failed under it: the lease runs out and it is claimed again.
            log.warning("job_deferred", kind=self.kind, job=job.id, detail=exc.message)
        except Exception as exc:
            log.error("job_failed", kind=self.kind, job=job.id, error=repr(exc))

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._every)
            self._wake.clear()
            try:
                # Until none is due: a group's next job is claimable once the one before ran.
                while await self.run_due():
                    pass
            except NotifierError as exc:
                log.warning("jobs_unavailable", kind=self.kind, detail=exc.message)
            except Exception:
                log.exception("jobs_failed", kind=self.kind)
