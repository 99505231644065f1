"""Payloads every transport validates, in one place."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    field_validator,
    model_validator,
)

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]
# A token's subject as identity providers issue them (rooms.is_user_id): any text but control
# characters.
UserId = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
RoomName = Annotated[str, Field(min_length=1, max_length=300)]
EventType = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.:-]*$")]
Number = StrictInt | StrictFloat
JsonObject = dict[str, Any]

# Event types only the service itself may emit: publishing them by hand would let a worker
# fake task state or inbox counts that the service keeps authoritative.
RESERVED_TYPES = frozenset(
    {
        "session",
        "notification",
        "notifications.unread",
        "notifications.counts",
        "notifications.changed",
        "notifications.deleted",
        "notification.updated",
        "notification.recalled",
        "config.updated",
        "refresh",
        "connection.closing",
        "rooms.revoked",
    }
)
RESERVED_PREFIXES = ("task.", "auth.", "presence.")

# Every event type the service itself sends to end users (docs/protocol.md lists them all).
SERVICE_EVENTS = frozenset(
    {
        "session",
        "notification",
        "notifications.unread",
        "notifications.counts",
        "notifications.changed",
        "notifications.deleted",
        "notification.updated",
        "notification.recalled",
        "task.created",
        "task.progress",
        "task.completed",
        "task.failed",
        "task.cancelled",
        "refresh",
        "config.updated",
        "auth.expiring",
        "auth.expired",
        "auth.revoked",
        "rooms.revoked",
        "presence.joined",
        "presence.left",
        "connection.closing",
    }
)


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Position(Payload):
    """Where a client stands in a room's stream: the last offset it saw in that epoch."""

    epoch: Annotated[str, Field(min_length=1, max_length=64)]
    offset: Annotated[int, Field(ge=0)]


class SubscribeRequest(Payload):
    rooms: Annotated[list[RoomName], Field(min_length=1, max_length=100)]
    since: dict[RoomName, Position] = {}
    # Also receive presence.joined / presence.left for these rooms (project and task rooms).
    presence: bool = False


class UnsubscribeRequest(Payload):
    rooms: Annotated[list[RoomName], Field(min_length=1, max_length=100)]


class Idempotent(Payload):
    """A worker operation that a retry (after a lost ack) must not apply twice."""

    idempotency_key: Annotated[str | None, Field(min_length=1, max_length=128)] = None


class PublishRequest(Idempotent):
    room: RoomName
    type: EventType
    data: JsonObject = {}

    @field_validator("type")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value in RESERVED_TYPES or value.startswith(RESERVED_PREFIXES):
            raise ValueError(f"{value!r} is reserved for the service")
        return value


Channel = Literal["webhook", "push", "email"]
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]


class Escalate(Payload):
    """If no device of the user has seen the notification `after_seconds` after it was sent,
    it goes out on `channels` (once, and not if it is seen first)."""

    after_seconds: Annotated[float, Field(ge=1, le=7 * 86400)]
    channels: Annotated[list[Channel], Field(min_length=1, max_length=3)]

    @field_validator("channels")
    @classmethod
    def _once_each(cls, channels: list[str]) -> list[str]:
        if len(set(channels)) != len(channels):
            raise ValueError("each channel once")
        return channels


Tag = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:-]+$")]
Severity = Literal["info", "warning", "critical"]
HttpUrl = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^https?://")]


class Action(Payload):
    """A button on the notification: a link, or an event the client sends back
    (`notifications.action`), which the publisher is told of (webhook `notification.actioned`)."""

    id: Identifier
    label: Annotated[str, Field(min_length=1, max_length=40)]
    url: HttpUrl | None = None
    event: JsonObject | None = None

    @model_validator(mode="after")
    def _url_or_event(self) -> Action:
        if (self.url is None) == (self.event is None):
            raise ValueError("give either a url or an event")
        return self


def _distinct_actions(actions: list[Action]) -> list[Action]:
    if len({a.id for a in actions}) != len(actions):
        raise ValueError("action ids must differ")
    return actions


Actions = Annotated[list[Action], Field(max_length=2)]


