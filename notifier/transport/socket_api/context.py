"""What every event handler may use, and the shape of a namespace's table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ...auth import Claims
from ...service import Notifier
from ...settings import Settings
from ...wire import SocketConnection
from ..acks import Connection, Reply
from ..credentials import Credentials

if TYPE_CHECKING:
    from .rooms import RoomMembership


@dataclass(frozen=True, slots=True)
class SocketContext:
    notifier: Notifier
    settings: Settings
    rooms: RoomMembership
    credentials: Credentials


# An event's handler: (context, connection, validated payload) -> the ack's payload.
EventFunction = Callable[[SocketContext, SocketConnection, Any], Awaitable[Reply]]
# A namespace's table: event name -> (payload model, handler).
EventTable = dict[str, tuple[type[BaseModel], EventFunction]]


def state_of(connection: SocketConnection) -> Connection:
    state: Connection = connection.data
    return state


def claims_of(connection: SocketConnection) -> Claims:
    return state_of(connection).claims
