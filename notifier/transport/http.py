"""REST routes: thin handlers that authenticate, validate and call the service."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..auth import Claims
from ..errors import HTTP_STATUS, ErrorCode, NotifierError
from ..idempotency import fingerprint_of, scoped
from ..keys import ENGINE, GATEWAY, HEALTH, NOTIFIER, REST_LIMIT, SIBLINGS, VERIFIER
from ..logs import get_logger
from ..models import (
    ActionByRest,
    ActionChosen,
    InboxChange,
    InboxDelete,
    MarkRead,
    NotificationRef,
    NotificationsList,
    NotificationUpdate,
    NotifyRequest,
    Preferences,
    PresenceRequest,
    PublishRequest,
    PushSubscriptionRequest,
    PushUnsubscribeRequest,
    ReceiptByRest,
    ReceiptReport,
    RefreshIntervalRequest,
    TaskCreate,
    TaskProgress,
    TaskUpdate,
)
from ..records import ReceiptKind, Task, TaskStatus
from ..service import Notifier
from ..webhooks import Webhooks
from ..webpush import WebPush
from . import openapi
from .acks import validation_message

log = get_logger("notifier.http")
_OPENAPI = orjson.dumps(openapi.document())
M = TypeVar("M", bound=BaseModel)

routes = web.RouteTableDef()
# Liveness and readiness: on the public port, and on the internal one when it is set.
health_routes = web.RouteTableDef()

# aiohttp's own errors (unknown route, wrong method, ...) in our codes.
_CODE_FOR_HTTP_STATUS = {
    400: ErrorCode.INVALID_PAYLOAD,
    401: ErrorCode.AUTH_REQUIRED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    429: ErrorCode.RATE_LIMITED,
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error_response(code: ErrorCode, message: str, status: int | None = None) -> web.Response:
    body = {"error": {"code": code.value, "message": message}}
    return json_response(body, status or HTTP_STATUS[code])


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The one place an exception becomes an HTTP error, always `{error: {code, message}}`."""
    try:
        return await handler(request)
    except NotifierError as exc:
        response = _error_response(exc.code, exc.message)
        if exc.code is ErrorCode.RATE_LIMITED:
            response.headers["Retry-After"] = "1"
        return response
    except web.HTTPRequestEntityTooLarge:
        return _error_response(ErrorCode.PAYLOAD_TOO_LARGE, "request body is too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODE_FOR_HTTP_STATUS.get(exc.status, ErrorCode.INVALID_PAYLOAD)
        return _error_response(code, exc.reason, exc.status)
    except Exception:
        log.exception("http_handler_crashed", path=request.path)
        return _error_response(ErrorCode.INTERNAL, "the server failed to handle this request")


def _claims(request: web.Request) -> Claims:
    """The token's claims: valid, not revoked, and within its rate limit."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header.lower().startswith("bearer ") else None
    claims = request.app[VERIFIER].verify(token)
    request.app[NOTIFIER].revocations.check(claims)
    assert token is not None
    request.app[REST_LIMIT].charge(token, claims)
    return claims


def _publisher_claims(request: web.Request) -> Claims:
    claims = _claims(request)
    if not claims.can_publish:
        raise NotifierError(ErrorCode.FORBIDDEN, "this endpoint needs a publisher or admin token")
    return claims


async def _body(request: web.Request, model: type[M]) -> M:
    try:
        payload = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise NotifierError(ErrorCode.INVALID_PAYLOAD, f"body is not JSON: {exc}") from exc
    return _validate(model, payload)


def _validate(model: type[M], payload: Any) -> M:
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise NotifierError(ErrorCode.INVALID_PAYLOAD, validation_message(exc)) from exc


@health_routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"ok": True})


@health_routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: 503 while the store or broker fails, and from the start of draining."""
    report = request.app[HEALTH].report()
    return json_response({"ok": report["ready"], **report}, 200 if report["ready"] else 503)


@routes.get("/api/v1/openapi.json")
async def openapi_document(request: web.Request) -> web.Response:
    """This API described in OpenAPI 3.1 (built once, from the models)."""
    return web.Response(body=_OPENAPI, content_type="application/json")


@routes.get("/api/v1/status")
async def status(request: web.Request) -> web.Response:
    if not _claims(request).is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "the status is for admin tokens")
    gateway = request.app[GATEWAY]
    answer = {
        **request.app[NOTIFIER].status(),
        "connections": gateway.connection_counts(),
        "sessions": request.app[ENGINE].counts(),
        "rooms": gateway.room_count(),
    }
    siblings = request.app.get(SIBLINGS)
    if siblings is not None:
        # Under `serve --workers`: which worker answered, and every worker's summary.
        own = worker_summary(request.app)
        others = await siblings.statuses()
        answer["worker"] = own["index"]
        answer["workers"] = sorted([own, *others.values()], key=lambda summary: int(summary["index"]))
    return json_response(answer)


