"""Socket.IO namespaces: `/` for end users, `/workers` for publishing processes.

Handlers are thin: they authenticate, validate (through `acked`) and call the service.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import socketio
from engineio import packet as eio_packet
from pydantic import BaseModel, TypeAdapter, ValidationError

from ..auth import Claims, TokenVerifier
from ..clock import millis
from ..errors import ErrorCode, NotifierError, error_body
from ..models import (
    MarkRead,
    NotificationsList,
    NotifyRequest,
    PingRequest,
    Position,
    PublishRequest,
    RefreshIntervalRequest,
    SubscribeRequest,
    TaskCancel,
    TaskComplete,
    TaskCreate,
    TaskFail,
    TaskProgress,
    TaskRef,
    UnsubscribeRequest,
)
from ..ratelimit import TokenBucket
from ..records import new_id
from ..rooms import BROADCAST_ROOM, room_for_user
from ..service import Notifier
from ..settings import Settings
from .acks import Connection, Handler, Reply, acked
from .fanout import USER_NAMESPACE, SocketFanOut
from .server import NotifierManager

log = logging.getLogger("notifier.sockets")

WORKER_NAMESPACE = "/workers"
_POSITIONS = TypeAdapter(dict[str, Position])


@dataclass
class _JoinBatch:
    """What a subscribe (or a connect with positions) joined, and the replay it owes."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    packets: list[eio_packet.Packet] = field(default_factory=list)
    positions: dict[str, int] = field(default_factory=dict)


