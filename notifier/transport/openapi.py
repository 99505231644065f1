"""The REST API's OpenAPI 3.1 document, built from the same pydantic models the handlers
validate with and the answers they give (`notifier.responses`), served at
`/api/v1/openapi.json`. A test checks that every route is described here and schemathesis
checks the live service against it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from .. import __version__
from ..models import (
    ActionByRest,
    InboxChange,
    InboxDelete,
    MarkRead,
    NotificationsList,
    NotificationUpdate,
    NotifyRequest,
    Preferences,
    PresenceRequest,
    PublishRequest,
    PushSubscriptionRequest,
    PushUnsubscribeRequest,
    ReceiptByRest,
    RefreshIntervalRequest,
    TaskCreate,
    TaskUpdate,
)
from ..records import TaskStatus
from ..responses import (
    ActionAnswer,
    AliveAnswer,
    ChangeAnswer,
    CountsAnswer,
    DeleteAnswer,
    DisconnectAnswer,
    EnvelopeOut,
    ErrorAnswer,
    MarkReadAnswer,
    NotificationAnswer,
    NotificationsAnswer,
    NotificationsListAnswer,
    PresenceAnswer,
    PushRemovedAnswer,
    PushSubscriptionAnswer,
    ReadyAnswer,
    RecallAnswer,
    ReceiptsAnswer,
    RecordedAnswer,
    RefreshIntervalAnswer,
    ReplayAnswer,
    StatusAnswer,
    TaskAnswer,
    TasksAnswer,
    UnsubscribedAnswer,
    VapidKeyAnswer,
    WebhookFailuresAnswer,
)

Access = Literal["anyone", "user", "publisher", "admin"]
_IDENTIFIER = {"type": "string", "minLength": 1, "maxLength": 128}
_USER_ID = {"type": "string", "minLength": 1, "maxLength": 255}


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    access: Access
    answers: dict[int, type[BaseModel]]
    body: type[BaseModel] | None = None
    query: dict[str, dict[str, Any]] = field(default_factory=dict)


def _query_of(model: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """A flat model's fields as query parameters (their JSON Schemas, inlined)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    return {
        name: {"schema": prop, "required": name in required} for name, prop in schema["properties"].items()
    }


