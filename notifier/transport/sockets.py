"""Socket.IO namespaces: `/` for end users, `/workers` for publishing processes.

Handlers are thin: they authenticate, validate (through `acked`) and call the service.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..auth import Claims, TokenVerifier
from ..clock import millis
from ..errors import ErrorCode, NotifierError
from ..logs import get_logger
from ..metrics import Tally
from ..models import (
    AuthRefresh,
    MarkRead,
    NotificationsList,
    NotifyRequest,
    PingRequest,
    Position,
    PresenceRequest,
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
from ..presence import tracked
from ..records import new_id
from ..rooms import ALL_PROJECTS_ROOM, BROADCAST_ROOM, presence_feed, room_for_user
from ..service import Notifier
from ..settings import Settings
from .acks import Connection, EventHandler, Handler, Reply, acked, unknown_event
from .credentials import Credentials
from .engine_session import Outbound
from .fanout import USER_NAMESPACE, SocketFanOut
from .socket_server import Refused, SocketConnection, SocketServer, encode_event

log = get_logger("notifier.sockets")

WORKER_NAMESPACE = "/workers"
# A reconnecting client's rooms, with where it stands (null: join without recovery).
_POSITIONS = TypeAdapter(dict[str, Position | None])
# Replayed packets kept for reuse: the newest events of the rooms being recovered.
_REPLAY_PACKETS = 20_000

# Each namespace's events and the models their payloads are validated with.
EVENT_MODELS: dict[str, dict[str, type[BaseModel]]] = {
    USER_NAMESPACE: {
        "subscribe": SubscribeRequest,
        "unsubscribe": UnsubscribeRequest,
        "ping": PingRequest,
        "task.get": TaskRef,
        "notifications.list": NotificationsList,
        "notifications.mark_read": MarkRead,
        "config.set_refresh_interval": RefreshIntervalRequest,
        "auth.refresh": AuthRefresh,
        "presence.get": PresenceRequest,
        "presence.stats": PresenceRequest,
    },
    WORKER_NAMESPACE: {
        "publish": PublishRequest,
        "notify": NotifyRequest,
        "task.create": TaskCreate,
        "task.progress": TaskProgress,
        "task.complete": TaskComplete,
        "task.fail": TaskFail,
        "task.cancel": TaskCancel,
        "task.get": TaskRef,
        "ping": PingRequest,
        "auth.refresh": AuthRefresh,
        "presence.get": PresenceRequest,
        "presence.stats": PresenceRequest,
    },
}


@dataclass
class _JoinBatch:
    """What a subscribe (or a connect with positions) joined, and the replay it owes."""

    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    packets: list[Outbound] = field(default_factory=list)
    positions: dict[str, tuple[str, int]] = field(default_factory=dict)


class _Namespace:
    """One namespace's handlers, as the Socket.IO layer calls them."""

    def __init__(
        self,
        gateway: SocketGateway,
        connect: Callable[[SocketConnection, dict[str, Any] | None], Awaitable[None]],
        events: dict[str, EventHandler],
    ) -> None:
        self._gateway = gateway
        self._connect = connect
        self._events = events

    async def connect(self, connection: SocketConnection, auth: dict[str, Any] | None) -> None:
        await self._connect(connection, auth)

    def connected(self, connection: SocketConnection) -> None:
        self._gateway.on_connected(connection)

    def event(self, connection: SocketConnection, name: str, args: list[Any]) -> Awaitable[Reply]:
        handler = self._events.get(name)
        if handler is None:
            return unknown_event(connection, name)
        return handler(connection, args)

    def disconnected(self, connection: SocketConnection, reason: str) -> None:
        self._gateway.on_disconnect(connection, reason)

    def flooding(self, connection: SocketConnection) -> None:
        self._gateway.tell_closing(
            connection, NotifierError(ErrorCode.RATE_LIMITED, "rate limit exceeded for too long")
        )