class SocketGateway:
    def __init__(
        self,
        sio: socketio.AsyncServer,
        notifier: Notifier,
        verifier: TokenVerifier,
        settings: Settings,
        fanout: SocketFanOut,
    ) -> None:
        self._sio = sio
        self._notifier = notifier
        self._verifier = verifier
        self._settings = settings
        self._fanout = fanout
        self._connections: dict[str, Connection] = {}
        self._welcome: dict[str, tuple[dict[str, Any], _JoinBatch]] = {}
        self._join_locks: dict[str, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()
        # Set at shutdown: new Socket.IO requests are turned away (see transport.http).
        self.draining = False
        manager = sio.manager
        assert isinstance(manager, NotifierManager)
        manager.on_connected = self._on_connected
        self._register()

    # Registration

    def _register(self) -> None:
        sio = self._sio
        sio.on("connect", self._on_user_connect, namespace=USER_NAMESPACE)
        sio.on("connect", self._on_worker_connect, namespace=WORKER_NAMESPACE)
        for namespace in (USER_NAMESPACE, WORKER_NAMESPACE):
            sio.on("disconnect", self._on_disconnect, namespace=namespace)
            sio.on("*", self._on_unknown_event, namespace=namespace)
        user_events: dict[str, tuple[type[BaseModel], Handler[Any]]] = {
            "subscribe": (SubscribeRequest, self._subscribe),
            "unsubscribe": (UnsubscribeRequest, self._unsubscribe),
            "ping": (PingRequest, self._ping),
            "task.get": (TaskRef, self._task_get),
            "notifications.list": (NotificationsList, self._notifications_list),
            "notifications.mark_read": (MarkRead, self._notifications_mark_read),
            "config.set_refresh_interval": (RefreshIntervalRequest, self._set_refresh_interval),
        }
        worker_events: dict[str, tuple[type[BaseModel], Handler[Any]]] = {
            "publish": (PublishRequest, self._publish),
            "notify": (NotifyRequest, self._notify),
            "task.create": (TaskCreate, self._task_create),
            "task.progress": (TaskProgress, self._task_progress),
            "task.complete": (TaskComplete, self._task_complete),
            "task.fail": (TaskFail, self._task_fail),
            "task.cancel": (TaskCancel, self._task_cancel),
            "task.get": (TaskRef, self._task_get),
            "ping": (PingRequest, self._ping),
        }
        for namespace, events in ((USER_NAMESPACE, user_events), (WORKER_NAMESPACE, worker_events)):
            for name, (model, handler) in events.items():
                wrapped = acked(name, model, handler, self._connections.get, self._close_flooding)
                sio.on(name, wrapped, namespace=namespace)

    # Connecting

    async def _on_user_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        claims = self._authenticate(environ, auth)
        connection = self._open(sid, USER_NAMESPACE, claims)
        positions = self._positions_from(auth)
        rooms = [BROADCAST_ROOM, room_for_user(claims.sub), *positions]
        self._fanout.hold(sid)
        try:
            batch = _JoinBatch()
            await self._join(connection, rooms, positions, batch)
            unread = await self._notifier.unread_count(claims.sub)
        except Exception as exc:
            self._forget(sid)
            log.exception("event=connect_failed sid=%s", sid)
            raise socketio.exceptions.ConnectionRefusedError(
                "the server failed to set up the connection",
                {"code": ErrorCode.INTERNAL.value, "message": "connection set-up failed"},
            ) from exc
        session = {
            "user_id": claims.sub,
            "role": claims.role.value,
            "projects": sorted(claims.projects),
            "server_time": millis(self._notifier.clock.now()),
            "refresh_interval": self._notifier.refresh_interval,
            "unread": unread,
            "rooms": batch.results,
        }
        self._welcome[sid] = (session, batch)
        log.info("event=connected namespace=/ sid=%s user=%s", sid, claims.sub)

    async def _on_worker_connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        claims = self._authenticate(environ, auth)
        if not claims.can_publish:
            raise socketio.exceptions.ConnectionRefusedError(
                "the /workers namespace needs a publisher or admin token",
                {"code": ErrorCode.FORBIDDEN.value, "message": "role publisher or admin required"},
            )
        self._open(sid, WORKER_NAMESPACE, claims)
        log.info("event=connected namespace=/workers sid=%s user=%s", sid, claims.sub)

    def _on_connected(self, sid: str, namespace: str) -> None:
        """The CONNECT packet is queued: send the session and the replay, then live events."""
        connection = self._connections.get(sid)
        if connection is None:
            return
        self._schedule_expiry(connection)
        welcome = self._welcome.pop(sid, None)
        if welcome is None:
            return
        session, batch = welcome
        first = [self._fanout.encode("session", self._direct_envelope("session", session))]
        self._fanout.release(sid, first + batch.packets, batch.positions)

    async def _on_disconnect(self, sid: str, reason: str) -> None:
        connection = self._forget(sid)
        if connection is not None:
            log.info(
                "event=disconnected namespace=%s sid=%s user=%s reason=%s",
                connection.namespace, sid, connection.claims.sub, reason,
            )

    def _authenticate(self, environ: dict[str, Any], auth: Any) -> Claims:
        try:
            return self._verifier.verify(self._token_from(environ, auth))
        except NotifierError as exc:
            log.info("event=connect_refused code=%s", exc.code.value)
            raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_dict()) from exc

    def _token_from(self, environ: dict[str, Any], auth: Any) -> object:
        if isinstance(auth, dict) and auth.get("token") is not None:
            return auth["token"]
        header = environ.get("HTTP_AUTHORIZATION", "")
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        if self._settings.allow_query_token:
            query = environ.get("QUERY_STRING", "")
            for part in query.split("&"):
                key, _, value = part.partition("=")
                if key == "token" and value:
                    return value
        return None

    def _positions_from(self, auth: Any) -> dict[str, Position]:
        raw = auth.get("positions") if isinstance(auth, dict) else None
        if not raw:
            return {}
        try:
            return _POSITIONS.validate_python(raw)
        except ValidationError:
            log.info("event=invalid_positions_ignored")
            return {}

    def _open(self, sid: str, namespace: str, claims: Claims) -> Connection:
        settings = self._settings
        if namespace == WORKER_NAMESPACE:
            rate, burst = settings.worker_rate_per_second, settings.worker_rate_burst
        else:
            rate, burst = settings.user_rate_per_second, settings.user_rate_burst
        bucket = TokenBucket(rate, burst, settings.flood_disconnect_seconds, self._notifier.clock)
        connection = Connection(sid=sid, namespace=namespace, claims=claims, bucket=bucket)
        self._connections[sid] = connection
        return connection

    def _forget(self, sid: str) -> Connection | None:
        connection = self._connections.pop(sid, None)
        self._welcome.pop(sid, None)
        self._join_locks.pop(sid, None)
        self._fanout.drop(sid)
        if connection is not None and connection.cancel_expiry is not None:
            connection.cancel_expiry()
        return connection

    # Expiry and forced disconnects

    def _schedule_expiry(self, connection: Connection) -> None:
        now = self._notifier.clock.now()
        delay = connection.claims.expires_at + self._settings.jwt_leeway_seconds - now
        handle = asyncio.get_running_loop().call_later(
            max(delay, 0.0), self._expire, connection
        )
        connection.cancel_expiry = handle.cancel

    def _expire(self, connection: Connection) -> None:
        reason = NotifierError(ErrorCode.AUTH_EXPIRED, "your token expired; reconnect with a new one")
        task = asyncio.get_running_loop().create_task(
            self._close(connection, "auth.expired", reason)
        )
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_flooding(self, connection: Connection, message: str) -> None:
        await self._close(
            connection, "connection.closing", NotifierError(ErrorCode.RATE_LIMITED, message)
        )

    async def _close(self, connection: Connection, event: str, reason: NotifierError) -> None:
        """Tell the client why (the event arrives before the DISCONNECT packet), then drop it."""
        if connection.sid not in self._connections:
            return
        log.info(
            "event=server_disconnect sid=%s user=%s code=%s",
            connection.sid, connection.claims.sub, reason.code.value,
        )
        self._fanout.send_direct(
            connection.sid, event, self._direct_envelope(event, reason.to_dict()),
            connection.namespace,
        )
        await self._sio.disconnect(connection.sid, namespace=connection.namespace)

    def _direct_envelope(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """An envelope for one connection only: it belongs to no room, so it has no offset."""
        return {
            "id": new_id(),
            "type": event_type,
            "room": None,
            "ts": millis(self._notifier.clock.now()),
            "data": data,
        }

    async def _on_unknown_event(self, event: str, sid: str, *args: Any) -> Reply:
        return error_body(ErrorCode.UNKNOWN_EVENT, f"unknown event {event!r}")

    # Rooms

    async def _join(
        self,
        connection: Connection,
        rooms: list[str],
        since: dict[str, Position],
        batch: _JoinBatch,
    ) -> None:
        for room in dict.fromkeys(rooms):
            try:
                task = await self._notifier.authorize_room(connection.claims, room)
            except NotifierError as exc:
                batch.results[room] = {"joined": False, "error": exc.to_dict()}
                continue
            joined_at = connection.joined.get(room)
            # Read the history before entering the room: an event appended after this read is
            # held by the gate and delivered live; one before it is in the replay or the past.
            replay = await self._notifier.replay(room, since.get(room), up_to=joined_at)
            if joined_at is None:
                await self._sio.enter_room(connection.sid, room, namespace=USER_NAMESPACE)
                connection.joined[room] = replay.position.offset
            result: dict[str, Any] = {"joined": True, **replay.position.to_dict()}
            if replay.recovered is not None:
                result["recovered"] = replay.recovered
                result["replayed"] = len(replay.events)
                if replay.reason:
                    result["reason"] = replay.reason
            if task is not None:
                result["task"] = task.to_dict()
            batch.results[room] = result
            batch.positions[room] = replay.position.offset
            for event in replay.events:
                batch.packets.append(self._fanout.encode(event["type"], {**event, "replayed": True}))

    def _join_lock(self, sid: str) -> asyncio.Lock:
        return self._join_locks.setdefault(sid, asyncio.Lock())

    async def _subscribe(self, connection: Connection, request: SubscribeRequest) -> Reply:
        batch = _JoinBatch()
        async with self._join_lock(connection.sid):
            self._fanout.hold(connection.sid)
            try:
                await self._join(connection, request.rooms, request.since, batch)
            finally:
                self._fanout.release(connection.sid, batch.packets, batch.positions)
        return {"rooms": batch.results}

    async def _unsubscribe(self, connection: Connection, request: UnsubscribeRequest) -> Reply:
        personal = {BROADCAST_ROOM, room_for_user(connection.claims.sub)}
        results: dict[str, Any] = {}
        async with self._join_lock(connection.sid):
            for room in request.rooms:
                if room in personal:
                    error = NotifierError(ErrorCode.FORBIDDEN, "your own rooms cannot be left")
                    results[room] = {"left": False, "error": error.to_dict()}
                elif connection.joined.pop(room, None) is not None:
                    await self._sio.leave_room(connection.sid, room, namespace=USER_NAMESPACE)
                    results[room] = {"left": True}
                else:
                    results[room] = {"left": False, "error": {
                        "code": ErrorCode.NOT_FOUND.value, "message": "not subscribed"}}
        return {"rooms": results}

    # End-user events

    async def _ping(self, connection: Connection, request: PingRequest) -> Reply:
        return {"server_time": millis(self._notifier.clock.now()), "echo": request.model_dump()}

    async def _task_get(self, connection: Connection, request: TaskRef) -> Reply:
        task = await self._notifier.get_task(request.task_id, connection.claims)
        return {"task": task.to_dict()}

    async def _notifications_list(
        self, connection: Connection, request: NotificationsList
    ) -> Reply:
        user_id = connection.claims.sub
        notifications = await self._notifier.list_notifications(user_id, request)
        return {
            "notifications": [n.to_dict() for n in notifications],
            "unread": await self._notifier.unread_count(user_id),
        }

    async def _notifications_mark_read(self, connection: Connection, request: MarkRead) -> Reply:
        return await self._notifier.mark_read(connection.claims.sub, request)

    async def _set_refresh_interval(
        self, connection: Connection, request: RefreshIntervalRequest
    ) -> Reply:
        if not connection.claims.is_admin:
            raise NotifierError(ErrorCode.FORBIDDEN, "only admins may change the refresh interval")
        seconds = await self._notifier.set_refresh_interval(request.seconds)
        return {"refresh_interval": seconds}

    # Worker events

    def _once(
        self, connection: Connection, key: str | None, action: Callable[[], Awaitable[Reply]]
    ) -> Awaitable[Reply]:
        # Keys are scoped to the token's subject: one worker cannot replay another's answers.
        scoped = None if key is None else f"{connection.claims.sub}:{key}"
        return self._notifier.once(scoped, action)

    async def _publish(self, connection: Connection, request: PublishRequest) -> Reply:
        async def publish() -> Reply:
            envelope = await self._notifier.publish(request)
            return {key: envelope[key] for key in ("id", "room", "offset", "epoch")}

        return await self._once(connection, request.idempotency_key, publish)

    async def _notify(self, connection: Connection, request: NotifyRequest) -> Reply:
        async def notify() -> Reply:
            notifications = await self._notifier.notify(request)
            return {"notifications": [{"id": n.id, "user_id": n.user_id} for n in notifications]}

        return await self._once(connection, request.idempotency_key, notify)

    async def _task_create(self, connection: Connection, request: TaskCreate) -> Reply:
        async def create() -> Reply:
            return {"task": (await self._notifier.create_task(request)).to_dict()}

        return await self._once(connection, request.idempotency_key, create)

    async def _task_progress(self, connection: Connection, request: TaskProgress) -> Reply:
        # Progress needs no key: a repeated value is accepted and coalesced away.
        return {"task": (await self._notifier.report_progress(request)).to_dict()}

    async def _task_complete(self, connection: Connection, request: TaskComplete) -> Reply:
        async def complete() -> Reply:
            task = await self._notifier.complete_task(
                request.task_id, request.result, request.message
            )
            return {"task": task.to_dict()}

        return await self._once(connection, request.idempotency_key, complete)

    async def _task_fail(self, connection: Connection, request: TaskFail) -> Reply:
        async def fail() -> Reply:
            return {"task": (await self._notifier.fail_task(request.task_id, request.error)).to_dict()}

        return await self._once(connection, request.idempotency_key, fail)

    async def _task_cancel(self, connection: Connection, request: TaskCancel) -> Reply:
        async def cancel() -> Reply:
            task = await self._notifier.cancel_task(request.task_id, request.reason)
            return {"task": task.to_dict()}

        return await self._once(connection, request.idempotency_key, cancel)

    # Shutdown

    async def disconnect_all(self, deadline: float = 3.0) -> None:
        """Drop every connection's transport so that clients reconnect (here, or to a peer).

        An Engine.IO CLOSE packet would read as "the server disconnected you" and clients
        would stay away; closing the transport reads as a network failure, and Socket.IO
        clients reconnect, then recover what they missed. (engineio's own disconnect-all also
        waits without limit for each queue to drain.) Bounded by `deadline`.
        """
        self.draining = True
        eio = self._sio.eio
        for socket in list(eio.sockets.values()):
            await socket.close(wait=False, abort=True, reason=eio.reason.TRANSPORT_CLOSE)
            socket.queue.put_nowait(None)  # the websocket (or the pending long-poll) closes
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=deadline)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + deadline
        # engineio signals no event when a socket goes, so this polls, briefly and bounded.
        while eio.sockets and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(0.01)

    def connection_counts(self) -> dict[str, int]:
        counts = {USER_NAMESPACE: 0, WORKER_NAMESPACE: 0}
        for connection in self._connections.values():
            counts[connection.namespace] += 1
        return counts

    def room_count(self) -> int:
        rooms = self._sio.manager.rooms.get(USER_NAMESPACE, {})
        # python-socketio keeps a room per sid and one (None) for the namespace: not ours.
        return sum(1 for name in rooms if name is not None and name not in self._connections)

