"""The records the service keeps: events (envelopes), tasks and notifications."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

Envelope = dict[str, Any]
"""`{id, type, room, ts, data, offset, epoch}`; a plain dict because it is built on the hot path."""


def new_id() -> str:
    return uuid.uuid4().hex


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

    def to_dict(self) -> dict[str, Any]:
        # By hand rather than dataclasses.asdict, which deep-copies: this runs for every
        # emitted progress event.
        return {
            "id": self.id, "project_id": self.project_id, "owner": self.owner,
            "title": self.title, "status": self.status.value, "progress": self.progress,
            "created_at": self.created_at, "updated_at": self.updated_at,
            "current": self.current, "completed": self.completed, "total": self.total,
            "message": self.message, "result": self.result, "error": self.error,
            "finished_at": self.finished_at,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return cls(**{**data, "status": TaskStatus(data["status"])})


@dataclass
class Notification:
    id: str
    user_id: str
    title: str
    body: str | None
    created_at: int
    data: dict[str, Any] = field(default_factory=dict)
    read: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
