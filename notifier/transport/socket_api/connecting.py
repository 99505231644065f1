"""What a CONNECT carries besides the namespace: the token, and a reconnecting client's
positions and presence feeds."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from ...errors import ErrorCode, NotifierError
from ...logs import get_logger
from ...models import Position
from ...wire import SocketConnection

log = get_logger("notifier.sockets")

# A reconnecting client's rooms, with where it stands (null: join without recovery).
_POSITIONS = TypeAdapter(dict[str, Position | None])


def token_from(connection: SocketConnection, auth: Any, allow_query_token: bool) -> object:
    """The token: the auth payload's, else the Authorization header's, else the query's."""
    if isinstance(auth, dict) and auth.get("token") is not None:
        return auth["token"]
    header = connection.auth_header or ""
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    query_token = connection.query_token
    if query_token and not allow_query_token:
        raise NotifierError(
            ErrorCode.AUTH_REQUIRED,
            "tokens in the query string are disabled (NOTIFIER_ALLOW_QUERY_TOKEN); send the "
            "token in the auth payload or an Authorization header",
        )
    return query_token


def positions_from(auth: Any, limit: int) -> dict[str, Position | None]:
    """Rooms a reconnecting client had, with where it stood (`auth.positions`): at most as
    many as a connection may be in."""
    raw = auth.get("positions") if isinstance(auth, dict) else None
    if not raw:
        return {}
    if isinstance(raw, dict) and len(raw) > limit:
        raise NotifierError(
            ErrorCode.LIMIT_REACHED,
            f"auth.positions names {len(raw)} rooms; a connection may be in {limit} "
            "(NOTIFIER_MAX_ROOMS_PER_CONNECTION)",
        )
    try:
        return _POSITIONS.validate_python(raw)
    except ValidationError:
        log.info("invalid_positions_ignored")
        return {}


def presence_from(auth: Any) -> frozenset[str]:
    """Rooms whose presence feeds a reconnecting client had (`auth.presence`)."""
    raw = auth.get("presence") if isinstance(auth, dict) else None
    if not isinstance(raw, list):
        return frozenset()
    return frozenset(room for room in raw[:100] if isinstance(room, str))