def worker_summary(app: web.Application) -> dict[str, Any]:
    """One worker's figures for `/api/v1/status` (`serve --workers`)."""
    gateway = app[GATEWAY]
    return {
        "index": app[SIBLINGS].role.index,
        "pid": os.getpid(),
        "connections": gateway.connection_counts(),
        "sessions": app[ENGINE].counts(),
        "rooms": gateway.room_count(),
    }


# Idempotency (the IETF draft's header, or the body's `idempotency_key`)

Answer = tuple[int, Any]


def _idempotency_key(request: web.Request, body: BaseModel) -> str | None:
    in_body = getattr(body, "idempotency_key", None)
    header = request.headers.get("Idempotency-Key")
    if header is None:
        return in_body
    header = header.strip().strip('"')  # the draft writes it as a quoted string
    if not 1 <= len(header) <= 128:
        raise NotifierError(ErrorCode.INVALID_PAYLOAD, "Idempotency-Key: 1 to 128 characters")
    if in_body is not None and in_body != header:
        raise NotifierError(
            ErrorCode.INVALID_PAYLOAD, "the Idempotency-Key header and the body's idempotency_key differ"
        )
    return header


async def _once(
    request: web.Request,
    claims: Claims,
    operation: str,
    body: BaseModel,
    run: Callable[[str | None], Awaitable[Answer]],
) -> web.Response:
    """Answer `run(key)` once per idempotency key: a repeat gets the first answer (status and
    body) with `Idempotent-Replayed: true`; another request under the key, 422
    IDEMPOTENCY_CONFLICT."""
    key = _idempotency_key(request, body)
    if key is None:
        status, answer = await run(None)
        return json_response(answer, status)
    key = scoped(claims.sub, key)

    async def action() -> dict[str, Any]:
        status, answer = await run(key)
        return {"status": status, "body": answer}

    payload = body.model_dump(mode="json", exclude={"idempotency_key"})
    stored = await request.app[NOTIFIER].once(key, action, fingerprint_of(f"rest:{operation}", payload))
    response = json_response(stored["body"], int(stored["status"]))
    if stored.get("duplicate"):
        response.headers["Idempotent-Replayed"] = "true"
    return response


@routes.post("/api/v1/publish")
async def publish(request: web.Request) -> web.Response:
    claims = _publisher_claims(request)
    body = await _body(request, PublishRequest)

    async def run(key: str | None) -> Answer:
        return 201, await request.app[NOTIFIER].publish(body, key)

    return await _once(request, claims, "publish", body, run)


@routes.post("/api/v1/notifications")
async def notify(request: web.Request) -> web.Response:
    claims = _publisher_claims(request)
    body = await _body(request, NotifyRequest)

    async def run(key: str | None) -> Answer:
        notifications = await request.app[NOTIFIER].notify(body, key)
        return 201, {"notifications": [n.to_dict() for n in notifications]}

    return await _once(request, claims, "notify", body, run)


def _inbox_owner(claims: Claims, query: dict[str, str]) -> str:
    user_id = query.pop("user_id", claims.sub)
    if user_id != claims.sub and not claims.is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may read another user's inbox")
    return user_id


