"""REST publishers can retry safely: `Idempotency-Key` (or the body's `idempotency_key`) on
every POST and PATCH that changes something; a repeat gets the first answer, another request
under the key is refused."""

from __future__ import annotations

import aiohttp
import pytest

from tests.conftest import RunningServer


async def post(
    server: RunningServer, method: str, path: str, body: dict, key: str | None = None
) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {server.token('svc', role='publisher')}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, server.url + path, json=body, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


@pytest.mark.parametrize("where", ["header", "body"])
async def test_a_retried_publish_is_applied_once_and_answered_the_same(
    server: RunningServer, where: str
) -> None:
    body = {"room": "project:p1", "type": "tick", "data": {"n": 1}}
    if where == "body":
        body["idempotency_key"] = "retry-me"
    key = "retry-me" if where == "header" else None

    first = await post(server, "POST", "/api/v1/publish", body, key)
    again = await post(server, "POST", "/api/v1/publish", body, key)

    assert first[0] == again[0] == 201
    assert again[1] == first[1], "the repeat's answer is the first one"
    assert again[2].get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first[2]
    replay = await server.notifier.replay("project:p1", None)
    assert replay.position.offset == 1, "the event was appended more than once"


async def test_another_request_under_the_same_key_is_a_conflict(server: RunningServer) -> None:
    notify = {"user_ids": ["alice"], "title": "once"}
    assert (await post(server, "POST", "/api/v1/notifications", notify, "k1"))[0] == 201
    status, answer, _ = await post(
        server, "POST", "/api/v1/notifications", {**notify, "title": "twice"}, "k1"
    )
    assert (status, answer["error"]["code"]) == (422, "IDEMPOTENCY_CONFLICT")
    listed = await server.notifier.list_notifications("alice", _listing())
    assert [n.title for n in listed] == ["once"]


async def test_tasks_are_created_and_finished_once(server: RunningServer) -> None:
    create = {"id": "t1", "project_id": "p1", "title": "job"}
    first = await post(server, "POST", "/api/v1/tasks", create, "create-t1")
    again = await post(server, "POST", "/api/v1/tasks", create, "create-t1")
    assert first[0] == again[0] == 201 and again[1] == first[1]  # not CONFLICT: the first answer

    done = {"status": "completed", "result": {"ok": 1}}
    finished = await post(server, "PATCH", "/api/v1/tasks/t1", done, "finish-t1")
    repeated = await post(server, "PATCH", "/api/v1/tasks/t1", done, "finish-t1")
    assert finished[0] == repeated[0] == 200 and repeated[1] == finished[1]


async def test_a_header_and_a_body_key_that_differ_are_refused(server: RunningServer) -> None:
    body = {"room": "project:p1", "type": "tick", "idempotency_key": "a"}
    status, answer, _ = await post(server, "POST", "/api/v1/publish", body, "b")
    assert (status, answer["error"]["code"]) == (422, "INVALID_PAYLOAD")


def _listing():
    from notifier.models import NotificationsList

    return NotificationsList()
