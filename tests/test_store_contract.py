"""One contract, every store backend: memory, an SQLite file, PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from notifier.health import Health
from notifier.records import Job, JobState, Notification, Receipt, ReceiptKind, Task, TaskStatus
from notifier.store import Store, open_store
from tests.backends import postgres_database


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'contract.db'}"
    else:
        async with postgres_database() as url:
            yield url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url, Health())
    await opened.open()
    yield opened
    await opened.close()


def task(task_id: str = "t1", project: str = "p1", **fields) -> Task:
    return Task(
        id=task_id,
        project_id=project,
        owner=None,
        title="T",
        status=TaskStatus.PENDING,
        progress=0.0,
        created_at=1,
        updated_at=1,
        **fields,
    )


def note(note_id: str, user: str = "alice", created_at: int = 1) -> Notification:
    return Notification(id=note_id, user_id=user, title=note_id, body=None, created_at=created_at)


async def test_tasks_are_inserted_once_and_changed_by_compare_and_set(store: Store) -> None:
    first = task()
    assert await store.insert_task(first) is True
    assert await store.insert_task(task()) is False

    running = first.evolve(status=TaskStatus.RUNNING, progress=40.0)
    assert await store.replace_task(running, expected_version=first.version) is True
    stale = first.evolve(progress=10.0)
    assert await store.replace_task(stale, expected_version=first.version) is False

    stored = await store.get_task("t1")
    assert stored is not None and stored.progress == 40.0 and stored.version == running.version
    assert await store.get_task("nope") is None


async def test_tasks_are_listed_by_status_and_project_and_forgotten_when_old(store: Store) -> None:
    for task_id, project in (("a", "p1"), ("b", "p1"), ("c", "p2")):
        await store.insert_task(task(task_id, project))
    b = await store.get_task("b")
    assert b is not None
    await store.replace_task(b.evolve(status=TaskStatus.COMPLETED, finished_at=100), b.version)

    pending = await store.list_tasks(frozenset({TaskStatus.PENDING}), None)
    in_p1 = await store.list_tasks(None, frozenset({"p1"}))
    assert [t.id for t in pending] == ["a", "c"]
    assert [t.id for t in in_p1] == ["a", "b"]
    assert await store.delete_tasks_finished_before(101) == 1
    assert await store.get_task("b") is None and await store.get_task("a") is not None


# When the redelivery sweep may claim what these tests store (they are about the inbox).
DUE = 0


async def test_notifications_are_kept_once_listed_newest_first_and_read_by_their_owner(
    store: Store,
) -> None:
    await store.add_notifications([note("n1"), note("n2"), note("b1", user="bob")], DUE)
    await store.add_notifications([note("n1")], DUE)  # a retried request: kept once
    await store.add_notifications([note("n3")], DUE)

    listed = await store.list_notifications("alice", 10, None, False)
    page = await store.list_notifications("alice", 1, "n3", False)
    assert [n.id for n in listed] == ["n3", "n2", "n1"]
    assert [n.id for n in page] == ["n2"]
    assert await store.unread_counts(["alice", "bob", "carol"]) == {"alice": 3, "bob": 1, "carol": 0}

    assert await store.mark_read("alice", ["n1", "b1"]) == ["n1"]
    assert sorted(await store.mark_read("alice", None)) == ["n2", "n3"]
    assert await store.unread_count("alice") == 0 and await store.unread_count("bob") == 1
    assert await store.list_notifications("bob", 10, None, True) == [note("b1", user="bob")]


async def test_undelivered_notifications_are_claimed_once_per_lease_until_delivered(store: Store) -> None:
    await store.add_notifications([note("n1"), note("n2")], 100)
    await store.add_notifications([note("n3")], 200)

    assert await store.claim_undelivered(now=99, lease_until=1_000, limit=10) == []
    first = await store.claim_undelivered(now=150, lease_until=1_000, limit=10)
    assert sorted(n.id for n in first) == ["n1", "n2"]
    assert {n.id: (n.title, n.user_id) for n in first}["n1"] == (note("n1").title, "alice")
    # Claimed: no one else takes them during the lease; the later one is due on its own.
    assert [n.id for n in await store.claim_undelivered(now=500, lease_until=1_000, limit=10)] == ["n3"]
    assert await store.claim_undelivered(now=999, lease_until=2_000, limit=10) == []

    # A claimer that died: taken again once the lease is over, except what was delivered.
    await store.mark_delivered(["n1", "n3"])
    again = await store.claim_undelivered(now=1_000, lease_until=3_000, limit=1)
    assert [n.id for n in again] == ["n2"]
    await store.mark_delivered(["n2", "unknown"])
    assert await store.claim_undelivered(now=10**12, lease_until=10**13, limit=10) == []
    # A retried request stores nothing again, and undelivers nothing delivered.
    await store.add_notifications([note("n1")], 0)
    assert await store.claim_undelivered(now=10**12, lease_until=10**13, limit=10) == []


def receipt(note_id: str, kind: ReceiptKind, device: str = "d1", user: str = "alice", at: int = 5) -> Receipt:
    return Receipt(note_id, user, kind, device, at, "open" if kind is ReceiptKind.ACTIONED else None)


async def test_receipts_are_kept_once_per_device_and_only_for_the_owner(store: Store) -> None:
    await store.add_notifications([note("n1", created_at=2), note("b1", user="bob")], DUE)
    added = await store.add_receipts(
        [
            receipt("n1", ReceiptKind.DELIVERED),
            receipt("n1", ReceiptKind.DELIVERED, device="d2"),
            receipt("b1", ReceiptKind.SEEN),  # not alice's
            receipt("nope", ReceiptKind.SEEN),
        ]
    )
    assert [(r.device, created) for r, created in added] == [("d1", 2), ("d2", 2)]
    again = await store.add_receipts(
        [receipt("n1", ReceiptKind.DELIVERED), receipt("n1", ReceiptKind.ACTIONED)]
    )
    assert [r.kind for r, _ in again] == [ReceiptKind.ACTIONED]
    listed = await store.list_receipts("n1")
    assert sorted((r.kind.value, r.device) for r in listed) == [
        ("actioned", "d1"),
        ("delivered", "d1"),
        ("delivered", "d2"),
    ]
    assert next(r for r in listed if r.kind is ReceiptKind.ACTIONED).action == "open"
    assert await store.list_receipts("b1") == []
    assert await store.seen_notifications(["n1", "b1", "nope"]) == {"n1"}  # actioned counts


def job(job_id: str, group: str = "alice", due_at: int = 10) -> Job:
    return Job(job_id, "webhook", group, due_at, {"n": job_id})


async def test_jobs_are_claimed_one_per_group_in_order_with_a_lease(store: Store) -> None:
    await store.add_jobs(
        [job("a1"), job("a2"), job("b1", group="bob"), job("late", group="carol", due_at=50)]
    )
    await store.add_jobs([job("a1", due_at=0)])  # stored already: left as it is
    assert await store.claim_jobs("webhook", now=5, lease_until=100, limit=10) == []
    first = await store.claim_jobs("webhook", now=10, lease_until=100, limit=10)
    assert sorted(j.id for j in first) == ["a1", "b1"] and first[0].payload == {"n": first[0].id}
    # a2 waits for a1 (same group), even once a1's lease is over; carol's is not due yet.
    assert await store.claim_jobs("webhook", now=20, lease_until=100, limit=10) == []
    assert await store.claim_jobs("escalation", now=10**6, lease_until=10**7, limit=10) == []

    await store.retry_job("a1", due_at=30, error="503")
    await store.finish_job("b1", JobState.DONE)
    assert [j.id for j in await store.claim_jobs("webhook", now=30, lease_until=200, limit=10)] == ["a1"]
    (a1,) = await store.get_jobs(["a1"])
    assert (a1.attempts, a1.last_error) == (1, "503")
    await store.finish_job("a1", JobState.FAILED, "gave up")
    claimed = await store.claim_jobs("webhook", now=60, lease_until=300, limit=10)
    assert sorted(j.id for j in claimed) == ["a2", "late"]

    assert [j.id for j in await store.list_jobs("webhook", JobState.FAILED, 10)] == ["a1"]
    assert await store.replay_job("a1", now=400) is True
    assert await store.replay_job("b1", now=400) is False  # done, not failed
    await store.cancel_jobs(["a2", "late"])
    assert [j.id for j in await store.claim_jobs("webhook", now=400, lease_until=500, limit=10)] == ["a1"]
    assert {j.id: j.state for j in await store.get_jobs(["a2", "b1"])} == {
        "a2": JobState.CANCELLED,
        "b1": JobState.DONE,
    }


async def test_a_groups_pending_jobs_are_listed_and_finished_together(store: Store) -> None:
    await store.add_jobs([job("i1", group="digest:bob"), job("i2", group="digest:bob"), job("x", group="o")])
    assert [j.id for j in await store.group_jobs("webhook", "digest:bob")] == ["i1", "i2"]
    await store.finish_jobs(["i1", "i2"], JobState.DONE)
    assert await store.group_jobs("webhook", "digest:bob") == []
    states = {j.id: j.state for j in await store.get_jobs(["i1", "x"])}
    assert states == {"i1": JobState.DONE, "x": JobState.PENDING}


async def test_jobs_stored_with_their_notifications_and_preferences_kept(store: Store) -> None:
    await store.add_notifications([note("n1")], DUE, [job("n1:escalation")])
    assert [j.id for j in await store.get_jobs(["n1:escalation"])] == ["n1:escalation"]
    assert await store.load_preferences("alice") is None
    await store.save_preferences("alice", {"quiet_hours": None})
    await store.save_preferences("alice", {"channels": {"billing": ["webhook"]}})
    assert await store.load_preferences("alice") == {"channels": {"billing": ["webhook"]}}


async def test_old_and_surplus_notifications_are_trimmed(store: Store) -> None:
    await store.add_notifications([note(f"n{i}", created_at=i) for i in range(1, 7)], DUE)
    await store.add_notifications([note("b", user="bob", created_at=10)], DUE)

    removed = await store.trim_notifications(older_than_ts=2, max_per_user=3)

    assert removed == 3
    assert [n.id for n in await store.list_notifications("alice", 10, None, False)] == ["n6", "n5", "n4"]
    assert len(await store.list_notifications("bob", 10, None, False)) == 1


async def test_idempotency_claims_run_a_request_once(store: Store) -> None:
    assert (await store.claim_idempotency_key("k", ts=100, stale_before=0)).state == "new"
    assert (await store.claim_idempotency_key("k", ts=101, stale_before=0)).state == "pending"

    await store.complete_idempotency_key("k", {"id": "e1"}, ts=102)
    done = await store.claim_idempotency_key("k", ts=103, stale_before=0)
    assert done.state == "done" and done.result == {"id": "e1"}

    # A claim whose holder died is taken over; a released one may run again.
    await store.claim_idempotency_key("dead", ts=10, stale_before=0)
    assert (await store.claim_idempotency_key("dead", ts=50, stale_before=20)).state == "new"
    await store.claim_idempotency_key("failed", ts=10, stale_before=0)
    await store.release_idempotency_key("failed")
    assert (await store.claim_idempotency_key("failed", ts=11, stale_before=0)).state == "new"

    assert await store.trim_idempotency_keys(older_than_ts=60) >= 1
    assert (await store.claim_idempotency_key("dead", ts=70, stale_before=0)).state == "new"


async def test_settings_are_kept(store: Store) -> None:
    assert await store.load_setting("refresh_interval") is None
    await store.save_setting("refresh_interval", '{"interval": 5}')
    await store.save_setting("refresh_interval", '{"interval": 6}')
    assert await store.load_setting("refresh_interval") == '{"interval": 6}'


async def test_revocations_last_until_they_end(store: Store) -> None:
    assert await store.revocations(now=1_000) == {}
    await store.revoke_user("mallory", revoked_at=1_000, until=5_000)
    await store.revoke_user("eve", revoked_at=1_500, until=2_000)
    assert await store.revocations(now=1_600) == {"mallory": 1_000, "eve": 1_500}
    assert await store.revocations(now=2_000) == {"mallory": 1_000}
    await store.revoke_user("mallory", revoked_at=3_000, until=9_000)  # revoked again: later
    assert await store.revocations(now=4_000) == {"mallory": 3_000}


async def test_what_is_stored_survives_a_reopen(store_url: str) -> None:
    if store_url == "memory://":
        pytest.skip("memory:// keeps nothing across restarts, by definition")
    first = open_store(store_url, Health())
    await first.open()
    await first.insert_task(task())
    await first.add_notifications([note("n1")], DUE)
    await first.revoke_user("mallory", revoked_at=1, until=10**13)
    await first.close()

    again = open_store(store_url, Health())
    await again.open()
    try:
        assert (await again.get_task("t1")) is not None
        assert await again.unread_count("alice") == 1
        assert await again.revocations(now=2) == {"mallory": 1}
    finally:
        await again.close()


async def test_a_database_from_before_redelivery_counts_its_notifications_delivered(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)  # the notifications table as 0.x versions made it
    old.executescript(
        "CREATE TABLE notifications (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,"
        " user_id TEXT NOT NULL, created_at INTEGER NOT NULL, read INTEGER NOT NULL DEFAULT 0,"
        " body BLOB NOT NULL);"
    )
    body = '{"id": "old", "user_id": "alice", "title": "kept", "body": null, "created_at": 1, "data": {}}'
    old.execute(
        "INSERT INTO notifications (id, user_id, created_at, body) VALUES ('old', 'alice', 1, ?)", (body,)
    )
    old.commit()
    old.close()

    store = open_store(f"sqlite:///{path}", Health())
    await store.open()
    try:
        assert [n.title for n in await store.list_notifications("alice", 10, None, False)] == ["kept"]
        assert await store.claim_undelivered(now=10**13, lease_until=10**14, limit=10) == []
        await store.add_notifications([note("new")], 5)
        assert [n.id for n in await store.claim_undelivered(now=10, lease_until=20, limit=10)] == ["new"]
    finally:
        await store.close()
