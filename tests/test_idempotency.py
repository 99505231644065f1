"""Idempotency keys cannot collide: they are scoped to the publisher without ambiguity, and a
key reused for another request is refused instead of answered with someone else's result."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import RunningServer, make_settings, start_server, stop_server


async def test_keys_of_two_publishers_never_collide(server: RunningServer) -> None:
    # The collision of the first round: scope "w" + key "x:k" read as scope "w:x" + key "k".
    first = await server.worker("w")
    second = await server.worker("w:x")

    a = await first.call("notify", {"user_ids": ["alice"], "title": "from w", "idempotency_key": "x:k"})
    b = await second.call("notify", {"user_ids": ["bob"], "title": "from w:x", "idempotency_key": "k"})

    assert a["ok"] and b["ok"]
    assert not b.get("duplicate"), "the second publisher got the first one's answer"
    assert b["notifications"][0]["user_id"] == "bob"
    assert a["notifications"][0]["id"] != b["notifications"][0]["id"]


async def test_a_retry_gets_the_first_answer_and_another_request_a_conflict(server: RunningServer) -> None:
    worker = await server.worker("w")
    request = {"room": "project:p1", "type": "tick", "data": {"n": 1}, "idempotency_key": "once"}

    first = await worker.call("publish", request)
    retry = await worker.call("publish", request)
    other = await worker.call("publish", {**request, "data": {"n": 2}})
    other_operation = await worker.call(
        "notify", {"user_ids": ["alice"], "title": "t", "idempotency_key": "once"}
    )

    assert first["ok"] and retry["ok"] and retry["duplicate"] is True
    assert retry["offset"] == first["offset"] and retry["id"] == first["id"]
    assert other == {
        "ok": False,
        "error": {"code": "IDEMPOTENCY_CONFLICT", "message": other["error"]["message"]},
    }
    assert other_operation["error"]["code"] == "IDEMPOTENCY_CONFLICT"
    history = await server.notifier.replay("project:p1", None)
    assert history.position.offset == 1, "the room was appended to more than once"


async def forget_completion(server: RunningServer) -> None:
    """As if the process died after the append and before the key's completion was stored:
    the key is claimed, unanswered, and long stale."""
    db = server.notifier.store.db.connection  # type: ignore[attr-defined]
    db.execute("UPDATE idempotency SET result = NULL, ts = 0")


@pytest.mark.parametrize("event", ["publish", "notify"])
async def test_a_retry_after_dying_between_append_and_completion_appends_nothing(
    tmp_path: Path, event: str
) -> None:
    server, runner = await start_server(make_settings(tmp_path, store_url=f"sqlite:///{tmp_path / 'n.db'}"))
    try:
        worker = await server.worker("w")
        if event == "publish":
            request, room = (
                {"room": "project:p1", "type": "tick", "data": {}, "idempotency_key": "k"},
                "project:p1",
            )
        else:
            request, room = {"user_ids": ["alice"], "title": "t", "idempotency_key": "k"}, "user:alice"
        first = await worker.call(event, request)
        await forget_completion(server)

        retry = await worker.call(event, request)

        assert first["ok"] and retry["ok"]
        replay = await server.notifier.replay(room, None)
        assert replay.position.offset == (1 if event == "publish" else 2), "appended twice"
        if event == "publish":
            assert retry["offset"] == first["offset"] and retry["id"] == first["id"]
    finally:
        await stop_server(server, runner)
