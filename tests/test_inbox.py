"""The durable inbox: listing, paging, mark-read across devices, retention."""

from __future__ import annotations

from tests.conftest import RunningServer


async def notify(worker, user: str, title: str) -> str:
    ack = await worker.call("notify", {"user_ids": [user], "title": title, "data": {"k": title}})
    return ack["notifications"][0]["id"]


async def test_list_is_newest_first_and_paged(server: RunningServer) -> None:
    worker = await server.worker()
    for n in range(5):
        await notify(worker, "alice", f"n{n}")
    alice = await server.connect("alice")

    first = await alice.call("notifications.list", {"limit": 2})
    second = await alice.call("notifications.list", {"limit": 2, "before": first["notifications"][-1]["id"]})

    assert [n["title"] for n in first["notifications"]] == ["n4", "n3"]
    assert [n["title"] for n in second["notifications"]] == ["n2", "n1"]
    assert first["unread"] == 5
    assert first["notifications"][0]["data"] == {"k": "n4"}


async def test_unread_count_comes_with_the_session(server: RunningServer) -> None:
    worker = await server.worker()
    await notify(worker, "alice", "a")
    await notify(worker, "alice", "b")

    alice = await server.connect("alice")

    assert (await alice.next_event("session"))["data"]["unread"] == 2


async def test_reading_on_one_device_clears_the_badge_on_the_other(server: RunningServer) -> None:
    worker = await server.worker()
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    first = await notify(worker, "alice", "a")
    await notify(worker, "alice", "b")
    await laptop.next_event("notifications.unread", count=2)

    ack = await phone.call("notifications.mark_read", {"ids": [first]})

    assert ack == {"ok": True, "marked": [first], "unchanged": [], "unread": 1}
    badge = await laptop.next_event("notifications.unread", count=3)
    assert badge["data"] == {"count": 1}
    await phone.call("notifications.mark_read", {"all": True})
    assert (await laptop.next_event("notifications.unread", count=4))["data"] == {"count": 0}
    unread_only = await laptop.call("notifications.list", {"unread_only": True})
    assert unread_only["notifications"] == []


async def test_another_users_notification_cannot_be_marked(server: RunningServer) -> None:
    worker = await server.worker()
    bobs = await notify(worker, "bob", "private")
    alice = await server.connect("alice")
    bob = await server.connect("bob")

    ack = await alice.call("notifications.mark_read", {"ids": [bobs, "unknown"]})

    assert ack["marked"] == [] and ack["unchanged"] == sorted([bobs, "unknown"])
    assert (await bob.call("notifications.list", {}))["unread"] == 1
    assert (await alice.call("notifications.list", {}))["notifications"] == []


async def test_mark_read_needs_ids_or_all(server: RunningServer) -> None:
    alice = await server.connect("alice")
    for payload in ({}, {"ids": []}, {"ids": ["x"], "all": True}):
        ack = await alice.call("notifications.mark_read", payload)
        assert ack["error"]["code"] == "INVALID_PAYLOAD", payload


async def test_retention_keeps_the_newest_per_user(server: RunningServer) -> None:
    worker = await server.worker()
    for n in range(6):
        await notify(worker, "alice", f"n{n}")
    await notify(worker, "bob", "keep")
    server.notifier.settings.inbox_max_per_user = 3

    await server.notifier.run_maintenance()

    alice = await server.connect("alice")
    titles = [n["title"] for n in (await alice.call("notifications.list", {}))["notifications"]]
    assert titles == ["n5", "n4", "n3"]
    bob = await server.connect("bob")
    assert len((await bob.call("notifications.list", {}))["notifications"]) == 1