OPERATIONS = [
    Operation("get", "/healthz", "Liveness: the process answers", "anyone", {200: AliveAnswer}),
    Operation(
        "get",
        "/readyz",
        "Readiness: 503 while the store or broker fails or the service drains",
        "anyone",
        {200: ReadyAnswer, 503: ReadyAnswer},
    ),
    Operation(
        "get",
        "/api/v1/status",
        "The process and the cluster: connections, sessions, rooms, nodes",
        "admin",
        {200: StatusAnswer},
    ),
    Operation(
        "post",
        "/api/v1/publish",
        "Send an event to a room",
        "publisher",
        {201: EnvelopeOut},
        body=PublishRequest,
    ),
    Operation(
        "post",
        "/api/v1/notifications",
        "Store a notification for each user, then push it",
        "publisher",
        {201: NotificationsAnswer},
        body=NotifyRequest,
    ),
    Operation(
        "get",
        "/api/v1/notifications",
        "A user's inbox, newest first (admins may name another user)",
        "user",
        {200: NotificationsListAnswer},
        query={**_query_of(NotificationsList), "user_id": {"schema": _IDENTIFIER, "required": False}},
    ),
    Operation(
        "get",
        "/api/v1/notifications/counts",
        "The caller's counts: unread, unseen, unread per category and per severity",
        "user",
        {200: CountsAnswer},
        query={"user_id": {"schema": _USER_ID, "required": False}},
    ),
    Operation(
        "post",
        "/api/v1/notifications/changes",
        "Read, seen, archived or snoozed for the caller's notifications, by ids or by filter",
        "user",
        {200: ChangeAnswer},
        body=InboxChange,
    ),
    Operation(
        "post",
        "/api/v1/notifications/delete",
        "Delete the caller's notifications by ids or filter (by default every archived one)",
        "user",
        {200: DeleteAnswer},
        body=InboxDelete,
    ),
    Operation(
        "post",
        "/api/v1/notifications/{notification_id}/actions",
        "Choose one of a notification's actions (recorded; the publisher is told by webhook)",
        "user",
        {200: ActionAnswer},
        body=ActionByRest,
        query={"notification_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "patch",
        "/api/v1/notifications/{notification_id}",
        "Change a sent notification's title, body, data or actions (every device shows it)",
        "publisher",
        {200: NotificationAnswer},
        body=NotificationUpdate,
        query={"notification_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "delete",
        "/api/v1/notifications/{notification_id}",
        "Recall a notification: it leaves every device and the inbox",
        "publisher",
        {200: RecallAnswer},
        query={"notification_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "post",
        "/api/v1/notifications/read",
        "Mark the caller's notifications read",
        "user",
        {200: MarkReadAnswer},
        body=MarkRead,
    ),
    Operation(
        "get",
        "/api/v1/notifications/{notification_id}/receipts",
        "A notification's receipts (delivered, seen, read, actioned, per device) and escalation",
        "publisher",
        {200: ReceiptsAnswer},
        query={"notification_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "post",
        "/api/v1/notifications/{notification_id}/receipts",
        "Report a receipt for one's own notification (a service worker that showed a push)",
        "user",
        {200: RecordedAnswer},
        body=ReceiptByRest,
        query={"notification_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "get",
        "/api/v1/push/vapid-public-key",
        "The VAPID public key browsers subscribe with (404 while Web Push is off)",
        "anyone",
        {200: VapidKeyAnswer},
    ),
    Operation(
        "post",
        "/api/v1/push/subscriptions",
        "Register the caller's browser for Web Push (its PushSubscription.toJSON())",
        "user",
        {201: PushSubscriptionAnswer},
        body=PushSubscriptionRequest,
    ),
    Operation(
        "delete",
        "/api/v1/push/subscriptions",
        "Forget one of the caller's push subscriptions",
        "user",
        {200: PushRemovedAnswer},
        body=PushUnsubscribeRequest,
    ),
    *(
        Operation(
            method,
            "/api/v1/email/unsubscribe",
            "Stop e-mail digests for the user of a signed link (404 while e-mail is off)",
            "anyone",
            {200: UnsubscribedAnswer},
            query={
                "user": {"schema": _USER_ID, "required": True},
                "sig": {"schema": {"type": "string"}, "required": True},
            },
        )
        for method in ("get", "post")
    ),
    Operation(
        "get",
        "/api/v1/preferences",
        "The caller's delivery preferences (admins may name another user)",
        "user",
        {200: Preferences},
        query={"user_id": {"schema": _USER_ID, "required": False}},
    ),
    Operation(
        "put",
        "/api/v1/preferences",
        "Set the caller's delivery preferences: channels per category, quiet hours",
        "user",
        {200: Preferences},
        body=Preferences,
        query={"user_id": {"schema": _USER_ID, "required": False}},
    ),
    Operation(
        "get",
        "/api/v1/webhooks/failures",
        "Webhook deliveries that failed their last attempt (404 while webhooks are off)",
        "admin",
        {200: WebhookFailuresAnswer},
    ),
    Operation(
        "post",
        "/api/v1/webhooks/failures/{job_id}/replay",
        "Send a failed webhook delivery again, from its first attempt",
        "admin",
        {200: ReplayAnswer},
        query={"job_id": {"in": "path", "schema": {"type": "string", "minLength": 1}, "required": True}},
    ),
    Operation("post", "/api/v1/tasks", "Create a task", "publisher", {201: TaskAnswer}, body=TaskCreate),
    Operation(
        "get",
        "/api/v1/tasks",
        "Tasks the caller may see",
        "user",
        {200: TasksAnswer},
        query={
            "status": {"schema": {"enum": [s.value for s in TaskStatus]}, "required": False},
            "project": {"schema": _IDENTIFIER, "required": False},
        },
    ),
    Operation(
        "get",
        "/api/v1/tasks/{task_id}",
        "One task",
        "user",
        {200: TaskAnswer},
        query={"task_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "patch",
        "/api/v1/tasks/{task_id}",
        "Report progress, complete, fail or cancel",
        "publisher",
        {200: TaskAnswer},
        body=TaskUpdate,
        query={"task_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "get",
        "/api/v1/presence",
        "Users present in a project or task room",
        "publisher",
        {200: PresenceAnswer},
        query=_query_of(PresenceRequest),
    ),
    Operation(
        "post",
        "/api/v1/users/{user_id}/disconnect",
        "Close the user's connections on "
        "every node; their older tokens are refused for NOTIFIER_REVOCATION_SECONDS",
        "admin",
        {200: DisconnectAnswer},
        query={"user_id": {"in": "path", "schema": _IDENTIFIER, "required": True}},
    ),
    Operation(
        "put",
        "/api/v1/config/refresh-interval",
        "Change the refresh interval everywhere",
        "admin",
        {200: RefreshIntervalAnswer},
        body=RefreshIntervalRequest,
    ),
]

_ACCESS_NOTE = {
    "anyone": "No token.",
    "user": "Any valid token.",
    "publisher": "A publisher or admin token.",
    "admin": "An admin token.",
}


def _operation_id(op: Operation) -> str:
    words = re.findall(r"[a-z0-9]+", op.path.lower())
    return "_".join([op.method, *words])


def document() -> dict[str, Any]:
    Mode = Literal["validation", "serialization"]
    bodies: list[tuple[type[BaseModel], Mode]] = [
        (op.body, "validation") for op in OPERATIONS if op.body is not None
    ]
    answers: list[tuple[type[BaseModel], Mode]] = [
        (model, "serialization") for op in OPERATIONS for model in op.answers.values()
    ]
    error: tuple[type[BaseModel], Mode] = (ErrorAnswer, "serialization")
    models = list(dict.fromkeys([*bodies, *answers, error]))
    refs, schema = models_json_schema(models, ref_template="#/components/schemas/{model}")
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        entry: dict[str, Any] = {
            "summary": op.summary,
            "description": _ACCESS_NOTE[op.access],
            "operationId": _operation_id(op),
            "responses": {
                str(status): {
                    "description": model.__doc__.splitlines()[0] if model.__doc__ else model.__name__,
                    "content": {"application/json": {"schema": refs[(model, "serialization")]}},
                }
                for status, model in op.answers.items()
            },
        }
        entry["responses"]["default"] = {
            "description": "An error: {error: {code, message}} (see docs/protocol.md for codes)",
            "content": {"application/json": {"schema": refs[(ErrorAnswer, "serialization")]}},
        }
        if op.access != "anyone":
            entry["security"] = [{"bearer": []}]
        parameters = [
            {
                "name": name,
                "in": spec.get("in", "query"),
                "required": spec["required"],
                "schema": spec["schema"],
            }
            for name, spec in op.query.items()
        ]
        if op.body is not None and "idempotency_key" in op.body.model_fields:
            parameters.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "A repeat with the same key gets the first answer (and "
                    "`Idempotent-Replayed: true`); another request under it, 422 IDEMPOTENCY_CONFLICT. "
                    "The body's `idempotency_key` does the same.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                }
            )
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
            }
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notifier",
            "version": __version__,
            "description": "REST API of notifier. The Socket.IO protocol (events, acks, "
            "recovery) is described in docs/protocol.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
