"""One decorator for every client event: rate limit, validate, call the service, answer the ack."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..auth import Claims
from ..errors import ErrorCode, NotifierError, error_body
from ..ratelimit import TokenBucket, Verdict

log = logging.getLogger("notifier.events")

M = TypeVar("M", bound=BaseModel)
Reply = dict[str, Any]


@dataclass
class Connection:
    """One client's connection to one namespace."""

    sid: str
    namespace: str
    claims: Claims
    bucket: TokenBucket
    # Rooms joined, with the room's head offset at the time of joining.
    joined: dict[str, int] = field(default_factory=dict)
    cancel_expiry: Callable[[], None] | None = None


ConnectionLookup = Callable[[str], Connection | None]
Disconnect = Callable[[Connection, str], Awaitable[None]]
Handler = Callable[[Connection, M], Awaitable[Reply]]
SocketHandler = Callable[..., Awaitable[Reply]]


def validation_message(error: ValidationError) -> str:
    """`field.path: what is wrong` for the first problem, naming the field as the client sent it."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"]) or "payload"
    return f"{path}: {first['msg']}"


def acked(
    event: str,
    model: type[M],
    handler: Handler[M],
    connections: ConnectionLookup,
    disconnect: Disconnect,
) -> SocketHandler:
    """Wrap a service call as a python-socketio handler that always answers its ack.

    python-socketio does not catch exceptions raised in event handlers: the client's ack would
    simply never come. So every failure becomes an `{ok: false, error}` reply here.
    """

    async def on_event(sid: str, *args: Any) -> Reply:
        connection = connections(sid)
        if connection is None:
            return error_body(ErrorCode.AUTH_REQUIRED, "not connected")
        verdict = connection.bucket.take()
        if verdict is not Verdict.ALLOW:
            if verdict is Verdict.DISCONNECT:
                await disconnect(connection, "rate limit exceeded for too long")
            return error_body(ErrorCode.RATE_LIMITED, "too many events; slow down")
        if len(args) > 1:
            return error_body(ErrorCode.INVALID_PAYLOAD, "send one object as the event payload")
        payload = args[0] if args else {}
        if payload is None:
            payload = {}
        try:
            request = model.model_validate(payload)
            result = await handler(connection, request)
        except ValidationError as exc:
            return error_body(ErrorCode.INVALID_PAYLOAD, validation_message(exc))
        except NotifierError as exc:
            return {"ok": False, "error": exc.to_dict()}
        except Exception:
            log.exception("event=handler_crashed name=%s sid=%s", event, sid)
            return error_body(ErrorCode.INTERNAL, "the server failed to handle this event")
        return {"ok": True, **result}

    on_event.__name__ = f"on_{event.replace('.', '_')}"
    return on_event
