"""Idempotency keys: an operation runs once per key, and a retry gets the first answer.

Keys are claimed in the store before the action runs and remembered with its answer for the
inbox's retention time, across restarts and across processes: a retry that arrives while the
first attempt still runs (here or in another process) waits for its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .clock import Clock, millis
from .errors import ErrorCode, NotifierError
from .store import Store

# An idempotency claim older than this belongs to a process that died running it: a retry
# then runs the request itself. (A request that takes longer than this could run twice.)
_CLAIM_STALE_MS = 15_000
# How long a retry waits for the same request running elsewhere: past the stale age, so a
# retry of a request whose process died gets an answer rather than an error.
_CLAIM_WAIT_SECONDS = 20.0


class Idempotency:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._in_flight: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def once(self, key: str | None, action: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """Run `action` once per key (None: just run it); a retry gets the first answer back,
        marked `duplicate: true`."""
        if key is None:
            return await action()
        running = self._in_flight.get(key)
        if running is not None:
            return {**await asyncio.shield(running), "duplicate": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            answer = await self._claim_or_wait(key)
            if answer is None:
                answer = await self._run_claimed(key, action)
            else:
                answer = {**answer, "duplicate": True}
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a waiting retry re-raises it, nobody else must
            raise
        finally:
            del self._in_flight[key]

    async def _claim_or_wait(self, key: str) -> dict[str, Any] | None:
        """None once the key is ours to run; the first answer if it ran already."""
        deadline = time.monotonic() + _CLAIM_WAIT_SECONDS
        while True:
            now = millis(self._clock.now())
            claim = await self._store.claim_idempotency_key(key, now, now - _CLAIM_STALE_MS)
            if claim.state == "new":
                return None
            if claim.state == "done":
                return claim.result
            if time.monotonic() > deadline:
                raise NotifierError(ErrorCode.CONFLICT, "the same request is still running; retry later")
            await asyncio.sleep(0.05)

    async def _run_claimed(self, key: str, action: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        try:
            answer = await action()
        except BaseException:
            with contextlib.suppress(NotifierError):
                await self._store.release_idempotency_key(key)
            raise
        await self._store.complete_idempotency_key(key, answer, millis(self._clock.now()))
        return answer
