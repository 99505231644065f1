"""`Worker`: a publishing process's connection to `/workers`, which loses nothing while it is
down."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import socketio

from .connection import ClientConnection, NotifierClientError, TokenSource, log, raise_for_error


@dataclass
class _Outgoing:
    event: str
    payload: dict[str, Any]
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Operations that must not apply twice get an idempotency key; progress is naturally idempotent.
_KEYED_EVENTS = frozenset({"publish", "notify", "task.create", "task.complete", "task.fail", "task.cancel"})
_RATE_LIMIT_BACKOFF = 0.05


class Worker(ClientConnection):
    """A publishing process's connection to `/workers`, which loses nothing while it is down.

    Every operation goes through one ordered outbox: while disconnected, operations wait there
    (at most `max_queue`; past that, the call raises NotifierClientError("QUEUE_FULL") at once
    and nothing is queued) and are sent in order after the reconnect. An operation whose ack
    was lost is sent again with the same idempotency key, so the server applies it once.
    Each call returns the server's reply, or raises NotifierClientError with its code.
    """

    namespace = "/workers"

    def __init__(
        self,
        url: str,
        token: TokenSource,
        *,
        max_queue: int = 10_000,
        ack_timeout: float = 10.0,
        **options: Any,
    ) -> None:
        super().__init__(url, token, **options)
        self._max_queue = max_queue
        self._ack_timeout = ack_timeout
        self._outbox: deque[_Outgoing] = deque()
        self._queued = asyncio.Event()
        self._online = asyncio.Event()
        self._offline = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self.sio.on("connect", self._went_online, namespace=self.namespace)
        self.sio.on("disconnect", self._went_offline, namespace=self.namespace)

    def _went_online(self) -> None:
        self._offline.clear()
        self._online.set()

    def _went_offline(self, *_: Any) -> None:
        self._online.clear()
        self._offline.set()

    async def connect(self, timeout: float = 10.0) -> None:
        await super().connect(timeout)
        self._went_online()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_in_order())

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Send what is queued (for at most `drain_timeout`), then disconnect."""
        if self._sender is not None:
            if self._outbox:
                pending = [item.done for item in self._outbox]
                await asyncio.wait(pending, timeout=drain_timeout)
            self._sender.cancel()
            await asyncio.gather(self._sender, return_exceptions=True)
            self._sender = None
        for item in self._outbox:
            if not item.done.done():
                item.done.set_exception(NotifierClientError("CLOSED", "the worker was closed"))
                item.done.exception()
        self._outbox.clear()
        await super().close()

    @property
    def queued(self) -> int:
        return len(self._outbox)

    async def publish(self, room: str, type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._submit("publish", {"room": room, "type": type, "data": data or {}})

    async def notify(
        self, user_ids: list[str], title: str, body: str | None = None, data: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return await self._submit(
            "notify", {"user_ids": user_ids, "title": title, "body": body, "data": data or {}}
        )

    async def create_task(self, project_id: str, **fields: Any) -> dict[str, Any]:
        return _task(await self._submit("task.create", {"project_id": project_id, **fields}))

    async def task_progress(self, task_id: str, progress: float, **fields: Any) -> dict[str, Any]:
        reply = await self._submit("task.progress", {"task_id": task_id, "progress": progress, **fields})
        return _task(reply)

    async def complete_task(self, task_id: str, result: Any = None, **fields: Any) -> dict[str, Any]:
        reply = await self._submit("task.complete", {"task_id": task_id, "result": result, **fields})
        return _task(reply)

    async def fail_task(self, task_id: str, error: str) -> dict[str, Any]:
        return _task(await self._submit("task.fail", {"task_id": task_id, "error": error}))

    async def cancel_task(self, task_id: str, reason: str | None = None) -> dict[str, Any]:
        return _task(await self._submit("task.cancel", {"task_id": task_id, "reason": reason}))

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return _task(await self._submit("task.get", {"task_id": task_id}))

    async def _submit(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        if len(self._outbox) >= self._max_queue:
            raise NotifierClientError("QUEUE_FULL", f"{len(self._outbox)} operations are waiting")
        if event in _KEYED_EVENTS:
            payload = {**payload, "idempotency_key": uuid.uuid4().hex}
        item = _Outgoing(event, payload)
        self._outbox.append(item)
        self._queued.set()
        return await asyncio.shield(item.done)

    async def _send_in_order(self) -> None:
        while True:
            if not self._outbox:
                self._queued.clear()
                await self._queued.wait()
                continue
            await self._online.wait()
            item = self._outbox[0]
            try:
                reply = await self._call_unless_dropped(item)
            except (
                socketio.exceptions.TimeoutError,
                socketio.exceptions.BadNamespaceError,
                socketio.exceptions.DisconnectedError,
                ConnectionError,
            ):
                # The ack was lost or the connection dropped: the same item (and key) again.
                if not self.connected:
                    self._went_offline()
                continue
            except Exception as exc:  # a bug must fail its call, not stall every later one
                log.exception("worker_send_failed", type=item.event)
                self._outbox.popleft()
                item.done.set_exception(NotifierClientError("INTERNAL", str(exc)))
                continue
            code = (reply.get("error") or {}).get("code") if isinstance(reply, dict) else None
            if code == "RATE_LIMITED" or (code == "OUTCOME_UNKNOWN" and "idempotency_key" in item.payload):
                # Slowed down; or the outcome is unknown, and the same key makes the retry safe.
                await asyncio.sleep(_RATE_LIMIT_BACKOFF)
                continue
            self._outbox.popleft()
            try:
                item.done.set_result(raise_for_error(reply))
            except NotifierClientError as exc:
                item.done.set_exception(exc)

    async def _call_unless_dropped(self, item: _Outgoing) -> Any:
        """The ack, or ConnectionError as soon as the connection drops.

        python-socketio forgets pending acks on a disconnect without waking their callers,
        who would otherwise sit out the whole ack timeout before the retry.
        """
        call = asyncio.ensure_future(
            self.sio.call(item.event, item.payload, namespace=self.namespace, timeout=self._ack_timeout)
        )
        dropped = asyncio.ensure_future(self._offline.wait())
        try:
            await asyncio.wait({call, dropped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            dropped.cancel()
        if not call.done():
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            raise ConnectionError("disconnected before the ack")
        return call.result()


def _task(reply: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = reply["task"]
    return task
