"""Every event type reaches exactly the clients in its room, in one envelope shape."""

from __future__ import annotations

import time

from tests.conftest import RunningServer


def assert_envelope(envelope: dict, event_type: str, room: str) -> None:
    assert set(envelope) >= {"id", "type", "room", "ts", "data", "offset", "epoch"}
    assert envelope["type"] == event_type
    assert envelope["room"] == room
    assert abs(envelope["ts"] - time.time() * 1000) < 5000
    assert isinstance(envelope["data"], dict)


async def test_project_event_reaches_members_only(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    bob = await server.connect("bob", projects=["p2"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})
    await bob.call("subscribe", {"rooms": ["project:p2"]})
    worker = await server.worker()

    ack = await worker.call("publish", {"room": "project:p1", "type": "deploy", "data": {"v": 7}})
    await worker.call("publish", {"room": "*", "type": "marker", "data": {}})

    assert ack["ok"] is True and ack["offset"] == 1
    event = await alice.next_event("deploy")
    assert_envelope(event, "deploy", "project:p1")
    assert event["data"] == {"v": 7} and event["id"] == ack["id"]
    await bob.next_event("marker")
    assert bob.of_type("deploy") == []


async def test_broadcast_reaches_every_user(server: RunningServer) -> None:
    clients = [await server.connect(name) for name in ("alice", "bob", "carol")]
    worker = await server.worker()

    await worker.call("publish", {"room": "*", "type": "maintenance", "data": {"at": "noon"}})

    for client in clients:
        assert_envelope(await client.next_event("maintenance"), "maintenance", "*")


async def test_notification_reaches_all_devices_of_its_user_only(server: RunningServer) -> None:
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    bob = await server.connect("bob")
    worker = await server.worker()

    ack = await worker.call("notify", {"user_ids": ["alice"], "title": "Hi", "body": "there"})
    await worker.call("publish", {"room": "*", "type": "marker", "data": {}})

    assert ack["ok"] is True and ack["notifications"][0]["user_id"] == "alice"
    for device in (phone, laptop):
        event = await device.next_event("notification")
        assert_envelope(event, "notification", "user:alice")
        assert event["data"]["title"] == "Hi" and event["data"]["read"] is False
        assert (await device.next_event("notifications.unread"))["data"] == {"count": 1}
    await bob.next_event("marker")
    assert bob.of_type("notification") == []


async def test_task_lifecycle_events_reach_task_and_project_rooms(server: RunningServer) -> None:
    watcher = await server.connect("alice", projects=["p1"])
    await watcher.call("subscribe", {"rooms": ["project:p1"]})
    outsider = await server.connect("bob", projects=["p2"])
    await outsider.call("subscribe", {"rooms": ["project:p2"]})
    worker = await server.worker()

    await worker.call("task.create", {"id": "job", "project_id": "p1", "title": "Scan"})
    task_view = await server.connect("carol", projects=["p1"])
    sub = await task_view.call("subscribe", {"rooms": ["task:job"]})
    await worker.call("task.progress", {"task_id": "job", "progress": 40})
    done = await worker.call("task.complete", {"task_id": "job", "result": {"rows": 3}})

    assert sub["rooms"]["task:job"]["task"]["title"] == "Scan"
    assert done["task"]["status"] == "completed"
    created = await watcher.next_event("task.created")
    assert_envelope(created, "task.created", "project:p1")
    refresh = await watcher.next_event("refresh")
    assert refresh["data"] == {"reason": "task_created", "task_id": "job"}
    completed = await task_view.next_event("task.completed")
    assert_envelope(completed, "task.completed", "task:job")
    assert completed["data"]["result"] == {"rows": 3}
    assert [e["data"]["progress"] for e in task_view.of_type("task.progress")] == [40]
    await watcher.next_event("task.completed")
    assert outsider.of_type("task.created") == []


async def test_failed_and_cancelled_tasks_are_announced(server: RunningServer) -> None:
    watcher = await server.connect("alice", projects=["p1"])
    await watcher.call("subscribe", {"rooms": ["project:p1"]})
    worker = await server.worker()
    await worker.call("task.create", {"id": "a", "project_id": "p1"})
    await worker.call("task.create", {"id": "b", "project_id": "p1"})

    await worker.call("task.fail", {"task_id": "a", "error": "disk full"})
    await worker.call("task.cancel", {"task_id": "b", "reason": "user asked"})

    assert (await watcher.next_event("task.failed"))["data"]["error"] == "disk full"
    assert (await watcher.next_event("task.cancelled"))["data"]["status"] == "cancelled"


async def test_offsets_are_consecutive_per_room(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])
    await alice.call("subscribe", {"rooms": ["project:p1"]})
    worker = await server.worker()

    for n in range(5):
        await worker.call("publish", {"room": "project:p1", "type": "tick", "data": {"n": n}})

    await alice.next_event("tick", count=5)
    ticks = alice.of_type("tick")
    assert [e["offset"] for e in ticks] == [1, 2, 3, 4, 5]
    assert [e["data"]["n"] for e in ticks] == [0, 1, 2, 3, 4]
    assert len({e["id"] for e in ticks}) == 5
