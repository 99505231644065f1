"""Idempotency keys: an operation runs once per key, and a retry gets the first answer.

Keys are claimed in the store before the action runs and remembered with its answer for the
inbox's retention time, across restarts and across processes: a retry that arrives while the
first attempt still runs (here or in another process) waits for its answer. The request's
fingerprint (a hash of the operation and its payload) is kept with the answer: the same key
with another request is refused (`IDEMPOTENCY_CONFLICT`), never answered with another
request's result.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

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
        self._in_flight: dict[str, tuple[asyncio.Future[dict[str, Any]], str]] = {}

    async def once(
        self, key: str | None, action: Callable[[], Awaitable[dict[str, Any]]], fingerprint: str = ""
    ) -> dict[str, Any]:
        """Run `action` once per key (None: just run it); a retry with the same `fingerprint`
        gets the first answer back, marked `duplicate: true`; another request under the same
        key gets IDEMPOTENCY_CONFLICT."""
        if key is None:
            return await action()
        running = self._in_flight.get(key)
        if running is not None:
            _check(running[1], fingerprint)
            return {**await asyncio.shield(running[0]), "duplicate": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = (future, fingerprint)
        try:
            stored = await self._claim_or_wait(key)
            if stored is None:
                answer = await self._run_claimed(key, action, fingerprint)
            else:
                answer = {**_answer_of(stored, fingerprint), "duplicate": True}
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

    async def _run_claimed(
        self, key: str, action: Callable[[], Awaitable[dict[str, Any]]], fingerprint: str
    ) -> dict[str, Any]:
        try:
            answer = await action()
        except BaseException:
            with contextlib.suppress(NotifierError):
                await self._store.release_idempotency_key(key)
            raise
        record = {_VERSION: 2, "fingerprint": fingerprint, "answer": answer}
        await self._store.complete_idempotency_key(key, record, millis(self._clock.now()))
        return answer


_VERSION = "idempotency"


def scoped(subject: str, key: str) -> str:
    """A key as the store keeps it: its owner's, without ambiguity (the subject's length comes
    first, so that (`w`, `x:k`) and (`w:x`, `k`) stay apart)."""
    return f"{len(subject)}:{subject}:{key}"


def fingerprint_of(operation: str, payload: Any) -> str:
    """A request's fingerprint: its operation and payload, hashed (keys in a fixed order)."""
    text = orjson.dumps([operation, payload], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(text).hexdigest()[:32]


def _answer_of(stored: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    """The first answer, if `stored` was for the same request. (Records kept before
    fingerprints were, carry the answer alone: they are taken as the same request.)"""
    if stored.get(_VERSION) != 2:
        return stored
    _check(str(stored.get("fingerprint", "")), fingerprint)
    answer: dict[str, Any] = stored["answer"]
    return answer


def _check(first: str, again: str) -> None:
    if first != again:
        raise NotifierError(
            ErrorCode.IDEMPOTENCY_CONFLICT,
            "this idempotency key was used for another request; use a new key for a new request",
        )