class NotifyRequest(Idempotent):
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=1000)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    body: Annotated[str | None, Field(max_length=4000)] = None
    data: JsonObject = {}
    category: Category = "general"
    tags: Annotated[list[Tag], Field(max_length=10)] = []
    severity: Severity = "info"
    # The primary, then the secondary.
    actions: Actions = []
    # Notifications of one group are one entry of the inbox ("Alice and 4 others ...").
    group_key: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    # Gone from the inbox at this time (ms since the epoch).
    expires_at: Annotated[int | None, Field(gt=0)] = None
    # Escalates during the user's quiet hours too.
    critical: bool = False
    escalate: Escalate | None = None

    @field_validator("actions")
    @classmethod
    def _actions(cls, actions: list[Action]) -> list[Action]:
        return _distinct_actions(actions)


class NotificationUpdate(Payload):
    """A publisher's change of a sent notification: every device shows it."""

    title: Annotated[str | None, Field(min_length=1, max_length=200)] = None
    body: Annotated[str | None, Field(max_length=4000)] = None
    data: JsonObject | None = None
    actions: Actions | None = None

    @model_validator(mode="after")
    def _something(self) -> NotificationUpdate:
        if not self.model_fields_set - {"id"}:
            raise ValueError("give title, body, data or actions")
        if self.actions is not None:
            _distinct_actions(self.actions)
        return self


class NotificationRef(Payload):
    id: Identifier


class NotificationEdit(NotificationUpdate):
    """`notification.update` on `/workers`: the id, and what changes."""

    id: Identifier


class InboxQuery(Payload):
    """Which of a user's notifications (listing, and the changes below)."""

    state: Literal["all", "active", "unread", "unseen", "read", "snoozed", "archived"] = "all"
    category: Category | None = None
    tag: Tag | None = None
    severity: Severity | None = None
    group: Annotated[str | None, Field(min_length=1, max_length=128)] = None
    created_before: Annotated[int | None, Field(gt=0)] = None  # ms


class InboxSet(Payload):
    read: bool | None = None
    seen: bool | None = None
    archived: bool | None = None
    # Back as unread at this time (ms); null: not snoozed.
    snoozed_until: Annotated[int | None, Field(gt=0)] = None

    @model_validator(mode="after")
    def _something(self) -> InboxSet:
        if not self.model_fields_set:
            raise ValueError("give read, seen, archived or snoozed_until")
        return self


class InboxChange(Payload):
    """One change of many notifications: by ids, or by a filter (mark all read in a category,
    archive all read, ...)."""

    ids: Annotated[list[Identifier] | None, Field(min_length=1, max_length=1000)] = None
    filter: InboxQuery | None = None
    set: InboxSet

    @model_validator(mode="after")
    def _ids_or_filter(self) -> InboxChange:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or a filter")
        return self


class InboxDelete(Payload):
    """Delete by ids, or by a filter (by default: every archived one)."""

    ids: Annotated[list[Identifier] | None, Field(min_length=1, max_length=1000)] = None
    filter: InboxQuery | None = None

    @model_validator(mode="after")
    def _ids_or_filter(self) -> InboxDelete:
        if self.ids is not None and self.filter is not None:
            raise ValueError("give either ids or a filter")
        return self


class ActionChosen(Payload):
    id: Identifier
    action: Identifier


class ActionByRest(Payload):
    action: Identifier
    device: Annotated[str, Field(min_length=1, max_length=128)] = "rest"


class ReceiptReport(Payload):
    """`notifications.delivered` / `notifications.seen`: the user's own notifications."""

    ids: Annotated[list[Identifier], Field(min_length=1, max_length=1000)]


class ActionReport(Payload):
    id: Identifier
    action: Annotated[str, Field(min_length=1, max_length=64)]


_CLOCK = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class QuietHours(Payload):
    start: Annotated[str, Field(pattern=_CLOCK)]  # "22:00", in `timezone`
    end: Annotated[str, Field(pattern=_CLOCK)]
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, zone: str) -> str:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            message = f"unknown time zone {zone[:64]!r} (an IANA name, such as Europe/Berlin)"
            raise ValueError(message) from None
        return zone


class PushKeys(Payload):
    p256dh: Annotated[str, Field(min_length=1, max_length=200)]
    auth: Annotated[str, Field(min_length=1, max_length=100)]


