"""Bad input gets a clear error through the ack and never costs the connection."""

from __future__ import annotations

import pytest

from tests.conftest import RunningServer


async def assert_still_connected(client) -> None:
    assert (await client.call("ping", {"n": 1}))["ok"] is True


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"rooms": "project:p1"}, "rooms"),
        ({"rooms": []}, "rooms"),
        ({"room": ["project:p1"]}, "rooms"),
        ("just a string", "payload"),
        (
            {"rooms": ["project:p1"], "since": {"project:p1": {"epoch": "e", "offset": -1}}},
            "since.project:p1.offset",
        ),
    ],
)
async def test_bad_subscribe_payloads_name_the_field(
    server: RunningServer, payload: object, field: str
) -> None:
    alice = await server.connect("alice", projects=["p1"])

    ack = await alice.call("subscribe", payload)

    assert ack["ok"] is False
    assert ack["error"]["code"] == "INVALID_PAYLOAD"
    assert ack["error"]["message"].startswith(field)
    await assert_still_connected(alice)


async def test_unknown_event_is_answered_not_ignored(server: RunningServer) -> None:
    alice = await server.connect("alice")

    ack = await alice.call("get_status", {"action": "ping"})

    assert ack == {"ok": False, "error": {"code": "UNKNOWN_EVENT", "message": "unknown event 'get_status'"}}
    await assert_still_connected(alice)


async def test_worker_events_are_unknown_to_end_users(server: RunningServer) -> None:
    alice = await server.connect("alice")
    ack = await alice.call("publish", {"room": "*", "type": "x", "data": {}})
    assert ack["error"]["code"] == "UNKNOWN_EVENT"


@pytest.mark.parametrize(
    ("event", "payload", "code"),
    [
        ("publish", {"room": "*", "type": "task.completed", "data": {}}, "INVALID_PAYLOAD"),
        ("publish", {"room": "*", "type": "Bad Type", "data": {}}, "INVALID_PAYLOAD"),
        ("publish", {"room": "nowhere", "type": "x", "data": {}}, "INVALID_PAYLOAD"),
        ("publish", {"room": "*", "type": "x", "data": [1, 2]}, "INVALID_PAYLOAD"),
        ("notify", {"user_ids": [], "title": "x"}, "INVALID_PAYLOAD"),
        ("task.progress", {"task_id": "missing", "progress": 5}, "NOT_FOUND"),
        ("task.progress", {"task_id": "t", "progress": "50"}, "INVALID_PAYLOAD"),
        ("task.complete", {"task_id": "missing"}, "NOT_FOUND"),
    ],
)
async def test_bad_worker_payloads(server: RunningServer, event: str, payload: dict, code: str) -> None:
    worker = await server.worker()
    ack = await worker.call(event, payload)
    assert ack["ok"] is False and ack["error"]["code"] == code, ack
    await assert_still_connected(worker)


async def test_two_arguments_are_refused(server: RunningServer) -> None:
    alice = await server.connect("alice")
    ack = await alice.sio.call("ping", ({"a": 1}, {"b": 2}), timeout=5)
    assert ack["error"]["code"] == "INVALID_PAYLOAD"


async def test_oversized_event_is_refused_without_dropping_the_connection(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    huge = "x" * (server.settings.max_payload_bytes + 10)

    ack = await worker.call("publish", {"room": "*", "type": "big", "data": {"blob": huge}})

    assert ack["ok"] is False and ack["error"]["code"] == "PAYLOAD_TOO_LARGE"
    await assert_still_connected(worker)


async def test_only_admins_change_the_refresh_interval(server: RunningServer) -> None:
    alice = await server.connect("alice")
    ack = await alice.call("config.set_refresh_interval", {"seconds": 60})
    assert ack["error"]["code"] == "FORBIDDEN"
    assert server.notifier.refresh_interval == 0
