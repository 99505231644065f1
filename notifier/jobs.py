"""Durable jobs, run once however many processes try: each process claims due jobs of a kind
with a lease and hands them to a handler; a process that dies leaves its claimed jobs to the
others once the lease ends. The handler finishes, retries or fails each job itself."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

from .clock import Clock, millis
from .errors import NotifierError
from .logs import get_logger
from .records import Job
from .store import Store

log = get_logger("notifier.service")

Handle = Callable[[Job], Awaitable[None]]


def retry_delay(attempts: int, base: float, most: float) -> float:
    """Seconds before the next attempt: exponential, capped, with jitter (so receivers that
    come back are not met by every sender at once)."""
    return float(min(most, base * 2**attempts) * random.uniform(0.5, 1.0))


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
    ) -> None:
        """`serial`: jobs of one claimed batch with the same key run one after another, in
        the order claimed (due first); the others concurrently."""
        self.kind = kind
        self._store = store
        self._handle = handle
        self._clock = clock
        self._every = every_seconds
        self._lease_ms = int(lease_seconds * 1000)
        self._batch = batch
        self._serial = serial
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

    async def _run_lane(self, lane: list[Job]) -> None:
        for job in lane:
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
