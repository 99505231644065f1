"""Who may join which room, and what the subscribe ack says."""

from __future__ import annotations

from tests.conftest import RunningServer


async def test_user_joins_a_project_in_the_token(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])

    ack = await alice.call("subscribe", {"rooms": ["project:p1"]})

    assert ack["ok"] is True
    room = ack["rooms"]["project:p1"]
    assert room["joined"] is True
    assert room["offset"] == 0 and room["epoch"]


async def test_project_outside_the_token_is_forbidden(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])

    ack = await alice.call("subscribe", {"rooms": ["project:p2", "project:p1"]})

    assert ack["ok"] is True
    assert ack["rooms"]["project:p2"] == {
        "joined": False,
        "error": {"code": "FORBIDDEN", "message": "project 'p2' is not in your token"},
    }
    assert ack["rooms"]["project:p1"]["joined"] is True


async def test_another_users_room_is_forbidden(server: RunningServer) -> None:
    mallory = await server.connect("mallory")

    ack = await mallory.call("subscribe", {"rooms": ["user:alice"]})

    assert ack["rooms"]["user:alice"]["error"]["code"] == "FORBIDDEN"


async def test_wildcard_project_claim_sees_every_project(server: RunningServer) -> None:
    admin_ui = await server.connect("ops", projects=["*"])
    ack = await admin_ui.call("subscribe", {"rooms": ["project:anything"]})
    assert ack["rooms"]["project:anything"]["joined"] is True


async def test_unknown_task_is_not_found(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    ack = await alice.call("subscribe", {"rooms": ["task:nope"]})
    assert ack["rooms"]["task:nope"]["error"]["code"] == "NOT_FOUND"


async def test_task_room_follows_the_tasks_project_or_owner(server: RunningServer) -> None:
    worker = await server.worker()
    await worker.call("task.create", {"id": "t1", "project_id": "p9", "owner": "bob"})
    alice = await server.connect("alice", projects=["p1"])
    bob = await server.connect("bob", projects=[])
    carol = await server.connect("carol", projects=["p9"])

    denied = await alice.call("subscribe", {"rooms": ["task:t1"]})
    as_owner = await bob.call("subscribe", {"rooms": ["task:t1"]})
    as_member = await carol.call("subscribe", {"rooms": ["task:t1"]})

    assert denied["rooms"]["task:t1"]["error"]["code"] == "FORBIDDEN"
    assert as_owner["rooms"]["task:t1"]["joined"] is True
    assert as_member["rooms"]["task:t1"]["task"]["status"] == "pending"


async def test_malformed_room_names_are_invalid_payload(server: RunningServer) -> None:
    alice = await server.connect("alice")
    ack = await alice.call("subscribe", {"rooms": ["lobby"]})
    assert ack["rooms"]["lobby"]["error"]["code"] == "INVALID_PAYLOAD"


async def test_unsubscribe_stops_delivery(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    worker = await server.worker()
    await alice.call("subscribe", {"rooms": ["project:p1"]})

    left = await alice.call("unsubscribe", {"rooms": ["project:p1", "user:alice"]})
    await worker.call("publish", {"room": "project:p1", "type": "deploy", "data": {"n": 1}})
    await worker.call("publish", {"room": "user:alice", "type": "marker", "data": {}})

    assert left["rooms"]["project:p1"] == {"left": True}
    assert left["rooms"]["user:alice"]["error"]["code"] == "FORBIDDEN"
    await alice.next_event("marker")
    assert alice.of_type("deploy") == []


async def test_a_wildcard_token_follows_every_project_live(server: RunningServer) -> None:
    ops = await server.connect("ops", projects=["*"])
    ack = await ops.call("subscribe", {"rooms": ["project:*", "project:p1"]})
    assert ack["rooms"]["project:*"] == {"joined": True, "live_only": True}
    worker = await server.worker()
    for project in ("p1", "p2", "brand-new"):
        await worker.call("task.create", {"id": f"t-{project}", "project_id": project})
    await ops.wait_until(lambda: len(ops.of_type("task.created")) >= 3)
    created = ops.of_type("task.created")
    # Once each, also for p1, which it follows twice (by name and through project:*).
    assert sorted(event["data"]["id"] for event in created) == ["t-brand-new", "t-p1", "t-p2"]

    alice = await server.connect("alice", projects=["p1"])
    denied = await alice.call("subscribe", {"rooms": ["project:*"]})
    assert denied["rooms"]["project:*"]["error"]["code"] == "FORBIDDEN"
    refused = await worker.call("publish", {"room": "project:*", "type": "x"})
    assert refused["error"]["code"] == "INVALID_PAYLOAD"
    assert (await ops.call("unsubscribe", {"rooms": ["project:*"]}))["rooms"]["project:*"]["left"]
