"""The records the service keeps: events (envelopes), tasks and notifications."""

from __future__ import annotations

import itertools
import os
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

Envelope = dict[str, Any]
"""`{id, type, room, ts, data, offset, epoch}`; a plain dict because it is built on the hot path."""


def new_id() -> str:
    """A unique 32-hex-digit id: a random prefix per process and a counter.

    (uuid4 reads the system's random source on every call, which was a tenth of the time of
    publishing a task event.)"""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(int.from_bytes(os.urandom(4), "big"))


@dataclass(frozen=True)
class StreamPosition:
    epoch: str
    offset: int

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_finished(self) -> bool:
        return self in FINISHED_STATUSES


FINISHED_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


@dataclass
class Task:
    id: str
    project_id: str
    owner: str | None
    title: str
    status: TaskStatus
    progress: float
    created_at: int
    updated_at: int
    current: int | None = None
    completed: int | None = None
    total: int | None = None
    message: str | None = None
    result: Any = None
    error: str | None = None
    finished_at: int | None = None
    # Bumped by every stored change: orders a task's snapshots across processes.
    version: int = 1

    def evolve(self, **changes: Any) -> Task:
        """A copy with `changes` and the next version (a task is never changed in place:
        snapshots already handed out stay as they were)."""
        task = object.__new__(Task)
        task.__dict__ = {**self.__dict__, **changes, "version": self.version + 1}
        return task

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, which deep-copies: this runs for every
        # emitted progress event.
        return {
            "id": self.id,
            "project_id": self.project_id,
            "owner": self.owner,
            "title": self.title,
            "status": self.status.value,
            "progress": self.progress,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "current": self.current,
            "completed": self.completed,
            "total": self.total,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "finished_at": self.finished_at,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return cls(**{**data, "status": TaskStatus(data["status"])})


def derived_id(key: str, *parts: str) -> str:
    """A stable id for what a request with an idempotency key creates, so a retry (even one
    another process runs) creates the same records, which are then kept once."""
    return uuid.uuid5(_DERIVED_IDS, "|".join((key, *parts))).hex


_DERIVED_IDS = uuid.UUID("6d7f5a1e-2c4b-4e7a-9f3d-8b1c0e2a4d6f")


@dataclass
class Notification:
    id: str
    user_id: str
    title: str
    body: str | None
    created_at: int
    data: dict[str, Any] = field(default_factory=dict)
    read: bool = False
    category: str = "general"
    critical: bool = False
    seen: bool = False
    archived: bool = False
    snoozed_until: int | None = None  # ms: back as unread then
    expires_at: int | None = None  # ms: gone then
    tags: list[str] = field(default_factory=list)
    severity: str = "info"  # info, warning, critical
    # At most two: the primary and the secondary. Each {id, label} and a `url` or an `event`
    # payload the client sends back (`notifications.action`).
    actions: list[dict[str, Any]] = field(default_factory=list)
    # Notifications of one group are one entry: how many, and the latest few.
    group_key: str | None = None
    group_count: int = 1
    group_items: list[dict[str, Any]] = field(default_factory=list)
    updated_at: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def merge(self, newer: Notification) -> None:
        """`newer` joins this entry of its group: its content shows, the count grows."""
        self.group_items = [_item(newer), *(self.group_items or [_item(self)])][:_GROUP_ITEMS]
        self.group_count += 1
        self.title, self.body, self.data = newer.title, newer.body, newer.data
        self.actions, self.tags, self.severity = newer.actions, newer.tags, newer.severity
        self.read = self.seen = False
        self.snoozed_until = None
        self.updated_at = newer.created_at


_GROUP_ITEMS = 3


def _item(n: Notification) -> dict[str, Any]:
    return {"id": n.id, "title": n.title, "created_at": n.created_at}


class ReceiptKind(StrEnum):
    """What happened to a notification on a device, in the order it usually happens."""

    DELIVERED = "delivered"  # a connection received it (the client acknowledged it)
    SEEN = "seen"  # a device displayed it
    READ = "read"
    ACTIONED = "actioned"  # one of its actions was chosen


@dataclass(frozen=True)
class Receipt:
    notification_id: str
    user_id: str
    kind: ReceiptKind
    device: str  # the connection (delivered) or device that reports it
    at: int  # ms
    action: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "device": self.device, "at": self.at, "action": self.action}


class JobState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # gave up after its attempts: listed, and can be replayed
    CANCELLED = "cancelled"


@dataclass
class Job:
    """Work that must happen once even if the process doing it dies: an escalation, a webhook
    delivery. Claimed with a lease; jobs of one `group` run one at a time, in order."""

    id: str
    kind: str
    group: str
    due_at: int
    payload: dict[str, Any]
    attempts: int = 0
    state: JobState = JobState.PENDING
    last_error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}


@dataclass(frozen=True)
class PushSubscription:
    """A browser's Web Push subscription (RFC 8030): where to POST, and the keys (base64url)
    its payloads are encrypted for (RFC 8291)."""

    endpoint: str
    user_id: str
    p256dh: str
    auth: str
    created_at: int


@dataclass(frozen=True)
class InboxFilter:
    """Which of a user's notifications: by state, category, tag, severity, group, age."""

    state: str = "all"  # all, active, unread, unseen, read, snoozed, archived
    category: str | None = None
    tag: str | None = None
    severity: str | None = None
    group: str | None = None
    created_before: int | None = None  # ms
    snoozed_until: int | None = None  # snoozed until exactly this (ms)


@dataclass
class InboxPage:
    notifications: list[Notification]
    # The next page starts after this (a position in the user's list, stable while new
    # notifications arrive); None on the last page.
    cursor: int | None
