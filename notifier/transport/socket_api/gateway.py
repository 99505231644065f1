"""The Socket.IO API's lifecycle: connecting (authentication, the welcome and its replay),
disconnecting, closing connections on the server's behalf, and the counts."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from ...auth import Claims, TokenVerifier
from ...clock import millis
from ...errors import ErrorCode, NotifierError
from ...logs import ClientErrorLog, get_logger
from ...metrics import Tally
from ...records import new_id
from ...rooms import BROADCAST_ROOM, room_for_user
from ...service import Notifier
from ...settings import Settings
from ...wire import Outbound, Refused, SocketConnection, SocketServer, encode_event
from ...wire.limits import decrement
from ..acks import Connection, EventHandler, Reply, acked, claims_of, unknown_event
from ..credentials import Credentials
from ..fanout import USER_NAMESPACE, SocketFanOut
from .connecting import positions_from, presence_from, token_from
from .context import SocketContext
from .rooms import JoinBatch, RoomMembership
from .tables import TABLES, WORKER_NAMESPACE

log = get_logger("notifier.sockets")

ConnectHandler = Callable[[SocketConnection, dict[str, Any] | None], Awaitable[None]]


def refused(error: NotifierError) -> Refused:
    """A refusal as clients see it: CONNECT_ERROR `{message, data: {code, message}}`."""
    return Refused(error.message, error.to_dict())


class _Namespace:
    """One namespace's handlers, as the wire layer calls them (`wire.Namespace`)."""

    def __init__(
        self, gateway: SocketGateway, connect: ConnectHandler, events: dict[str, EventHandler]
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
        client_errors: ClientErrorLog,
    ) -> None:
        self._server = server
        self._notifier = notifier
        self._settings = settings
        self._fanout = fanout
        self._client_errors = client_errors
        self._welcome: dict[SocketConnection, tuple[dict[str, Any], JoinBatch]] = {}
        self._counts = {USER_NAMESPACE: 0, WORKER_NAMESPACE: 0}
        self._workers: set[SocketConnection] = set()
        # Connections per user on this process, counted from the start of their set-up.
        self._per_user: Counter[str] = Counter()
        # For the metrics: acks sent, by namespace and result (`ok` or the error code).
        self.acks = Tally()
        self.rooms = RoomMembership(notifier, fanout, settings)
        self._credentials = Credentials(
            notifier,
            verifier,
            settings,
            close=self._close,
            send=self._send_direct,
            revoke_rooms=self._revoke_rooms,
        )
        notifier.revocations.on_revoked = self._user_revoked
        server.on_ack = self._count_ack
        server.on_refusal = lambda reason, detail, peer, extra: client_errors.note(
            reason, detail, peer, **extra
        )
        self._register(SocketContext(notifier, settings, self.rooms, self._credentials))

    @property
    def replays(self) -> Tally:
        return self.rooms.replays

    def _register(self, context: SocketContext) -> None:
        connects: dict[str, ConnectHandler] = {
            USER_NAMESPACE: self._on_user_connect,
            WORKER_NAMESPACE: self._on_worker_connect,
        }
        for namespace, table in TABLES.items():
            events = {
                event: acked(event, model, functools.partial(handler, context))
                for event, (model, handler) in table.items()
            }
            self._server.register(namespace, _Namespace(self, connects[namespace], events))

    def start(self) -> None:
        self._credentials.start()

    def stop(self) -> None:
        self._credentials.stop()

    def _count_ack(self, namespace: str, reply: Any) -> None:
        error = reply.get("error") if isinstance(reply, dict) else None
        self.acks.add((namespace, error.get("code", "?") if isinstance(error, dict) else "ok"))

    # Connecting

    async def _on_user_connect(self, connection: SocketConnection, auth: Any) -> None:
        claims = self._authenticate(connection, auth)
        try:
            positions = positions_from(auth, self.rooms.room_limit(claims))
            # A reconnect's rooms cost what subscribing to them would: a packet per 100.
            if not connection.charge(len(positions) // 100):
                raise NotifierError(ErrorCode.RATE_LIMITED, "too many rooms recovered too fast; retry")
        except NotifierError as exc:
            self._refusal(connection, exc, claims.sub)
            raise refused(exc) from exc
        self._take_slot(connection, claims)
        connection.data = Connection(claims=claims, joined={})
        rooms = [BROADCAST_ROOM, room_for_user(claims.sub), *positions]
        self._fanout.hold(connection)
        try:
            batch = JoinBatch()
            await self.rooms.join(connection, rooms, positions, batch, presence_from(auth))
            unread = await self._notifier.unread_count(claims.sub)
        except NotifierError as exc:  # the store failing: no traceback, the client retries
            self.rooms.leave_all(connection)
            self._release_slot(claims.sub)
            log.info("connect_failed", sid=connection.sid, user=claims.sub, code=exc.code.value)
            raise refused(NotifierError(exc.code, f"connection set-up failed: {exc.message}")) from exc
        except Exception as exc:
            self.rooms.leave_all(connection)
            self._release_slot(claims.sub)
            log.exception("connect_failed", sid=connection.sid, user=claims.sub)
            raise refused(NotifierError(ErrorCode.INTERNAL, "connection set-up failed")) from exc
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
        log.info("connected", namespace="/", sid=connection.sid, user=claims.sub, peer=connection.peer)

    async def _on_worker_connect(self, connection: SocketConnection, auth: Any) -> None:
        claims = self._authenticate(connection, auth)
        if not claims.can_publish:
            error = NotifierError(
                ErrorCode.FORBIDDEN, "the /workers namespace needs a publisher or admin token"
            )
            self._refusal(connection, error, claims.sub)
            raise refused(error)
        self._take_slot(connection, claims)
        connection.data = Connection(claims=claims, joined={})
        settings = self._settings
        connection.raise_rate_limit(settings.worker_rate_per_second, settings.worker_rate_burst)
        self._counts[WORKER_NAMESPACE] += 1
        self._workers.add(connection)
        log.info(
            "connected", namespace=WORKER_NAMESPACE, sid=connection.sid, user=claims.sub, peer=connection.peer
        )

    def on_connected(self, connection: SocketConnection) -> None:
        """The CONNECT packet is queued: send the session and the replay, then live events."""
        self._credentials.watch(connection)
        welcome = self._welcome.pop(connection, None)
        if welcome is None:
            return
        session, batch = welcome
        first = [self._direct_packet("session", session)]
        self._fanout.release(connection, first + batch.packets, batch.positions)

    def on_disconnect(self, connection: SocketConnection, reason: str) -> None:
        self._welcome.pop(connection, None)
        self._workers.discard(connection)
        self._credentials.forget(connection)
        self.rooms.leave_all(connection)
        state: Connection | None = connection.data
        if state is not None:
            self._release_slot(state.claims.sub)
            self._counts[connection.namespace] -= 1
            log.info(
                "disconnected",
                namespace=connection.namespace,
                sid=connection.sid,
                user=state.claims.sub,
                reason=reason,
            )

    def _take_slot(self, connection: SocketConnection, claims: Claims) -> None:
        """Count the connection against its user's limit, or refuse it."""
        limit = self._settings.max_connections_per_user
        if self._per_user[claims.sub] >= limit:
            error = NotifierError(
                ErrorCode.LIMIT_REACHED,
                f"you have {limit} connections open already "
                "(NOTIFIER_MAX_CONNECTIONS_PER_USER); close one first",
            )
            self._refusal(connection, error, claims.sub)
            raise refused(error)
        self._per_user[claims.sub] += 1

    def _release_slot(self, user: str) -> None:
        decrement(self._per_user, user)

    def _authenticate(self, connection: SocketConnection, auth: Any) -> Claims:
        try:
            token = token_from(connection, auth, self._settings.allow_query_token)
            return self._credentials.verify(token)
        except NotifierError as exc:
            self._refusal(connection, exc, None)
            raise refused(exc) from exc

    def _refusal(self, connection: SocketConnection, error: NotifierError, user: str | None) -> None:
        # Anyone can cause these: logged a few times per peer, then counted (ClientErrorLog).
        self._client_errors.note(
            "connect_refused",
            error.message,
            connection.peer,
            namespace=connection.namespace,
            code=error.code.value,
            user=user,
        )

    # Forced disconnects

    def tell_closing(
        self, connection: SocketConnection, reason: NotifierError, event: str = "connection.closing"
    ) -> None:
        """Tell the client why it is being disconnected (before the DISCONNECT packet)."""
        state: Connection | None = connection.data
        log.info(
            "server_disconnect",
            sid=connection.sid,
            code=reason.code.value,
            user=state.claims.sub if state else None,
        )
        self._send_direct(connection, event, reason.to_dict())

    def _send_direct(self, connection: SocketConnection, event: str, data: dict[str, Any]) -> None:
        self._fanout.send_direct(connection, event, self._direct_envelope(event, data))

    def _user_revoked(self, user_id: str) -> None:
        connections = self._fanout.members(room_for_user(user_id))
        connections += [w for w in self._workers if claims_of(w).sub == user_id]
        self._credentials.revoked(connections)

    def _close(self, connection: SocketConnection, event: str, reason: NotifierError) -> None:
        self.tell_closing(connection, reason, event)
        self._server.disconnect(connection)

    def _revoke_rooms(self, connection: SocketConnection, rooms: list[str]) -> None:
        """A renewed token no longer allows these rooms: leave them and say so."""
        for room in rooms:
            self.rooms.leave(connection, room)
        self._send_direct(
            connection,
            "rooms.revoked",
            {
                "rooms": rooms,
                "reason": {
                    "code": ErrorCode.FORBIDDEN.value,
                    "message": "your renewed token does not allow these rooms",
                },
            },
        )

    def _direct_envelope(self, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        """An envelope for one connection only: it belongs to no room, so it has no offset."""
        return {
            "id": new_id(),
            "type": event_type,
            "room": None,
            "ts": millis(self._notifier.clock.now()),
            "data": data,
        }

    def _direct_packet(self, event_type: str, data: dict[str, Any]) -> Outbound:
        return encode_event(event_type, self._direct_envelope(event_type, data))

    # Counts

    def connection_counts(self) -> dict[str, int]:
        return dict(self._counts)

    def room_count(self) -> int:
        return self._fanout.room_count()
