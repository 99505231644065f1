"""One decorator for every client event: validate, call the service, answer the ack."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ..auth import Claims
from ..errors import ErrorCode, NotifierError, error_body
from ..logs import get_logger
from ..wire import SocketConnection

log = get_logger("notifier.events")

M = TypeVar("M", bound=BaseModel)
Reply = dict[str, Any]


@dataclass(slots=True)
class Connection:
    """What the gateway keeps for one client's connection to one namespace."""

    claims: Claims
    # Rooms joined, with the room's head offset at the time of joining.
    joined: dict[str, int]
    # When to send `auth.expiring` (clock seconds); 0 once sent.
    notice_at: float = 0.0
    # The presence feeds followed (rooms whose presence changes this connection asked for).
    feeds: set[str] | None = None
    # The deadline the credentials' time wheel holds for this connection (loop time).
    wheel_at: float | None = None


def state_of(connection: SocketConnection) -> Connection:
    """What the gateway keeps for a connection that was accepted."""
    state: Connection = connection.data
    return state


def claims_of(connection: SocketConnection) -> Claims:
    return state_of(connection).claims


Handler = Callable[[SocketConnection, M], Awaitable[Reply]]
EventHandler = Callable[[SocketConnection, list[Any]], Awaitable[Reply]]


def validation_message(error: ValidationError) -> str:
    """`field.path: what is wrong` for the first problem, naming the field as the client sent it."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"]) or "payload"
    message = first["msg"].removeprefix("Value error, ")
    return f"{path}: {message}"


def acked(event: str, model: type[M], handler: Handler[M]) -> EventHandler:
    """Wrap a service call as an event handler that always answers.

    An exception that escaped a handler would leave the client's ack unanswered until its
    timeout, so every failure becomes an `{ok: false, error}` reply here.
    """

    async def on_event(connection: SocketConnection, args: list[Any]) -> Reply:
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
            log.exception("handler_crashed", name=event, sid=connection.sid)
            return error_body(ErrorCode.INTERNAL, "the server failed to handle this event")
        return {"ok": True, **result}

    on_event.__name__ = f"on_{event.replace('.', '_')}"
    return on_event


async def unknown_event(connection: SocketConnection, name: str) -> Reply:
    return error_body(ErrorCode.UNKNOWN_EVENT, f"unknown event {name[:64]!r}")
