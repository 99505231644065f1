"""Storage behind one small interface; the backend is chosen by URL scheme."""

from __future__ import annotations

from typing import Any, Protocol

from ..records import Envelope, Notification, StreamPosition, Task, TaskStatus


class Store(Protocol):
    """What the service needs kept: room histories, tasks and per-user inboxes."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def commit(self) -> None:
        """Make every write so far durable now (a store may group a loop iteration's writes)."""

    # Room histories: every event sent to a room, numbered 1, 2, 3 ... within the room.
    async def append_event(
        self, room: str, event_type: str, data: dict[str, Any], ts: int, event_id: str
    ) -> Envelope:
        """Store the event with the room's next offset and return its envelope."""
        ...

    async def events_after(self, room: str, offset: int, limit: int) -> list[Envelope]:
        """Retained events of `room` with an offset above `offset`, oldest first."""
        ...

    async def room_bounds(self, room: str) -> tuple[StreamPosition, int]:
        """The room's head position, and the lowest offset still retained (head + 1 if none)."""
        ...

    async def trim_events(self, older_than_ts: int, max_per_room: int) -> int: ...

    # Tasks
    async def save_task(self, task: Task) -> None: ...

    async def get_task(self, task_id: str) -> Task | None: ...

    async def list_tasks(
        self, statuses: frozenset[TaskStatus] | None, project_ids: frozenset[str] | None
    ) -> list[Task]: ...

    async def delete_tasks_finished_before(self, ts: int) -> int: ...

    # Inboxes
    async def add_notifications(self, notifications: list[Notification]) -> None: ...

    async def list_notifications(
        self, user_id: str, limit: int, before: str | None, unread_only: bool
    ) -> list[Notification]: ...

    async def mark_read(self, user_id: str, ids: list[str] | None) -> list[str]:
        """Mark the user's own notifications read (all when ids is None); return the ids changed."""
        ...

    async def unread_count(self, user_id: str) -> int: ...

    async def trim_notifications(self, older_than_ts: int, max_per_user: int) -> int: ...

    # Idempotency: a publish retried after a lost ack is applied once.
    async def remember_idempotency_key(self, key: str, result: dict[str, Any], ts: int) -> None: ...

    async def recall_idempotency_key(self, key: str) -> dict[str, Any] | None: ...


def open_store(url: str, *, max_events_per_room: int = 1000) -> Store:
    """`memory://` (tests; history lost on restart) or `sqlite:///path/to/file.db`."""
    from .sqlite import SqliteStore

    if url == "memory://":
        return SqliteStore(":memory:", max_events_per_room=max_events_per_room)
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return SqliteStore(path, max_events_per_room=max_events_per_room)
    raise ValueError(f"unsupported store URL {url!r}: use memory:// or sqlite:///path")
