"""Python clients for other processes: `Subscriber` (the `/` namespace) and `Worker` (`/workers`).

Both sit on `socketio.AsyncClient`, which already reconnects with jittered backoff; what they
add is what everyone hand-writes: a fresh token on every reconnect and, before the token
expires, in-band on the same connection (when the token is a callable); rejoining rooms from
where they were; dropping duplicates; and typed errors that carry the server's code.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import socketio

from .logs import get_logger

log = get_logger("notifier.client")

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
EventHandler = Callable[[dict[str, Any]], Any]

# How many recent event ids a client remembers to drop duplicates.
_SEEN_IDS = 4096


class NotifierClientError(Exception):
    """The server answered with `{ok: false, error: {code, message}}` or refused the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


async def _resolve_token(source: TokenSource) -> str:
    if isinstance(source, str):
        return source
    value = source()
    if inspect.isawaitable(value):
        value = await value
    return str(value)


def _raise_for_error(reply: Any) -> dict[str, Any]:
    if not isinstance(reply, dict):
        raise NotifierClientError("INTERNAL", f"unexpected reply {reply!r}")
    if not reply.get("ok"):
        error = reply.get("error") or {}
        raise NotifierClientError(error.get("code", "INTERNAL"), error.get("message", ""))
    return reply


class _Connection:
    """What both clients share: connecting with a token and surfacing refusals as errors."""

    namespace = "/"

    def __init__(self, url: str, token: TokenSource, *, transports: list[str] | None = None,
                 reconnection_delay: float = 0.5, reconnection_delay_max: float = 5.0,
                 client_options: dict[str, Any] | None = None) -> None:
        """`client_options` go to `socketio.AsyncClient` (for instance `http_session`)."""
        self.url = url
        self._token = token
        self._transports = transports
        self.sio = socketio.AsyncClient(
            reconnection=True,
            reconnection_delay=reconnection_delay,
            reconnection_delay_max=reconnection_delay_max,
            **(client_options or {}),
        )
        self._refusal: dict[str, Any] | None = None
        self._renewal: asyncio.Task[None] | None = None
        # When the server will end the connection unless the token is renewed (ms), once told.
        self.token_expires_at: int | None = None
        self.sio.on("connect_error", self._on_connect_error, namespace=self.namespace)
        self.sio.on("auth.expiring", self._on_expiring, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        return {"token": await _resolve_token(self._token)}

    def _on_connect_error(self, data: Any) -> None:
        self._refusal = data if isinstance(data, dict) else {"message": str(data)}

    async def connect(self, timeout: float = 10.0) -> None:
        """Connect, or raise NotifierClientError with the server's refusal code."""
        self._refusal = None
        try:
            await self.sio.connect(
                self.url, auth=self._auth, namespaces=[self.namespace],
                transports=self._transports, wait_timeout=timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            await self.sio.disconnect()
            refusal = self._refusal or {}
            detail = refusal.get("data") or {}
            raise NotifierClientError(
                detail.get("code", "UNAVAILABLE"), detail.get("message") or str(exc)
            ) from exc

    async def close(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            await asyncio.gather(self._renewal, return_exceptions=True)
        await self.sio.disconnect()

    async def _on_expiring(self, envelope: Any = None) -> None:
        """The token is about to expire: get a new one from the token callable and send it."""
        if isinstance(envelope, dict):
            self.token_expires_at = (envelope.get("data") or {}).get("expires_at")
        if isinstance(self._token, str):
            log.warning("token_not_renewable", detail="give a callable token to renew in-band")
            return
        if self._renewal is None or self._renewal.done():
            self._renewal = asyncio.ensure_future(self.renew_token())

    async def renew_token(self) -> None:
        """Send a fresh token on this connection (`auth.refresh`); on failure the connection
        ends at expiry and the reconnect asks for a token again."""
        try:
            reply = await self.call("auth.refresh", {"token": await _resolve_token(self._token)})
        except (NotifierClientError, socketio.exceptions.SocketIOError) as exc:
            log.warning("token_renewal_failed", detail=str(exc))
            return
        self.token_expires_at = reply["expires_at"]

    @property
    def connected(self) -> bool:
        return bool(self.sio.connected) and self.namespace in self.sio.namespaces

    async def call(self, event: str, data: dict[str, Any] | None = None,
                   timeout: float = 10.0) -> dict[str, Any]:
        """Emit with an ack; return the reply or raise NotifierClientError with its code."""
        reply = await self.sio.call(event, data or {}, namespace=self.namespace, timeout=timeout)
        return _raise_for_error(reply)


class Subscriber(_Connection):
    """An end-user connection that never misses an event in the rooms it follows.

    It keeps each room's last position; every (re)connect sends those positions in the auth
    payload, so the server rejoins the rooms and replays what was missed before live events.
    A room whose history could not be replayed is reported to `on_reset` handlers: reload
    that room's state from the REST API (or `task.get`, `notifications.list`).
    """

    namespace = "/"

    def __init__(self, url: str, token: TokenSource, **options: Any) -> None:
        super().__init__(url, token, **options)
        # Each room followed, with the last position seen (None: a live-only room).
        self.positions: dict[str, dict[str, Any] | None] = {}
        self.presence_rooms: set[str] = set()  # rooms whose presence changes we follow
        self.session: dict[str, Any] | None = None
        self._handlers: dict[str, list[EventHandler]] = {}
        self._reset_handlers: list[Callable[[str, str], Any]] = []
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.sio.on("*", self._on_event, namespace=self.namespace)

    async def _auth(self) -> dict[str, Any]:
        auth = await super()._auth()
        if self.positions:
            auth["positions"] = {room: dict(pos) if pos else None
                                 for room, pos in self.positions.items()}
        if self.presence_rooms:
            auth["presence"] = sorted(self.presence_rooms)
        return auth

    def on(self, event_type: str, handler: EventHandler) -> Callable[[], None]:
        """Call `handler(envelope)` for each event of the type ('*' for all); returns an off()."""
        self._handlers.setdefault(event_type, []).append(handler)
        return lambda: self._handlers[event_type].remove(handler)

    def on_reset(self, handler: Callable[[str, str], Any]) -> None:
        """`handler(room, reason)` when a room's missed events could not be replayed."""
        self._reset_handlers.append(handler)

    async def subscribe(self, rooms: list[str], *, presence: bool = False) -> dict[str, Any]:
        """Join rooms; returns the per-room results (joined, position, task state or error).
        `presence`: also receive `presence.joined` / `presence.left` for them."""
        since = {room: self.positions[room] for room in rooms if self.positions.get(room)}
        payload: dict[str, Any] = {"rooms": rooms}
        if since:
            payload["since"] = since
        if presence:
            payload["presence"] = True
        reply = await self.call("subscribe", payload)
        await self._apply_room_results(reply["rooms"])
        if presence:
            self.presence_rooms.update(
                room for room, result in reply["rooms"].items() if result.get("joined"))
        return reply["rooms"]

    async def unsubscribe(self, rooms: list[str]) -> dict[str, Any]:
        reply = await self.call("unsubscribe", {"rooms": rooms})
        for room in rooms:
            self.positions.pop(room, None)
            self.presence_rooms.discard(room)
        return reply["rooms"]

    async def _apply_room_results(self, results: dict[str, Any]) -> None:
        for room, result in results.items():
            if not result.get("joined"):
                continue
            if result.get("live_only"):
                self.positions[room] = None
                continue
            known = self.positions.get(room)
            server = {"epoch": result["epoch"], "offset": result["offset"]}
            if result.get("recovered") is False:
                self.positions[room] = server
                for handler in self._reset_handlers:
                    await _maybe_await(handler(room, result.get("reason", "")))
            elif known is None or known["epoch"] != server["epoch"]:
                self.positions[room] = server

    async def _on_expiring(self, envelope: Any = None) -> None:
        await super()._on_expiring(envelope)
        await self._on_event("auth.expiring", envelope)  # handlers see it too

    async def _on_event(self, event: str, envelope: Any = None) -> None:
        if not isinstance(envelope, dict):
            return
        if event == "session":
            self.session = envelope.get("data")
            await self._apply_room_results((self.session or {}).get("rooms", {}))
        elif not self._accept(envelope):
            return
        if event == "rooms.revoked":  # not ours any more: not rejoined on reconnect
            for room in (envelope.get("data") or {}).get("rooms", []):
                self.positions.pop(room, None)
                self.presence_rooms.discard(room)
        for handler in [*self._handlers.get(event, ()), *self._handlers.get("*", ())]:
            try:
                await _maybe_await(handler(envelope))
            except Exception:
                log.exception("subscriber_handler_failed", type=event)

    def _accept(self, envelope: dict[str, Any]) -> bool:
        """Drop what was seen already (by id, and by offset within a room's epoch)."""
        event_id = envelope.get("id")
        if event_id in self._seen:
            return False
        if event_id:
            self._seen[event_id] = None
            if len(self._seen) > _SEEN_IDS:
                self._seen.popitem(last=False)
        room, offset = envelope.get("room"), envelope.get("offset")
        if room is None or offset is None or not self.positions.get(room):
            return True  # not kept, or a room seen through project:* (ids deduplicate)
        known = self.positions[room]
        if known["epoch"] == envelope.get("epoch") and offset <= known["offset"]:
            return False
        self.positions[room] = {"epoch": envelope["epoch"], "offset": offset}
        return True


async def _maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


@dataclass
class _Outgoing:
    event: str
    payload: dict[str, Any]
    done: asyncio.Future[dict[str, Any]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


# Operations that must not apply twice get an idempotency key; progress is naturally idempotent.
_KEYED_EVENTS = frozenset(
    {"publish", "notify", "task.create", "task.complete", "task.fail", "task.cancel"}
)
_RATE_LIMIT_BACKOFF = 0.05


class Worker(_Connection):
    """A publishing process's connection to `/workers`, which loses nothing while it is down.

    Every operation goes through one ordered outbox: while disconnected, operations wait there
    (at most `max_queue`; past that, the call raises NotifierClientError("QUEUE_FULL") at once
    and nothing is queued) and are sent in order after the reconnect. An operation whose ack
    was lost is sent again with the same idempotency key, so the server applies it once.
    Each call returns the server's reply, or raises NotifierClientError with its code.
    """

    namespace = "/workers"

    def __init__(self, url: str, token: TokenSource, *, max_queue: int = 10_000,
                 ack_timeout: float = 10.0, **options: Any) -> None:
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

    async def notify(self, user_ids: list[str], title: str, body: str | None = None,
                     data: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._submit(
            "notify", {"user_ids": user_ids, "title": title, "body": body, "data": data or {}}
        )

    async def create_task(self, project_id: str, **fields: Any) -> dict[str, Any]:
        return (await self._submit("task.create", {"project_id": project_id, **fields}))["task"]

    async def task_progress(self, task_id: str, progress: float, **fields: Any) -> dict[str, Any]:
        reply = await self._submit("task.progress", {"task_id": task_id, "progress": progress, **fields})
        return reply["task"]

    async def complete_task(self, task_id: str, result: Any = None, **fields: Any) -> dict[str, Any]:
        reply = await self._submit("task.complete", {"task_id": task_id, "result": result, **fields})
        return reply["task"]

    async def fail_task(self, task_id: str, error: str) -> dict[str, Any]:
        return (await self._submit("task.fail", {"task_id": task_id, "error": error}))["task"]

    async def cancel_task(self, task_id: str, reason: str | None = None) -> dict[str, Any]:
        return (await self._submit("task.cancel", {"task_id": task_id, "reason": reason}))["task"]

    async def get_task(self, task_id: str) -> dict[str, Any]:
        return (await self._submit("task.get", {"task_id": task_id}))["task"]

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
            except (socketio.exceptions.TimeoutError, socketio.exceptions.BadNamespaceError,
                    socketio.exceptions.DisconnectedError, ConnectionError):
                # The ack was lost or the connection dropped: the same item (and key) again.
                if not self.connected:
                    self._went_offline()
                continue
            except Exception as exc:  # a bug must fail its call, not stall every later one
                log.exception("worker_send_failed", type=item.event)
                self._outbox.popleft()
                item.done.set_exception(NotifierClientError("INTERNAL", str(exc)))
                continue
            if isinstance(reply, dict) and (reply.get("error") or {}).get("code") == "RATE_LIMITED":
                await asyncio.sleep(_RATE_LIMIT_BACKOFF)
                continue
            self._outbox.popleft()
            try:
                item.done.set_result(_raise_for_error(reply))
            except NotifierClientError as exc:
                item.done.set_exception(exc)


    async def _call_unless_dropped(self, item: _Outgoing) -> Any:
        """The ack, or ConnectionError as soon as the connection drops.

        python-socketio forgets pending acks on a disconnect without waking their callers,
        who would otherwise sit out the whole ack timeout before the retry.
        """
        call = asyncio.ensure_future(self.sio.call(
            item.event, item.payload, namespace=self.namespace, timeout=self._ack_timeout
        ))
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


T = TypeVar("T")


class SyncWorker:
    """`Worker` for synchronous code (threads, scripts): each call blocks until it is acked.

    It runs its own event loop in a background thread, created once; calls from any thread go
    to that loop (never a new loop per call, which would lose the connection each time).
    """

    _FORWARDED = frozenset({
        "publish", "notify", "create_task", "task_progress", "complete_task", "fail_task",
        "cancel_task", "get_task",
    })

    def __init__(self, url: str, token: TokenSource, *, call_timeout: float = 60.0,
                 **options: Any) -> None:
        self._call_timeout = call_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="notifier-worker",
                                        daemon=True)
        self._thread.start()

        async def build() -> Worker:
            return Worker(url, token, **options)

        self._worker = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self._call_timeout)

    def connect(self) -> None:
        self._run(self._worker.connect())

    def close(self) -> None:
        try:
            self._run(self._worker.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()  # else a ResourceWarning whenever it is collected

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self._FORWARDED:
            raise AttributeError(name)
        method = getattr(self._worker, name)
        return lambda *args, **kwargs: self._run(method(*args, **kwargs))

    def __enter__(self) -> SyncWorker:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


__all__ = ["NotifierClientError", "Subscriber", "SyncWorker", "Worker"]
