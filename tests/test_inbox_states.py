"""The inbox after sending: states, exact counts, changes by filter, publishers' updates and
recalls, snooze and expiry, groups, actions and stable listing, on real servers and clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from notifier import Settings
from notifier.auth import Role
from notifier.client import Subscriber
from notifier.health import Health
from notifier.models import InboxChange, InboxDelete, InboxQuery, InboxSet, NotifyRequest
from notifier.store import open_store
from tests.conftest import RunningServer, make_settings, until

ROOT = Path(__file__).resolve().parents[1]
OLD_VERSION = "9d03ac0"  # main before this version's inbox


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, store_url=f"sqlite:///{tmp_path / 'notifier.db'}")


async def notify(server: RunningServer, user: str, title: str, **fields: Any) -> dict:
    status, answer = await server.http(
        "POST",
        "/api/v1/notifications",
        server.token("svc", role=Role.PUBLISHER),
        json={"user_ids": [user], "title": title, **fields},
    )
    assert status == 201, answer
    return dict(answer["notifications"][0])


async def test_a_change_by_filter_is_one_event_per_device_and_the_counts_follow(
    server: RunningServer,
) -> None:
    phone = await server.connect("alice")
    laptop = await server.connect("alice")
    for n in range(3):
        await notify(server, "alice", f"build {n}", category="ci", severity="warning" if n else "critical")
    await notify(server, "alice", "lunch", category="social", tags=["team"])
    counts = (await phone.call("notifications.counts", {}))["counts"]
    assert counts == {
        "unread": 4,
        "unseen": 4,
        "categories": {"ci": 3, "social": 1},
        "severities": {"critical": 1, "warning": 2, "info": 1},
    }
    answer = await phone.call("notifications.change", {"filter": {"category": "ci"}, "set": {"read": True}})
    assert answer["ok"] and answer["count"] == 3 and answer["counts"]["unread"] == 1
    changed = await laptop.next_event("notifications.changed")
    assert sorted(changed["data"]["ids"]) == sorted(answer["changed"])
    assert changed["data"]["set"] == {"read": True, "seen": True}
    await laptop.next_event("notifications.counts", 1)
    assert len(laptop.of_type("notifications.changed")) == 1  # one event for three
    assert laptop.of_type("notifications.counts")[-1]["data"]["categories"] == {"social": 1}

    # Archive all read, then empty the archive: each one request and one event.
    archived = await phone.call(
        "notifications.change", {"filter": {"state": "read"}, "set": {"archived": True}}
    )
    assert archived["count"] == 3
    deleted = await phone.call("notifications.delete", {})
    assert deleted["count"] == 3 and deleted["counts"]["unread"] == 1
    await laptop.next_event("notifications.deleted")
    listed = await phone.call("notifications.list", {"state": "all"})
    assert [n["title"] for n in listed["notifications"]] == ["lunch"]
    tagged = await phone.call("notifications.list", {"tag": "team"})
    assert [n["title"] for n in tagged["notifications"]] == ["lunch"]
    wrong = await phone.call("notifications.change", {"ids": ["x"], "filter": {}, "set": {"read": True}})
    assert wrong["error"]["code"] == "INVALID_PAYLOAD"


async def test_counts_stay_exact_through_ten_thousand_random_operations(server: RunningServer) -> None:
    """Several devices (concurrent tasks) of several users change their inboxes at random; the
    counts the store keeps must equal a full recount at the end, for every user."""
    notifier = server.notifier
    store = notifier.store
    users = ["u0", "u1", "u2"]
    rng = random.Random(7)
    categories, severities = ["ci", "social", "billing"], ["info", "warning", "critical"]
    known: dict[str, list[str]] = {user: [] for user in users}

    async def device(seed: int, operations: int) -> None:
        local = random.Random(seed)
        for _ in range(operations):
            user = local.choice(users)
            roll = local.random()
            if roll < 0.3 or not known[user]:
                request = NotifyRequest(
                    user_ids=[user],
                    title="t",
                    category=local.choice(categories),
                    severity=local.choice(severities),
                    group_key=local.choice([None, None, None, "g1", "g2"]),
                )
                for note in await notifier.notify(request):
                    known[user].append(note.id)
                continue
            ids = local.sample(known[user], k=min(len(known[user]), local.randint(1, 3)))
            if roll < 0.55:
                field = local.choice(["read", "seen", "archived"])
                change = InboxChange(ids=ids, set=InboxSet(**{field: local.random() < 0.7}))
                await notifier.change_inbox(user, change)
            elif roll < 0.65:
                until = int(time.time() * 1000) + 3_600_000
                await notifier.change_inbox(user, InboxChange(ids=ids, set=InboxSet(snoozed_until=until)))
            elif roll < 0.72:
                await notifier.change_inbox(user, InboxChange(ids=ids, set=InboxSet(snoozed_until=None)))
            elif roll < 0.82:
                query = InboxQuery(category=local.choice(categories))
                await notifier.change_inbox(user, InboxChange(filter=query, set=InboxSet(read=True)))
            elif roll < 0.9:
                await notifier.delete_from_inbox(user, InboxDelete(ids=ids))
            else:
                await notifier.delete_from_inbox(user, InboxDelete())  # the archive

    await asyncio.gather(*(device(rng.randrange(1 << 30), 2_500) for _ in range(4)))
    for user in users:
        kept, recounted = await store.inbox_counts(user), await store.recount(user)
        assert kept == recounted, (user, kept, recounted)
    unread = [(await store.inbox_counts(user))["unread"] for user in users]
    assert sum(unread) > 0, "the operations left nothing to count"


async def test_a_publishers_update_and_recall_reach_every_device_and_the_replay(
    server: RunningServer,
) -> None:
    alice = Subscriber(server.url, server.token("alice"))
    seen: list[dict] = []
    alice.on("*", seen.append)
    await alice.connect()
    publisher = server.token("svc", role=Role.PUBLISHER)
    try:
        first = await notify(
            server,
            "alice",
            "deploy started",
            actions=[{"id": "open", "label": "Open", "url": "https://ci.example/1"}],
        )
        second = await notify(server, "alice", "tests running")
        await until(lambda: sum(1 for e in seen if e["type"] == "notification") == 2, timeout=5)
        await alice.close()  # offline while the publisher changes things
        status, updated = await server.http(
            "PATCH", f"/api/v1/notifications/{first['id']}", publisher, json={"title": "deploy finished"}
        )
        assert status == 200 and updated["notification"]["title"] == "deploy finished"
        assert updated["notification"]["actions"][0]["url"] == "https://ci.example/1"
        status, recalled = await server.http("DELETE", f"/api/v1/notifications/{second['id']}", publisher)
        assert (status, recalled) == (200, {"recalled": second["id"], "user_id": "alice"})
        await alice.connect()  # the replay brings both changes
        await until(
            lambda: {e["type"] for e in seen} >= {"notification.updated", "notification.recalled"}, timeout=5
        )
        update = next(e for e in seen if e["type"] == "notification.updated")
        assert update["data"]["notification"]["title"] == "deploy finished"
        assert next(e for e in seen if e["type"] == "notification.recalled")["data"] == {"id": second["id"]}
        listed = await alice.call("notifications.list", {})
        assert [n["title"] for n in listed["notifications"]] == ["deploy finished"]
        missing = await server.http("DELETE", f"/api/v1/notifications/{second['id']}", publisher)
        assert missing[0] == 404
        assert (
            await server.http(
                "PATCH", f"/api/v1/notifications/{first['id']}", server.token("bob"), json={"title": "x"}
            )
        )[0] == 403
    finally:
        await alice.close()


async def test_a_snoozed_notification_comes_back_unread_once_and_an_expired_one_goes(
    server: RunningServer,
) -> None:
    alice = await server.connect("alice")
    note = await notify(server, "alice", "remind me")
    await alice.call("notifications.mark_read", {"ids": [note["id"]]})
    until_ms = int(time.time() * 1000) + 1000
    answer = await alice.call(
        "notifications.change", {"ids": [note["id"]], "set": {"snoozed_until": until_ms}}
    )
    assert answer["counts"]["unread"] == 0
    listed = await alice.call("notifications.list", {"state": "active"})
    assert listed["notifications"] == []  # hidden while snoozed
    woke = await alice.wait_until(
        lambda: [
            e
            for e in alice.of_type("notifications.changed")
            if e["data"]["set"].get("snoozed_until", 0) is None
        ],
        timeout=10,
    )
    assert len(woke) == 1 and woke[0]["data"]["ids"] == [note["id"]]
    assert time.time() * 1000 >= until_ms
    (back,) = (await alice.call("notifications.list", {"state": "unread"}))["notifications"]
    assert back["id"] == note["id"] and back["snoozed_until"] is None and not back["read"]
    past = await alice.call("notifications.change", {"ids": [note["id"]], "set": {"snoozed_until": 1}})
    assert past["error"]["code"] == "INVALID_PAYLOAD"

    fleeting = await notify(server, "alice", "flash sale", expires_at=int(time.time() * 1000) + 1000)
    deleted = await alice.wait_until(lambda: alice.of_type("notifications.deleted"), timeout=10)
    assert deleted[0]["data"]["ids"] == [fleeting["id"]]
    assert [n["id"] for n in (await alice.call("notifications.list", {}))["notifications"]] == [note["id"]]


async def test_a_group_is_one_entry_with_a_count_and_the_latest_items(server: RunningServer) -> None:
    alice = await server.connect("alice")
    for who in ("bob", "carol", "dave", "erin", "frank"):
        await notify(server, "alice", f"{who} commented on PR 7", group_key="pr-7:comments")
    await notify(server, "alice", "unrelated")
    listed = (await alice.call("notifications.list", {}))["notifications"]
    assert [n["title"] for n in listed] == ["unrelated", "frank commented on PR 7"]
    entry = listed[1]
    assert entry["group_count"] == 5 and [i["title"] for i in entry["group_items"]] == [
        "frank commented on PR 7",
        "erin commented on PR 7",
        "dave commented on PR 7",
    ]
    assert (await alice.call("notifications.counts", {}))["counts"]["unread"] == 2
    await alice.wait_until(lambda: len(alice.of_type("notification")) == 6)  # each growth is sent
    group = (await alice.call("notifications.list", {"group": "pr-7:comments"}))["notifications"]
    assert len(group) == 1


async def test_an_action_is_recorded_and_checked(server: RunningServer) -> None:
    alice = await server.connect("alice")
    note = await notify(
        server,
        "alice",
        "approve the deploy?",
        actions=[
            {"id": "approve", "label": "Approve", "event": {"deploy": 42, "answer": "yes"}},
            {"id": "details", "label": "Details", "url": "https://ci.example/42"},
        ],
    )
    answer = await alice.call("notifications.action", {"id": note["id"], "action": "approve"})
    assert (
        answer["ok"]
        and answer["recorded"] == 1
        and answer["action"]["event"] == {"deploy": 42, "answer": "yes"}
    )
    status, receipts = await server.http(
        "GET", f"/api/v1/notifications/{note['id']}/receipts", server.token("svc", role=Role.PUBLISHER)
    )
    assert [r["action"] for r in receipts["receipts"] if r["kind"] == "actioned"] == ["approve"]
    unknown = await alice.call("notifications.action", {"id": note["id"], "action": "nope"})
    assert unknown["error"]["code"] == "INVALID_PAYLOAD"
    bob = await server.connect("bob")
    other = await bob.call("notifications.action", {"id": note["id"], "action": "approve"})
    assert other["error"]["code"] == "NOT_FOUND"
    status, refused = await server.http(
        "POST",
        "/api/v1/notifications",
        server.token("svc", role=Role.PUBLISHER),
        json={"user_ids": ["alice"], "title": "t", "actions": [{"id": "a", "label": "A"}]},
    )
    assert status == 422 and "url or an event" in refused["error"]["message"]


async def test_paging_is_stable_while_new_notifications_arrive(server: RunningServer) -> None:
    for n in range(30):
        await notify(server, "alice", f"n{n}")
    token = server.token("alice")
    seen: list[str] = []
    cursor = None
    for page in range(10):
        query = "limit=7" + (f"&cursor={cursor}" if cursor else "")
        status, answer = await server.http("GET", f"/api/v1/notifications?{query}", token)
        assert status == 200, answer
        seen.extend(n["title"] for n in answer["notifications"])
        await notify(server, "alice", f"new {page}")  # arrives between pages
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"n{n}" for n in range(29, -1, -1)], "skipped or repeated while paging"
    bad = await server.http("GET", "/api/v1/notifications?cursor=abc", token)
    assert bad[0] == 422


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_a_database_from_the_version_before_keeps_every_notification(
    tmp_path: Path, backend: str
) -> None:
    """A database written by the code of the version before (git 9d03ac0): opened by this
    one, every notification is there, with its read state, and the counts are right."""
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'notifier.db'}"
        else:
            from tests.backends import postgres_database

            url = await stack.enter_async_context(postgres_database())
        await write_with_the_version_before(tmp_path / "old", url)
        store = open_store(url, Health())
        await store.open()
        stack.push_async_callback(store.close)
        listed = await store.list_notifications("alice", 10, None, False)
        assert [(n.id, n.read) for n in listed] == [(f"n{i}", i in (1, 3)) for i in range(4, -1, -1)]
        assert all(n.severity == "info" and n.category == "general" for n in listed)
        assert await store.inbox_counts("alice") == await store.recount("alice")
        counts = await store.inbox_counts("alice")
        assert (counts["unread"], counts["unseen"]) == (3, 3)  # read ones count as seen
        changed = await store.change_notifications("alice", ["n0"], None, {"archived": True}, 0)
        assert changed == ["n0"] and (await store.inbox_counts("alice"))["unread"] == 2


async def write_with_the_version_before(worktree: Path, url: str) -> None:
    """Five notifications for alice, two read, stored by the code of OLD_VERSION."""
    add = ["git", "worktree", "add", "--detach", str(worktree), OLD_VERSION]
    made = await asyncio.to_thread(subprocess.run, add, cwd=ROOT, capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"no git history here: {made.stderr.decode()[-200:]}")
    script = (
        "import asyncio\n"
        "from notifier.health import Health\n"
        "from notifier.records import Notification\n"
        "from notifier.store import open_store\n"
        "async def main():\n"
        f"    store = open_store({url!r}, Health())\n"
        "    await store.open()\n"
        "    await store.add_notifications([Notification(id=f'n{i}', user_id='alice', title=f't{i}', "
        "body=None, created_at=i + 1) for i in range(5)])\n"
        "    await store.mark_read('alice', ['n1', 'n3'])\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    try:
        env = {**os.environ, "PYTHONPATH": str(worktree)}  # the old code, not this checkout's
        run = [sys.executable, "-c", script]
        await asyncio.to_thread(subprocess.run, run, cwd=worktree, check=True, env=env)
    finally:
        remove = ["git", "worktree", "remove", "--force", str(worktree)]
        await asyncio.to_thread(subprocess.run, remove, cwd=ROOT, capture_output=True)


async def test_counts_stay_exact_on_two_nodes_of_postgresql(tmp_path: Path) -> None:
    """The same, through REST, from several devices against two nodes sharing PostgreSQL:
    concurrent transactions change one user's counts at once."""
    import aiohttp

    from notifier.health import Health
    from notifier.store import open_store
    from tests.cluster import cluster
    from tests.test_cluster import token

    # Four devices of two users as fast as they can go: what is measured is the counts, not the
    # per-token rate limit (100/s), which a fast run exceeds.
    unlimited = {"NOTIFIER_USER_RATE_PER_SECOND": "100000", "NOTIFIER_USER_RATE_BURST": "10000"}
    async with cluster(tmp_path, nodes=2, **unlimited) as running, aiohttp.ClientSession() as http:
        users = ["p0", "p1"]
        publisher = {"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"}
        known: dict[str, list[str]] = {user: [] for user in users}

        async def device(seed: int, operations: int) -> None:
            local = random.Random(seed)
            for n in range(operations):
                node = running.nodes[n % 2].url
                user = local.choice(users)
                mine = {"Authorization": f"Bearer {token(user)}"}
                if local.random() < 0.35 or not known[user]:
                    body = {
                        "user_ids": [user],
                        "title": "t",
                        "category": local.choice(["a", "b"]),
                        "severity": local.choice(["info", "critical"]),
                        "group_key": local.choice([None, None, "g"]),
                    }
                    async with http.post(f"{node}/api/v1/notifications", json=body, headers=publisher) as r:
                        assert r.status == 201, await r.text()
                        known[user].extend(note["id"] for note in (await r.json())["notifications"])
                    continue
                ids = local.sample(known[user], k=min(len(known[user]), 2))
                roll = local.random()
                if roll < 0.7:
                    field = local.choice(["read", "seen", "archived"])
                    change = {"ids": ids, "set": {field: local.random() < 0.7}}
                elif roll < 0.85:
                    change = {"filter": {"category": local.choice(["a", "b"])}, "set": {"read": True}}
                else:
                    async with http.post(f"{node}/api/v1/notifications/delete", json={}, headers=mine) as r:
                        assert r.status == 200, await r.text()
                    continue
                async with http.post(f"{node}/api/v1/notifications/changes", json=change, headers=mine) as r:
                    assert r.status == 200, await r.text()

        await asyncio.gather(*(device(seed, 300) for seed in range(4)))
        store = open_store(running.store_url, Health())
        await store.open()
        try:
            for user in users:
                kept, recounted = await store.inbox_counts(user), await store.recount(user)
                assert kept == recounted, (user, kept, recounted)
        finally:
            await store.close()