class SocketGateway:
    def __init__(
        self,
        server: SocketServer,
        notifier: Notifier,
        verifier: TokenVerifier,
        settings: Settings,
        fanout: SocketFanOut,
    ) -> None:
        self._server = server
        self._notifier = notifier
        self._verifier = verifier
        self._settings = settings
        self._fanout = fanout
        self._welcome: dict[SocketConnection, tuple[dict[str, Any], _JoinBatch]] = {}
        self._join_locks: dict[SocketConnection, asyncio.Lock] = {}
        self._counts = {USER_NAMESPACE: 0, WORKER_NAMESPACE: 0}
        self._workers: set[SocketConnection] = set()
        self._replay_packets: OrderedDict[tuple[str, int, str], Outbound] = OrderedDict()
        # For the metrics: rooms clients asked to recover, by outcome and reason.
        self.replays = Tally()
        self._credentials = Credentials(notifier, verifier, settings, close=self._close,
                                        send=self._send_direct, revoke_rooms=self._revoke_rooms)
        notifier.revocations.on_revoked = self._user_revoked
        self._register()

    # Registration

    def _register(self) -> None:
        handlers: dict[str, dict[str, Handler[Any]]] = {
            USER_NAMESPACE: {
                "subscribe": self._subscribe,
                "unsubscribe": self._unsubscribe,
                "ping": self._ping,
                "task.get": self._task_get,
                "notifications.list": self._notifications_list,
                "notifications.mark_read": self._notifications_mark_read,
                "config.set_refresh_interval": self._set_refresh_interval,
                "auth.refresh": self._auth_refresh,
                "presence.get": self._presence_get,
                "presence.stats": self._presence_stats,
            },
            WORKER_NAMESPACE: {
                "publish": self._publish,
                "notify": self._notify,
                "task.create": self._task_create,
                "task.progress": self._task_progress,
                "task.complete": self._task_complete,
                "task.fail": self._task_fail,
                "task.cancel": self._task_cancel,
                "task.get": self._task_get,
                "ping": self._ping,
                "auth.refresh": self._auth_refresh,
                "presence.get": self._presence_get,
                "presence.stats": self._presence_stats,
            },
        }
        connects = {USER_NAMESPACE: self._on_user_connect, WORKER_NAMESPACE: self._on_worker_connect}
        for namespace, models in EVENT_MODELS.items():
            events = {event: acked(event, model, handlers[namespace][event])
                      for event, model in models.items()}
            self._server.register(namespace, _Namespace(self, connects[namespace], events))

    def start(self) -> None:
        self._credentials.start()

    def stop(self) -> None:
        self._credentials.stop()

    # Connecting

    async def _on_user_connect(self, connection: SocketConnection, auth: Any) -> None:
        claims = self._authenticate(connection, auth)
        state = Connection(claims=claims, joined={})
        connection.data = state
        positions = self._positions_from(auth)
        rooms = [BROADCAST_ROOM, room_for_user(claims.sub), *positions]
        self._fanout.hold(connection)
        try:
            batch = _JoinBatch()
            await self._join(connection, rooms, positions, batch, _presence_from(auth))
            unread = await self._notifier.unread_count(claims.sub)
        except NotifierError as exc:  # the store failing: no traceback, the client retries
            self._leave_all(connection)
            log.info("connect_failed", sid=connection.sid, user=claims.sub, code=exc.code.value)
            raise Refused(NotifierError(exc.code, f"connection set-up failed: {exc.message}")) from exc
        except Exception as exc:
            self._leave_all(connection)
            log.exception("connect_failed", sid=connection.sid, user=claims.sub)
            raise Refused(NotifierError(ErrorCode.INTERNAL, "connection set-up failed")) from exc
        session = {
            "user_id": claims.sub,
            "role": claims.role.value,
            "projects": sorted(claims.projects),
            "server_time": millis(self._notifier.clock.now()),
            "refresh_interval": self._notifier.refresh_interval,
            "unread": unread,
            "rooms": batch.results,
        }
        self._welcome[connection] = (session, batch)
        self._counts[USER_NAMESPACE] += 1
        log.info("connected", namespace="/", sid=connection.sid, user=claims.sub,
                 peer=connection.session.peer)

    async def _on_worker_connect(self, connection: SocketConnection, auth: Any) -> None:
        claims = self._authenticate(connection, auth)
        if not claims.can_publish:
            error = NotifierError(
                ErrorCode.FORBIDDEN, "the /workers namespace needs a publisher or admin token")
            self._refusal(connection, error, claims.sub)
            raise Refused(error)
        connection.data = Connection(claims=claims, joined={})
        settings = self._settings
        connection.session.bucket.raise_to(settings.worker_rate_per_second, settings.worker_rate_burst)
        self._counts[WORKER_NAMESPACE] += 1
        self._workers.add(connection)
        log.info("connected", namespace=WORKER_NAMESPACE, sid=connection.sid, user=claims.sub,
                 peer=connection.session.peer)

    def on_connected(self, connection: SocketConnection) -> None:
        """The CONNECT packet is queued: send the session and the replay, then live events."""
        self._credentials.watch(connection)
        welcome = self._welcome.pop(connection, None)
        if welcome is None:
            return
        session, batch = welcome
        first = [self._fanout_packet("session", session)]
        self._fanout.release(connection, first + batch.packets, batch.positions)

    def on_disconnect(self, connection: SocketConnection, reason: str) -> None:
        self._welcome.pop(connection, None)
        self._join_locks.pop(connection, None)
        self._workers.discard(connection)
        self._leave_all(connection)
        state: Connection | None = connection.data
        if state is not None:
            self._counts[connection.namespace] -= 1
            log.info("disconnected", namespace=connection.namespace, sid=connection.sid,
                     user=state.claims.sub, reason=reason)

    def _authenticate(self, connection: SocketConnection, auth: Any) -> Claims:
        try:
            return self._credentials.verify(self._token_from(connection, auth))
        except NotifierError as exc:
            self._refusal(connection, exc, None)
            raise Refused(exc) from exc

    def _refusal(self, connection: SocketConnection, error: NotifierError, user: str | None) -> None:
        # Anyone can cause these: logged a few times per peer, then counted (ClientErrorLog).
        session = connection.session
        session.engine.client_error("connect_refused", error.message, session.peer,
                                    namespace=connection.namespace, code=error.code.value,
                                    user=user)

    def _token_from(self, connection: SocketConnection, auth: Any) -> object:
        if isinstance(auth, dict) and auth.get("token") is not None:
            return auth["token"]
        header = connection.session.auth_header or ""
        if header.lower().startswith("bearer "):
            return header[7:].strip()
        query_token = connection.session.query_token
        if query_token and not self._settings.allow_query_token:
            raise NotifierError(
                ErrorCode.AUTH_REQUIRED,
                "tokens in the query string are disabled (NOTIFIER_ALLOW_QUERY_TOKEN); send the "
                "token in the auth payload or an Authorization header",
            )
        return query_token

    def _positions_from(self, auth: Any) -> dict[str, Position | None]:
        raw = auth.get("positions") if isinstance(auth, dict) else None
        if not raw:
            return {}
        try:
            return _POSITIONS.validate_python(raw)
        except ValidationError:
            log.info("invalid_positions_ignored")
            return {}

    # Forced disconnects

    def tell_closing(self, connection: SocketConnection, reason: NotifierError) -> None:
        """Tell the client why it is being disconnected (before the DISCONNECT packet)."""
        state: Connection | None = connection.data
        log.info("server_disconnect", sid=connection.sid, code=reason.code.value,
                 user=state.claims.sub if state else None)
        self._fanout.send_direct(
            connection, "connection.closing", self._direct_envelope("connection.closing", reason.to_dict())
        )

    def _send_direct(self, connection: SocketConnection, event: str, data: dict[str, Any]) -> None:
        self._fanout.send_direct(connection, event, self._direct_envelope(event, data))

    def _user_revoked(self, user_id: str) -> None:
        connections = self._fanout.members(room_for_user(user_id))
        connections += [w for w in self._workers if _claims(w).sub == user_id]
        self._credentials.revoked(connections)

    def _close(self, connection: SocketConnection, event: str, reason: NotifierError) -> None:
        state: Connection | None = connection.data
        log.info("server_disconnect", sid=connection.sid, code=reason.code.value,
                 user=state.claims.sub if state else None)
        self._fanout.send_direct(connection, event, self._direct_envelope(event, reason.to_dict()))
        self._server.disconnect(connection)

    def _direct_envelope(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """An envelope for one connection only: it belongs to no room, so it has no offset."""
        return {
            "id": new_id(),
            "type": event_type,
            "room": None,
            "ts": millis(self._notifier.clock.now()),
            "data": data,
        }

    def _fanout_packet(self, event_type: str, data: dict[str, Any]) -> Outbound:
        return encode_event(event_type, self._direct_envelope(event_type, data))

    # Rooms

    async def _join(
        self,
        connection: SocketConnection,
        rooms: list[str],
        since: Mapping[str, Position | None],
        batch: _JoinBatch,
        presence: frozenset[str] = frozenset(),
    ) -> None:
        """Join the rooms (with the presence feeds of those in `presence`), replaying what
        `since` asks for into `batch`."""
        state: Connection = connection.data
        own = (BROADCAST_ROOM, room_for_user(state.claims.sub))  # everyone's, and the user's
        for room in dict.fromkeys(rooms):
            try:
                task = None if room in own else await self._notifier.authorize_room(state.claims, room)
            except NotifierError as exc:
                batch.results[room] = {"joined": False, "error": exc.to_dict()}
                continue
            joined_at = state.joined.get(room)
            if room == ALL_PROJECTS_ROOM:  # live only: nothing to replay
                if joined_at is None:
                    state.joined[room] = 0
                    if self._fanout.join(connection, room):
                        await self._notifier.follow(room)
                batch.results[room] = {"joined": True, "live_only": True}
                continue
            if joined_at is None:
                # Enter first (and have the broker deliver the room here), then read the
                # history: an event appended after the read is held by the gate and delivered
                # live; one before it is in the replay.
                if self._fanout.join(connection, room):
                    await self._notifier.follow(room)
            replay = await self._notifier.replay(room, since.get(room), up_to=joined_at)
            if joined_at is None:
                state.joined[room] = replay.position.offset
                self._entered(connection, room)
            if room in presence and tracked(room):
                await self._follow_feed(connection, room)
            result: dict[str, Any] = {"joined": True, **replay.position.to_dict()}
            if replay.recovered is not None:
                result["recovered"] = replay.recovered
                result["replayed"] = len(replay.events)
                if replay.reason:
                    result["reason"] = replay.reason
                self.replays.add(("recovered" if replay.recovered else "not_recovered",
                                  replay.reason or ""))
            if task is not None:
                result["task"] = task.to_dict()
            batch.results[room] = result
            batch.positions[room] = (replay.position.epoch, replay.position.offset)
            self._notifier.observe(room, replay.position)
            for event in replay.events:
                batch.packets.append(self._replayed(event))

    def _replayed(self, event: dict[str, Any]) -> Outbound:
        """The packet of a replayed event, encoded once for every client that recovers it (a
        reconnect storm replays the same events to many)."""
        key = (event["room"], event["offset"], event["epoch"])
        packet = self._replay_packets.get(key)
        if packet is None:
            packet = encode_event(event["type"], {**event, "replayed": True})
            self._replay_packets[key] = packet
            if len(self._replay_packets) > _REPLAY_PACKETS:
                self._replay_packets.popitem(last=False)
        return packet

    def _leave_all(self, connection: SocketConnection) -> None:
        state: Connection | None = connection.data
        if state is None:
            return
        for room in state.joined:
            self._fanout.leave(connection, room)
            self._exited(connection, room)
        state.joined.clear()
        for feed in state.feeds or ():
            self._fanout.leave(connection, feed)
        state.feeds = None

    async def _follow_feed(self, connection: SocketConnection, room: str) -> None:
        state: Connection = connection.data
        feed = presence_feed(room)
        if state.feeds is None:
            state.feeds = set()
        if feed not in state.feeds:
            state.feeds.add(feed)
            if self._fanout.join(connection, feed):
                await self._notifier.follow(feed)

    def _leave(self, connection: SocketConnection, room: str) -> bool:
        """Leave a room (and its presence feed); False if the connection was not in it."""
        state: Connection = connection.data
        if state.joined.pop(room, None) is None:
            return False
        self._fanout.leave(connection, room)
        self._exited(connection, room)
        feed = presence_feed(room)
        if state.feeds and feed in state.feeds:
            state.feeds.discard(feed)
            self._fanout.leave(connection, feed)
        return True

    def _entered(self, connection: SocketConnection, room: str) -> None:
        if connection.namespace == USER_NAMESPACE and tracked(room):
            self._notifier.presence.enter(room, _claims(connection).sub)

    def _exited(self, connection: SocketConnection, room: str) -> None:
        if connection.namespace == USER_NAMESPACE and tracked(room):
            self._notifier.presence.exit(room, _claims(connection).sub)

    def _revoke_rooms(self, connection: SocketConnection, rooms: list[str]) -> None:
        """A renewed token no longer allows these rooms: leave them and say so."""
        for room in rooms:
            self._leave(connection, room)
        self._send_direct(connection, "rooms.revoked", {
            "rooms": rooms, "reason": {"code": ErrorCode.FORBIDDEN.value,
                                       "message": "your renewed token does not allow these rooms"}})

    def _join_lock(self, connection: SocketConnection) -> asyncio.Lock:
        return self._join_locks.setdefault(connection, asyncio.Lock())

    async def _subscribe(self, connection: SocketConnection, request: SubscribeRequest) -> Reply:
        batch = _JoinBatch()
        async with self._join_lock(connection):
            self._fanout.hold(connection)
            try:
                presence = frozenset(request.rooms) if request.presence else frozenset()
                await self._join(connection, request.rooms, request.since, batch, presence)
            finally:
                self._fanout.release(connection, batch.packets, batch.positions)
        return {"rooms": batch.results}

    async def _unsubscribe(self, connection: SocketConnection, request: UnsubscribeRequest) -> Reply:
        state: Connection = connection.data
        personal = {BROADCAST_ROOM, room_for_user(state.claims.sub)}
        results: dict[str, Any] = {}
        async with self._join_lock(connection):
            for room in request.rooms:
                if room in personal:
                    error = NotifierError(ErrorCode.FORBIDDEN, "your own rooms cannot be left")
                    results[room] = {"left": False, "error": error.to_dict()}
                elif self._leave(connection, room):
                    results[room] = {"left": True}
                else:
                    results[room] = {"left": False, "error": {
                        "code": ErrorCode.NOT_FOUND.value, "message": "not subscribed"}}
        return {"rooms": results}

    # Both namespaces

    async def _auth_refresh(self, connection: SocketConnection, request: AuthRefresh) -> Reply:
        async with self._join_lock(connection):  # no subscribe halfway through a renewal
            return await self._credentials.refresh(connection, request.token)

    async def _presence_get(self, connection: SocketConnection, request: PresenceRequest) -> Reply:
        await self._notifier.authorize_presence(_claims(connection), request.room)
        return {"room": request.room, "users": await self._notifier.presence.members(request.room)}

    async def _presence_stats(self, connection: SocketConnection, request: PresenceRequest) -> Reply:
        await self._notifier.authorize_presence(_claims(connection), request.room)
        return {"room": request.room, **await self._notifier.presence.stats(request.room)}

    # End-user events

    async def _ping(self, connection: SocketConnection, request: PingRequest) -> Reply:
        return {"server_time": millis(self._notifier.clock.now()), "echo": request.model_dump()}

    async def _task_get(self, connection: SocketConnection, request: TaskRef) -> Reply:
        task = await self._notifier.get_task(request.task_id, _claims(connection))
        return {"task": task.to_dict()}

    async def _notifications_list(
        self, connection: SocketConnection, request: NotificationsList
    ) -> Reply:
        user_id = _claims(connection).sub
        notifications = await self._notifier.list_notifications(user_id, request)
        return {
            "notifications": [n.to_dict() for n in notifications],
            "unread": await self._notifier.unread_count(user_id),
        }

    async def _notifications_mark_read(self, connection: SocketConnection, request: MarkRead) -> Reply:
        return await self._notifier.mark_read(_claims(connection).sub, request)

    async def _set_refresh_interval(
        self, connection: SocketConnection, request: RefreshIntervalRequest
    ) -> Reply:
        if not _claims(connection).is_admin:
            raise NotifierError(ErrorCode.FORBIDDEN, "only admins may change the refresh interval")
        seconds = await self._notifier.set_refresh_interval(request.seconds)
        return {"refresh_interval": seconds}

    # Worker events

    def _once(
        self, connection: SocketConnection, key: str | None, action: Callable[[], Awaitable[Reply]]
    ) -> Awaitable[Reply]:
        return self._notifier.once(_scoped(connection, key), action)

    async def _publish(self, connection: SocketConnection, request: PublishRequest) -> Reply:
        key = _scoped(connection, request.idempotency_key)

        async def publish() -> Reply:
            envelope = await self._notifier.publish(request, key)
            return {"id": envelope["id"], "room": envelope["room"], "offset": envelope["offset"],
                    "epoch": envelope["epoch"]}

        if key is None:  # the hot path of a busy worker: nothing to remember
            return await publish()
        return await self._notifier.once(key, publish)

    async def _notify(self, connection: SocketConnection, request: NotifyRequest) -> Reply:
        key = _scoped(connection, request.idempotency_key)

        async def notify() -> Reply:
            notifications = await self._notifier.notify(request, key)
            return {"notifications": [{"id": n.id, "user_id": n.user_id} for n in notifications]}

        return await self._notifier.once(key, notify)

    async def _task_create(self, connection: SocketConnection, request: TaskCreate) -> Reply:
        async def create() -> Reply:
            return {"task": (await self._notifier.create_task(request)).to_dict()}

        return await self._once(connection, request.idempotency_key, create)

    async def _task_progress(self, connection: SocketConnection, request: TaskProgress) -> Reply:
        # Progress needs no key: a repeated value is accepted and coalesced away.
        return {"task": (await self._notifier.report_progress(request)).to_dict()}

    async def _task_complete(self, connection: SocketConnection, request: TaskComplete) -> Reply:
        async def complete() -> Reply:
            task = await self._notifier.complete_task(request.task_id, request.result, request.message)
            return {"task": task.to_dict()}

        return await self._once(connection, request.idempotency_key, complete)

    async def _task_fail(self, connection: SocketConnection, request: TaskFail) -> Reply:
        async def fail() -> Reply:
            return {"task": (await self._notifier.fail_task(request.task_id, request.error)).to_dict()}

        return await self._once(connection, request.idempotency_key, fail)

    async def _task_cancel(self, connection: SocketConnection, request: TaskCancel) -> Reply:
        async def cancel() -> Reply:
            task = await self._notifier.cancel_task(request.task_id, request.reason)
            return {"task": task.to_dict()}

        return await self._once(connection, request.idempotency_key, cancel)

    # Counts

    def connection_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def room_count(self) -> int:
        return self._fanout.room_count()


def _presence_from(auth: Any) -> frozenset[str]:
    """Rooms whose presence feeds a reconnecting client had (`auth.presence`)."""
    raw = auth.get("presence") if isinstance(auth, dict) else None
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(room for room in raw[:100] if isinstance(room, str))


def _scoped(connection: SocketConnection, key: str | None) -> str | None:
    """Keys are scoped to the token's subject: one worker cannot replay another's answers."""
    return None if key is None else f"{_claims(connection).sub}:{key}"


def _claims(connection: SocketConnection) -> Claims:
    state: Connection = connection.data
    return state.claims