class PushSubscriptionRequest(Payload):
    """What a browser's `PushSubscription.toJSON()` gives (`expirationTime` is ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    endpoint: Annotated[str, Field(min_length=1, max_length=2000)]
    keys: PushKeys


class PushUnsubscribeRequest(Payload):
    endpoint: Annotated[str, Field(min_length=1, max_length=2000)]


class ReceiptByRest(Payload):
    """A receipt a service worker (or any client without a socket) reports."""

    kind: Literal["delivered", "seen", "actioned"]
    action: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    device: Annotated[str, Field(min_length=1, max_length=128)] = "push"


class NoPayload(Payload):
    """An event that takes nothing."""


class Preferences(Payload):
    # category -> the channels it escalates to (an empty list: none); other categories
    # escalate as their publisher asks.
    channels: Annotated[dict[Category, list[Channel]], Field(max_length=100)] = {}
    quiet_hours: QuietHours | None = None
    # Where e-mail digests go (none without it); unsubscribing clears it.
    email: Annotated[str | None, Field(max_length=254, pattern=r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")] = None


class TaskCreate(Idempotent):
    id: Identifier | None = None
    project_id: Identifier
    owner: UserId | None = None
    title: Annotated[str, Field(max_length=200)] = ""
    total: Annotated[int | None, Field(ge=0)] = None
    message: Annotated[str | None, Field(max_length=1000)] = None


class TaskRef(Payload):
    task_id: Identifier


class TaskProgress(TaskRef):
    progress: Annotated[Number, Field(ge=0, le=100)]
    current: Annotated[int | None, Field(ge=0)] = None
    completed: Annotated[int | None, Field(ge=0)] = None
    total: Annotated[int | None, Field(ge=0)] = None
    message: Annotated[str | None, Field(max_length=1000)] = None


class TaskComplete(TaskRef, Idempotent):
    result: Any = None
    message: Annotated[str | None, Field(max_length=1000)] = None


class TaskFail(TaskRef, Idempotent):
    error: Annotated[str, Field(min_length=1, max_length=2000)]


class TaskCancel(TaskRef, Idempotent):
    reason: Annotated[str | None, Field(max_length=1000)] = None


class TaskUpdate(Idempotent):
    """REST `PATCH /api/v1/tasks/{id}`: one of progress, complete, fail or cancel."""

    status: Annotated[str, Field(pattern=r"^(running|completed|failed|cancelled)$")] = "running"
    progress: Annotated[Number | None, Field(ge=0, le=100)] = None
    current: Annotated[int | None, Field(ge=0)] = None
    completed: Annotated[int | None, Field(ge=0)] = None
    total: Annotated[int | None, Field(ge=0)] = None
    message: Annotated[str | None, Field(max_length=1000)] = None
    result: Any = None
    error: Annotated[str | None, Field(min_length=1, max_length=2000)] = None

    @model_validator(mode="after")
    def _fields_fit_status(self) -> TaskUpdate:
        if self.status == "running" and self.progress is None:
            raise ValueError("progress is required while running")
        if self.status == "failed" and not self.error:
            raise ValueError("error is required when failing a task")
        return self


class NotificationsList(InboxQuery):
    limit: Annotated[int, Field(ge=1, le=100)] = 20
    # The `next_cursor` of the page before: stable while new notifications arrive.
    cursor: Annotated[str | None, Field(pattern=r"^[0-9]{1,18}$")] = None
    before: Identifier | None = None  # the last id of the page before (the older way)
    unread_only: bool = False


class MarkRead(Payload):
    ids: Annotated[list[Identifier] | None, Field(max_length=1000)] = None
    all: bool = False

    @model_validator(mode="after")
    def _ids_or_all(self) -> MarkRead:
        if self.all == bool(self.ids):
            raise ValueError("give either a non-empty 'ids' or 'all': true")
        return self


class RefreshIntervalRequest(Payload):
    seconds: Annotated[Number, Field(ge=0, le=7 * 86400)]


class AuthRefresh(Payload):
    """A new token for the same connection (`auth.refresh`), before the old one expires."""

    token: Annotated[str, Field(min_length=1, max_length=65536)]


class PresenceRequest(Payload):
    room: RoomName


class PingRequest(BaseModel):
    """Anything the client sends is echoed back so it can match replies to requests."""

    model_config = ConfigDict(extra="allow")