@routes.get("/api/v1/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    claims = _claims(request)
    query = dict(request.query)
    user_id = _inbox_owner(claims, query)
    listing = _validate(NotificationsList, query)
    notifier = request.app[NOTIFIER]
    page = await notifier.inbox_page(user_id, listing)
    counts = await notifier.inbox_counts(user_id)
    return json_response(
        {
            "notifications": [n.to_dict() for n in page.notifications],
            "next_cursor": None if page.cursor is None else str(page.cursor),
            "unread": counts["unread"],
            "counts": counts,
        }
    )


@routes.get("/api/v1/notifications/counts")
async def notification_counts(request: web.Request) -> web.Response:
    claims = _claims(request)
    user_id = _inbox_owner(claims, dict(request.query))
    return json_response({"counts": await request.app[NOTIFIER].inbox_counts(user_id)})


@routes.post("/api/v1/notifications/changes")
async def change_notifications(request: web.Request) -> web.Response:
    """Read, seen, archived or snoozed, by ids or by filter: one change, one event per device."""
    claims = _claims(request)
    body = await _body(request, InboxChange)

    async def run(key: str | None) -> Answer:
        return 200, await request.app[NOTIFIER].change_inbox(claims.sub, body, "rest")

    return await _once(request, claims, "notifications.change", body, run)


@routes.post("/api/v1/notifications/delete")
async def delete_notifications(request: web.Request) -> web.Response:
    claims = _claims(request)
    body = await _body(request, InboxDelete)

    async def run(key: str | None) -> Answer:
        return 200, await request.app[NOTIFIER].delete_from_inbox(claims.sub, body)

    return await _once(request, claims, "notifications.delete", body, run)


@routes.post("/api/v1/notifications/{notification_id}/actions")
async def choose_action(request: web.Request) -> web.Response:
    claims = _claims(request)
    body = await _body(request, ActionByRest)
    chosen = ActionChosen(id=_notification_id(request), action=body.action)
    return json_response(await request.app[NOTIFIER].choose_action(claims.sub, chosen, body.device))


def _notification_id(request: web.Request) -> str:
    return _validate(NotificationRef, {"id": request.match_info["notification_id"]}).id


@routes.patch("/api/v1/notifications/{notification_id}")
async def update_notification(request: web.Request) -> web.Response:
    """A publisher changes a sent notification: every device shows the change."""
    claims = _publisher_claims(request)
    notification_id = _notification_id(request)
    body = await _body(request, NotificationUpdate)

    async def run(key: str | None) -> Answer:
        updated = await request.app[NOTIFIER].update_notification(notification_id, body)
        return 200, {"notification": updated.to_dict()}

    return await _once(request, claims, f"notification.update:{notification_id}", body, run)


@routes.delete("/api/v1/notifications/{notification_id}")
async def recall_notification(request: web.Request) -> web.Response:
    """A publisher takes a notification back: it leaves every device and the inbox."""
    _publisher_claims(request)
    return json_response(await request.app[NOTIFIER].recall_notification(_notification_id(request)))


@routes.post("/api/v1/notifications/read")
async def mark_read(request: web.Request) -> web.Response:
    claims = _claims(request)
    result = await request.app[NOTIFIER].mark_read(claims.sub, await _body(request, MarkRead))
    return json_response(result)


@routes.get("/api/v1/notifications/{notification_id}/receipts")
async def notification_receipts(request: web.Request) -> web.Response:
    """Who got a notification, on which device, and where its escalation stands."""
    _publisher_claims(request)
    notification_id = _validate(ReceiptReport, {"ids": [request.match_info["notification_id"]]}).ids[0]
    return json_response(await request.app[NOTIFIER].receipts_of(notification_id))


@routes.post("/api/v1/notifications/{notification_id}/receipts")
async def report_receipt(request: web.Request) -> web.Response:
    """A receipt from a client without a socket (a service worker showing a push)."""
    claims = _claims(request)
    notification_id = _validate(ReceiptReport, {"ids": [request.match_info["notification_id"]]}).ids[0]
    body = await _body(request, ReceiptByRest)
    kind = ReceiptKind(body.kind)
    if kind is ReceiptKind.ACTIONED and body.action is None:
        raise NotifierError(ErrorCode.INVALID_PAYLOAD, "action: required for an actioned receipt")
    notifier = request.app[NOTIFIER]
    recorded = await notifier.record_receipts(claims.sub, kind, [notification_id], body.device, body.action)
    return json_response({"recorded": recorded})


def _push(request: web.Request) -> WebPush:
    push = request.app[NOTIFIER].push
    if push is None:
        raise NotifierError(ErrorCode.NOT_FOUND, "Web Push is off (NOTIFIER_VAPID_PRIVATE_KEY is not set)")
    return push


@routes.get("/api/v1/push/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    """The applicationServerKey for `pushManager.subscribe` (no token needed)."""
    return json_response({"public_key": _push(request).public_key})


@routes.post("/api/v1/push/subscriptions")
async def add_push_subscription(request: web.Request) -> web.Response:
    claims = _claims(request)
    push = _push(request)
    body = await _body(request, PushSubscriptionRequest)
    subscription = await push.subscribe(claims.sub, body.endpoint, body.keys.p256dh, body.keys.auth)
    return json_response({"endpoint": subscription.endpoint, "user_id": subscription.user_id}, 201)


@routes.delete("/api/v1/push/subscriptions")
async def remove_push_subscription(request: web.Request) -> web.Response:
    claims = _claims(request)
    push = _push(request)
    body = await _body(request, PushUnsubscribeRequest)
    return json_response({"removed": await push.unsubscribe(claims.sub, body.endpoint)})


@routes.get("/api/v1/email/unsubscribe")
@routes.post("/api/v1/email/unsubscribe")
async def email_unsubscribe(request: web.Request) -> web.Response:
    """The link in every digest (GET from a mail client, POST for one-click, RFC 8058): no
    token, the link's signature says whose it is."""
    email = request.app[NOTIFIER].email
    if email is None:
        raise NotifierError(ErrorCode.NOT_FOUND, "e-mail is off (NOTIFIER_SMTP_URL is not set)")
    user_id, signature = request.query.get("user", ""), request.query.get("sig", "")
    if not 0 < len(user_id) <= 255 or not await email.unsubscribe(user_id, signature):
        raise NotifierError(ErrorCode.FORBIDDEN, "this unsubscribe link is not valid")
    return json_response({"unsubscribed": user_id})


def _preferences_owner(request: web.Request) -> str:
    claims = _claims(request)
    user_id = request.query.get("user_id", claims.sub)
    if user_id != claims.sub and not claims.is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may see another user's preferences")
    return user_id


@routes.get("/api/v1/preferences")
async def get_preferences(request: web.Request) -> web.Response:
    preferences = await request.app[NOTIFIER].preferences(_preferences_owner(request))
    return json_response(preferences.model_dump())


@routes.put("/api/v1/preferences")
async def put_preferences(request: web.Request) -> web.Response:
    user_id = _preferences_owner(request)
    preferences = await _body(request, Preferences)
    return json_response((await request.app[NOTIFIER].set_preferences(user_id, preferences)).model_dump())


def _webhooks(request: web.Request) -> Webhooks:
    if not _claims(request).is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may see webhook deliveries")
    webhooks = request.app[NOTIFIER].webhooks
    if webhooks is None:
        raise NotifierError(ErrorCode.NOT_FOUND, "webhooks are off (NOTIFIER_WEBHOOK_URL is not set)")
    return webhooks


@routes.get("/api/v1/webhooks/failures")
async def webhook_failures(request: web.Request) -> web.Response:
    """Webhook deliveries that failed their last attempt, newest first."""
    failures = await _webhooks(request).failures(limit=1000)
    return json_response({"failures": [job.to_dict() for job in failures]})


@routes.post("/api/v1/webhooks/failures/{job_id}/replay")
async def replay_webhook(request: web.Request) -> web.Response:
    webhooks = _webhooks(request)
    job_id = request.match_info["job_id"]
    if not await webhooks.replay(job_id):
        raise NotifierError(ErrorCode.NOT_FOUND, "no failed webhook delivery has this id")
    return json_response({"replayed": job_id})


@routes.post("/api/v1/tasks")
async def create_task(request: web.Request) -> web.Response:
    claims = _publisher_claims(request)
    body = await _body(request, TaskCreate)

    async def run(key: str | None) -> Answer:
        return 201, {"task": (await request.app[NOTIFIER].create_task(body)).to_dict()}

    return await _once(request, claims, "task.create", body, run)


@routes.get("/api/v1/tasks")
async def list_tasks(request: web.Request) -> web.Response:
    claims = _claims(request)
    status_name = request.query.get("status")
    try:
        status_filter = TaskStatus(status_name) if status_name else None
    except ValueError as exc:
        raise NotifierError(
            ErrorCode.INVALID_PAYLOAD, f"status: must be one of {[s.value for s in TaskStatus]}"
        ) from exc
    tasks = await request.app[NOTIFIER].list_tasks(status_filter, request.query.get("project"), claims)
    return json_response({"tasks": [task.to_dict() for task in tasks]})


@routes.get("/api/v1/tasks/{task_id}")
async def get_task(request: web.Request) -> web.Response:
    claims = _claims(request)
    task = await request.app[NOTIFIER].get_task(request.match_info["task_id"], claims)
    return json_response({"task": task.to_dict()})


@routes.patch("/api/v1/tasks/{task_id}")
async def update_task(request: web.Request) -> web.Response:
    claims = _publisher_claims(request)
    task_id = request.match_info["task_id"]
    update = await _body(request, TaskUpdate)

    async def run(key: str | None) -> Answer:
        return 200, {"task": (await _apply_update(request.app[NOTIFIER], task_id, update)).to_dict()}

    return await _once(request, claims, f"task.update:{task_id}", update, run)


async def _apply_update(notifier: Notifier, task_id: str, update: TaskUpdate) -> Task:
    if update.status == "running":
        fields = update.model_dump(include={"progress", "current", "completed", "total", "message"})
        task = await notifier.report_progress(
            _validate(
                TaskProgress,
                {"task_id": task_id, **{key: value for key, value in fields.items() if value is not None}},
            )
        )
    elif update.status == "completed":
        task = await notifier.complete_task(task_id, update.result, update.message)
    elif update.status == "failed":
        assert update.error is not None
        task = await notifier.fail_task(task_id, update.error)
    else:
        task = await notifier.cancel_task(task_id, update.message)
    return task


@routes.get("/api/v1/presence")
async def presence(request: web.Request) -> web.Response:
    """Users present in a project or task room, with their connections."""
    _publisher_claims(request)
    query = _validate(PresenceRequest, dict(request.query))
    presence = request.app[NOTIFIER].presence
    users = await presence.members(query.room)
    return json_response(
        {
            "room": query.room,
            "users": users,
            "count": len(users),
            "connections": sum(user["connections"] for user in users),
        }
    )


@routes.post("/api/v1/users/{user_id}/disconnect")
async def disconnect_user(request: web.Request) -> web.Response:
    """Close the user's connections on every node; their older tokens stop working."""
    if not _claims(request).is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may disconnect users")
    user_id = request.match_info["user_id"]
    if not 0 < len(user_id) <= 128:
        raise NotifierError(ErrorCode.INVALID_PAYLOAD, "user_id: 1 to 128 characters")
    return json_response(await request.app[NOTIFIER].revoke_user(user_id))


@routes.put("/api/v1/config/refresh-interval")
async def set_refresh_interval(request: web.Request) -> web.Response:
    claims = _claims(request)
    if not claims.is_admin:
        raise NotifierError(ErrorCode.FORBIDDEN, "only admins may change the refresh interval")
    body = await _body(request, RefreshIntervalRequest)
    seconds = await request.app[NOTIFIER].set_refresh_interval(body.seconds)
    return json_response({"refresh_interval": seconds})
