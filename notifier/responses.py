"""What the service answers, as pydantic models: the OpenAPI document's response schemas, and
the types the JavaScript client's `.d.ts` is checked against.

The handlers build these answers from records (`Task.to_dict()` and so on); the contract test
(schemathesis) checks every answer against these schemas, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import SkipJsonSchema

from .errors import ErrorCode
from .records import TaskStatus


class Answer(BaseModel):
    # Extra fields would be fields the documents do not describe: refused in the schema.
    model_config = ConfigDict(extra="forbid")


class ErrorBody(Answer):
    code: ErrorCode
    message: str


class ErrorAnswer(Answer):
    error: ErrorBody


class TaskOut(Answer):
    id: str
    project_id: str
    owner: str | None
    title: str
    status: TaskStatus
    progress: float
    current: int | None
    completed: int | None
    total: int | None
    message: str | None
    result: Any
    error: str | None
    created_at: int
    updated_at: int
    finished_at: int | None
    # Grows with every change: a client may drop a snapshot older than one it has.
    version: int


class NotificationOut(Answer):
    id: str
    user_id: str
    title: str
    body: str | None
    data: dict[str, Any]
    created_at: int
    read: bool
    category: str
    critical: bool
    seen: bool
    archived: bool
    snoozed_until: int | None
    expires_at: int | None
    tags: list[str]
    severity: Literal["info", "warning", "critical"]
    actions: list[dict[str, Any]]
    group_key: str | None
    group_count: int
    group_items: list[dict[str, Any]]
    updated_at: int | None


class EnvelopeOut(Answer):
    """Every event: kept ones (in a room's history) carry `offset` and `epoch`."""

    id: str
    type: str
    room: str | None
    ts: int
    data: dict[str, Any]
    # Absent (never null) on events that are not kept, and `replayed` on live ones.
    offset: int | SkipJsonSchema[None] = None
    epoch: str | SkipJsonSchema[None] = None
    replayed: bool | SkipJsonSchema[None] = None


class TaskAnswer(Answer):
    task: TaskOut


class TasksAnswer(Answer):
    tasks: list[TaskOut]


class NotificationsAnswer(Answer):
    notifications: list[NotificationOut]


class CountsOut(Answer):
    unread: int
    unseen: int
    categories: dict[str, int]  # unread per category
    severities: dict[str, int]  # unread per severity


class NotificationsListAnswer(Answer):
    notifications: list[NotificationOut]
    next_cursor: str | None
    unread: int
    counts: CountsOut


class CountsAnswer(Answer):
    counts: CountsOut


class ChangeAnswer(Answer):
    changed: list[str]  # the first 1000
    count: int
    counts: CountsOut


class DeleteAnswer(Answer):
    deleted: list[str]
    count: int
    counts: CountsOut


class NotificationAnswer(Answer):
    notification: NotificationOut


class RecallAnswer(Answer):
    recalled: str
    user_id: str


class ActionAnswer(Answer):
    recorded: int
    action: dict[str, Any]


class MarkReadAnswer(Answer):
    marked: list[str]
    unchanged: list[str]
    unread: int


class ReceiptOut(Answer):
    kind: Literal["delivered", "seen", "read", "actioned"]
    device: str
    at: int
    action: str | None


class EscalationOut(Answer):
    id: str
    kind: str
    group: str
    due_at: int
    attempts: int
    state: Literal["pending", "done", "failed", "cancelled"]
    last_error: str | None


class ReceiptsAnswer(Answer):
    notification_id: str
    receipts: list[ReceiptOut]
    escalation: EscalationOut | None


class WebhookFailureOut(EscalationOut):
    payload: dict[str, Any]


class WebhookFailuresAnswer(Answer):
    failures: list[WebhookFailureOut]


class ReplayAnswer(Answer):
    replayed: str


class UnsubscribedAnswer(Answer):
    unsubscribed: str


class RecordedAnswer(Answer):
    recorded: int


class VapidKeyAnswer(Answer):
    public_key: str


class PushSubscriptionAnswer(Answer):
    endpoint: str
    user_id: str


class PushRemovedAnswer(Answer):
    removed: bool


class RefreshIntervalAnswer(Answer):
    refresh_interval: float


class PresentUser(Answer):
    user_id: str
    # 0 while the user is within the grace period after their last connection went.
    connections: int


class PresenceAnswer(Answer):
    room: str
    users: list[PresentUser]
    count: int
    connections: int


class DisconnectAnswer(Answer):
    user_id: str
    revoked_at: int
    revoked_until: int


class ReadyAnswer(Answer):
    ok: bool
    ready: bool
    draining: bool
    problems: dict[str, str]


class AliveAnswer(Answer):
    ok: bool


class StatusAnswer(BaseModel):
    """Operators' figures; open to new fields."""

    version: str
    uptime_seconds: float
    refresh_interval: float
    server_time: int
    cluster: dict[str, Any]
    connections: dict[str, int]
    sessions: dict[str, int]
    rooms: int
