"""Room names and who may join them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from .errors import ErrorCode, NotifierError

BROADCAST_ROOM = "*"
# Every project's events, live (no history, no replay): for tokens with `projects: "*"`.
ALL_PROJECTS_ROOM = "project:*"
_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,128}$")
# A user id is a token's subject, as identity providers issue them (`auth0|5f7c...`,
# `a+b@example.com`, `josé`, `Alice Smith`, `user/1`): any text up to 255 characters but
# control characters, which no format downstream (logs, Redis arguments) has to escape.
MAX_USER_ID = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_user_id(text: str) -> bool:
    return 0 < len(text) <= MAX_USER_ID and _CONTROL.search(text) is None


class RoomKind(StrEnum):
    USER = "user"
    PROJECT = "project"
    TASK = "task"
    BROADCAST = "broadcast"


@dataclass(frozen=True)
class Room:
    kind: RoomKind
    id: str

    @property
    def name(self) -> str:
        if self.kind is RoomKind.BROADCAST:
            return BROADCAST_ROOM
        return f"{self.kind.value}:{self.id}"


def room_for_user(user_id: str) -> str:
    return f"user:{user_id}"


def room_for_project(project_id: str) -> str:
    return f"project:{project_id}"


def room_for_task(task_id: str) -> str:
    return f"task:{task_id}"


def presence_feed(room: str) -> str:
    """Where a room's presence changes go: connections that asked for them follow it. (No
    client room name starts with `~`.)"""
    return f"~{room}"


def parse_room(name: str) -> Room:
    """Split `kind:id`; anything else is INVALID_PAYLOAD."""
    if name == BROADCAST_ROOM:
        return Room(RoomKind.BROADCAST, "")
    if name == ALL_PROJECTS_ROOM:
        return Room(RoomKind.PROJECT, "*")
    kind, sep, ident = name.partition(":")
    valid = is_user_id(ident) if kind == "user" else _ID.match(ident) is not None
    if not sep or kind not in {"user", "project", "task"} or not valid:
        raise NotifierError(
            ErrorCode.INVALID_PAYLOAD,
            f"room {name!r} is not one of user:<id>, project:<id>, task:<id> or '*'",
        )
    return Room(RoomKind(kind), ident)
