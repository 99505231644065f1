"""What every event handler may use, and the shape of a namespace's table."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from ...service import Notifier
from ...settings import Settings
from ...wire import SocketConnection
from ..acks import Reply
from ..credentials import Credentials
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
