"""A connection's token over its lifetime: renewal in-band, expiry, and revocation.

Before a token expires the client is told (`auth.expiring`) and may send a new one
(`auth.refresh`) on the same connection: no reconnect, no replay. The new token must name the
same user; what it no longer allows (a project dropped) is left at once (`rooms.revoked`).
A token that runs out ends the connection (`auth.expired`); a user disconnected on demand
gets `auth.revoked` on every node.

Deadlines live in one time wheel (a tenth of a second apart at most), not a timer per
connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..auth import Claims, TokenVerifier
from ..clock import millis
from ..errors import ErrorCode, NotifierError
from ..logs import get_logger
from ..service import Notifier
from ..settings import Settings
from ..wire import SocketConnection
from ..wire.timewheel import Deadlines
from .acks import Connection, Reply

log = get_logger("notifier.credentials")

_RESOLUTION = 0.1

CloseConnection = Callable[[SocketConnection, str, NotifierError], None]
SendEvent = Callable[[SocketConnection, str, dict[str, Any]], None]
# (connection, rooms the new claims no longer allow) -> left them
RevokeRooms = Callable[[SocketConnection, list[str]], None]


class Credentials:
    def __init__(
        self,
        notifier: Notifier,
        verifier: TokenVerifier,
        settings: Settings,
        *,
        close: CloseConnection,
        send: SendEvent,
        revoke_rooms: RevokeRooms,
    ) -> None:
        self._notifier = notifier
        self._verifier = verifier
        self._leeway = settings.jwt_leeway_seconds
        self._notice = settings.token_notice_seconds
        self._close = close
        self._send = send
        self._revoke_rooms = revoke_rooms
        self._deadlines: Deadlines[SocketConnection] = Deadlines(_RESOLUTION, self._check)
        self._loop: asyncio.AbstractEventLoop | None = None  # start() keeps it

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadlines.start(self._loop)

    def stop(self) -> None:
        self._deadlines.stop()

    def verify(self, token: object) -> Claims:
        """A token's claims, if it is valid and not revoked."""
        claims = self._verifier.verify(token)
        self._notifier.revocations.check(claims)
        return claims

    # Deadlines: the notice, then the expiry

    def watch(self, connection: SocketConnection) -> None:
        """The connection is established, or its token renewed: when to tell, when to end."""
        state: Connection = connection.data
        now = self._notifier.clock.now()
        expires = state.claims.expires_at  # the leeway is for clock skew, not for renewing late
        # At most `notice` before the end, and never in the first half of what is left: a
        # short token is not told to renew the moment it arrives.
        state.notice_at = max(expires - min(self._notice, max(expires - now, 0.0) / 2), now)
        self._schedule(connection, now)

    def _schedule(self, connection: SocketConnection, now: float) -> None:
        state: Connection = connection.data
        due = state.notice_at or state.claims.expires_at + self._leeway
        loop = self._loop
        assert loop is not None, "start() first"
        before, state.wheel_at = state.wheel_at, loop.time() + max(due - now, 0.0)
        self._deadlines.move(connection, before, state.wheel_at)

    def forget(self, connection: SocketConnection) -> None:
        """The connection ended: the wheel lets go of it at once."""
        state: Connection | None = connection.data
        if state is not None and state.wheel_at is not None:
            self._deadlines.cancel(connection, state.wheel_at)
            state.wheel_at = None

    def _check(self, connection: SocketConnection) -> None:
        state: Connection | None = connection.data
        if not connection.connected or state is None:
            return
        state.wheel_at = None
        now = self._notifier.clock.now()
        expires = state.claims.expires_at + self._leeway
        if now >= expires:
            self._close(
                connection,
                "auth.expired",
                NotifierError(ErrorCode.AUTH_EXPIRED, "your token expired; reconnect with a new one"),
            )
            return
        if state.notice_at and now >= state.notice_at:
            state.notice_at = 0.0
            self._send(connection, "auth.expiring", {"expires_at": millis(state.claims.expires_at)})
        # The next deadline (entries left from before a renewal land here too).
        self._schedule(connection, now)

    # Renewal

    async def refresh(self, connection: SocketConnection, token: str) -> Reply:
        state: Connection = connection.data
        claims = self.verify(token)
        if claims.sub != state.claims.sub:
            raise NotifierError(
                ErrorCode.FORBIDDEN,
                f"the new token is for {claims.sub!r}, not "
                f"{state.claims.sub!r}; connect again to change users",
            )
        if connection.namespace != "/" and not claims.can_publish:
            raise NotifierError(ErrorCode.FORBIDDEN, "this namespace needs a publisher or admin token")
        lost = []
        for room in list(state.joined):
            try:
                await self._notifier.authorize_room(claims, room)
            except NotifierError as exc:
                if exc.code is not ErrorCode.FORBIDDEN:
                    raise
                lost.append(room)
        state.claims = claims
        self.watch(connection)
        if lost:
            self._revoke_rooms(connection, lost)
        log.debug("token_renewed", sid=connection.sid, user=claims.sub, rooms_revoked=len(lost))
        return {"expires_at": millis(claims.expires_at), "rooms_revoked": lost}

    # Revocation

    def revoked(self, connections: list[SocketConnection]) -> None:
        """Some of these connections' user was revoked: close those whose token is older."""
        for connection in connections:
            state: Connection | None = connection.data
            if (
                connection.connected
                and state is not None
                and self._notifier.revocations.revoked(state.claims)
            ):
                self._close(
                    connection,
                    "auth.revoked",
                    NotifierError(ErrorCode.AUTH_REVOKED, "you were disconnected by an administrator"),
                )
