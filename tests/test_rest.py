"""The REST twins of the worker operations, and their JSON errors."""

from __future__ import annotations

from notifier.auth import Role
from tests.conftest import RunningServer


async def test_health_and_status(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})
    await server.worker()

    assert await server.http("GET", "/healthz") == (200, {"ok": True})
    status, body = await server.http("GET", "/api/v1/status", server.token("ops", role=Role.ADMIN))

    assert status == 200
    assert body["connections"] == {"/": 1, "/workers": 1}
    assert body["rooms"] == 3  # "*", user:alice, project:p1
    assert body["refresh_interval"] == 0
    assert body["version"] and body["uptime_seconds"] >= 0


async def test_publish_over_rest_reaches_the_room(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})

    status, envelope = await server.http(
        "POST",
        "/api/v1/publish",
        server.token("svc", role="publisher"),
        {"room": "project:p1", "type": "build.done", "data": {"ok": True}},
    )

    assert status == 201
    event = await alice.next_event("build.done")
    assert event["id"] == envelope["id"] and event["data"] == {"ok": True}


async def test_rest_needs_a_publishing_token(server: RunningServer) -> None:
    body = {"room": "*", "type": "x", "data": {}}
    assert await server.http("POST", "/api/v1/publish", None, body) == (
        401,
        {"error": {"code": "AUTH_REQUIRED", "message": "a token is required"}},
    )
    status, error = await server.http("POST", "/api/v1/publish", server.token("alice"), body)
    assert status == 403 and error["error"]["code"] == "FORBIDDEN"
    status, error = await server.http("POST", "/api/v1/publish", "garbage", body)
    assert status == 401 and error["error"]["code"] == "AUTH_INVALID"


async def test_rest_errors_are_json(server: RunningServer) -> None:
    token = server.token("svc", role="publisher")
    status, error = await server.http("POST", "/api/v1/publish", token, data=b"{not json")
    assert status == 422 and error["error"]["code"] == "INVALID_PAYLOAD"
    status, error = await server.http("POST", "/api/v1/tasks", token, {"title": "no project"})
    assert status == 422 and error["error"]["message"].startswith("project_id")
    status, error = await server.http("GET", "/api/v1/nothing-here")
    assert status == 404 and error["error"]["code"] == "NOT_FOUND"
    big = b'{"room": "*", "type": "x", "data": {"b": "' + b"x" * 70000 + b'"}}'
    status, error = await server.http("POST", "/api/v1/publish", token, data=big)
    assert status == 413 and error["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_task_lifecycle_over_rest(server: RunningServer) -> None:
    token = server.token("svc", role="publisher")
    watcher = await server.connect("alice", projects=["p1"])
    await watcher.call("subscribe", {"rooms": ["project:p1"]})

    status, created = await server.http(
        "POST", "/api/v1/tasks", token, {"id": "r1", "project_id": "p1", "title": "Import"}
    )
    assert status == 201 and created["task"]["status"] == "pending"
    status, _ = await server.http("PATCH", "/api/v1/tasks/r1", token, {"progress": 30})
    assert status == 200
    status, running = await server.http(
        "GET", "/api/v1/tasks?status=running&project=p1", server.token("alice", ["p1"])
    )
    assert status == 200 and [t["id"] for t in running["tasks"]] == ["r1"]
    status, hidden = await server.http("GET", "/api/v1/tasks?status=running", server.token("bob", ["p2"]))
    assert hidden["tasks"] == []
    status, done = await server.http(
        "PATCH", "/api/v1/tasks/r1", token, {"status": "completed", "result": [1]}
    )
    assert done["task"]["status"] == "completed" and done["task"]["progress"] == 100
    status, again = await server.http("PATCH", "/api/v1/tasks/r1", token, {"status": "completed"})
    assert status == 409 and again["error"]["code"] == "CONFLICT"
    status, fetched = await server.http("GET", "/api/v1/tasks/r1", server.token("alice", ["p1"]))
    assert fetched["task"]["result"] == [1]
    status, _ = await server.http("GET", "/api/v1/tasks/r1", server.token("bob", ["p2"]))
    assert status == 403
    await watcher.next_event("task.completed")


async def test_notifications_over_rest(server: RunningServer) -> None:
    publisher = server.token("svc", role="publisher")
    alice_token = server.token("alice")

    status, _ = await server.http(
        "POST", "/api/v1/notifications", publisher, {"user_ids": ["alice", "bob"], "title": "New"}
    )
    assert status == 201
    status, inbox = await server.http("GET", "/api/v1/notifications", alice_token)
    assert status == 200 and inbox["unread"] == 1
    assert [n["title"] for n in inbox["notifications"]] == ["New"]
    status, _ = await server.http("GET", "/api/v1/notifications?user_id=bob", alice_token)
    assert status == 403
    status, bobs = await server.http(
        "GET", "/api/v1/notifications?user_id=bob", server.token("root", role="admin")
    )
    assert bobs["unread"] == 1
    status, marked = await server.http("POST", "/api/v1/notifications/read", alice_token, {"all": True})
    assert marked["unread"] == 0 and len(marked["marked"]) == 1


async def test_a_wrong_method_and_a_reserved_type_are_named(server: RunningServer) -> None:
    status, error = await server.http("GET", "/api/v1/publish")
    assert status == 405 and error["error"]["code"] == "METHOD_NOT_ALLOWED"
    status, error = await server.http(
        "POST",
        "/api/v1/publish",
        server.token("svc", role="publisher"),
        {"room": "*", "type": "task.progress", "data": {}},
    )
    assert status == 422 and error["error"]["message"].startswith("type: 'task.progress' is reserved")
