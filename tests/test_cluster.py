"""Many nodes, one service: real processes sharing Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role, issue_token
from notifier.client import NotifierClientError, Subscriber, Worker
from tests.cluster import Cluster, PostgresServer, RedisServer, cluster
from tests.conftest import ADMIN, SECRET, eventually, until
from tests.faults import SilencingProxy

PUBLISHER = issue_token(SECRET, "HS256", "svc", role=Role.PUBLISHER)


def token(user: str, projects: list[str] | None = None, role: Role = Role.USER) -> str:
    return issue_token(SECRET, "HS256", user, role=role, projects=projects or [])


async def test_a_subscriber_on_one_node_gets_every_event_published_on_another(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        alice = Subscriber(b.url, token("alice", ["p1"]))
        ticks: list[dict] = []
        notes: list[dict] = []
        alice.on("tick", ticks.append)
        alice.on("notification", notes.append)
        await alice.connect()
        await alice.subscribe(["project:p1"])
        worker = Worker(a.url, token("w", role=Role.PUBLISHER))
        await worker.connect()
        try:
            for n in range(20):
                await worker.publish("project:p1", "tick", {"n": n})
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{a.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": "hi"},
                    headers={"Authorization": f"Bearer {PUBLISHER}"},
                ) as response,
            ):
                assert response.status == 201
            await until(lambda: len(ticks) == 20 and notes, timeout=10)
            assert [t["data"]["n"] for t in ticks] == list(range(20))
            assert [t["offset"] for t in ticks] == list(range(1, 21))
            assert notes[0]["data"]["title"] == "hi"
            unread = await alice.call("notifications.list", {})
            assert unread["unread"] == 1
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"{b.url}/api/v1/status", headers=ADMIN) as response,
            ):
                status = await response.json()
            assert status["cluster"]["broker"] == "redis"
        finally:
            await worker.close()
            await alice.close()


async def test_the_all_projects_feed_reaches_across_nodes(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        ops = Subscriber(b.url, token("ops", ["*"]))
        created: list[str] = []
        ops.on("task.created", lambda event: created.append(event["data"]["project_id"]))
        worker = Worker(a.url, token("w", role=Role.PUBLISHER))
        try:
            await ops.connect()
            await ops.subscribe(["project:*"])
            await worker.connect()
            for project in ("p1", "p2", "p3"):  # rooms no connection on B follows
                await worker.create_task(project)
            await until(lambda: sorted(created) == ["p1", "p2", "p3"], timeout=10)
        finally:
            await worker.close()
            await ops.close()


class Recorder:
    """A Subscriber that records every tick it is sent (before its own de-duplication) and
    every room it was told to reload."""

    def __init__(self, url: str, name: str, room: str, **options) -> None:
        self.name, self.room = name, room
        self.subscriber = Subscriber(
            url, lambda: token(name, ["p1"]), reconnection_delay=0.1, reconnection_delay_max=0.5, **options
        )
        self.raw: list[tuple[str, int]] = []
        self.resets: list[tuple[str, str]] = []
        self.ticks: list[dict] = []
        accept = self.subscriber._accept

        def recording_accept(envelope: dict) -> bool:
            if envelope.get("type") == "tick":
                self.raw.append((envelope["epoch"], envelope["offset"]))
            return accept(envelope)

        self.subscriber._accept = recording_accept
        self.subscriber.on("tick", self.ticks.append)
        self.subscriber.on_reset(lambda room, reason: self.resets.append((room, reason)))

    async def start(self) -> None:
        await self.subscriber.connect()
        await self.subscriber.subscribe([self.room])

    def offsets(self) -> list[int]:
        return [offset for _, offset in self.raw]


async def publish_many(url: str, count: int, start: int = 0, room: str = "project:p1") -> list[int]:
    """Publish `count` ticks one after another through `url`; the acknowledged ns."""
    acked = []
    worker = Worker(url, token(f"w-{start}", role=Role.PUBLISHER), reconnection_delay=0.1)
    await worker.connect()
    try:
        for n in range(start, start + count):
            try:
                await worker.publish(room, "tick", {"n": n})
                acked.append(n)
            except Exception:  # an outage answers with a code; go on
                await asyncio.sleep(0.05)
    finally:
        await worker.close()
    return acked


async def test_killed_subscriptions_are_noticed_and_the_gap_filled(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        watcher = Recorder(b.url, "alice", "project:p1")
        await watcher.start()
        try:
            publishing = asyncio.create_task(publish_many(a.url, 300))
            for _ in range(3):
                await asyncio.sleep(0.15)
                await running.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            acked = await publishing
            await until(lambda: watcher.offsets()[-1:] == [300], timeout=15)
            assert len(acked) == 300
            assert watcher.offsets() == list(range(1, 301)), "lost, duplicated or out of order"
            assert watcher.resets == []
        finally:
            await watcher.subscriber.close()


async def test_a_silent_subscription_is_noticed_and_the_gap_filled(tmp_path: Path) -> None:
    """The subscription's connection stays open but nothing arrives on it any more."""
    async with cluster(tmp_path, nodes=1) as running:
        proxy = SilencingProxy(running.redis.port)
        await proxy.start()
        # The second node reaches Redis through the proxy; the first directly.
        b = await running.add_node(NOTIFIER_BROKER_URL=proxy.url)
        a = running.nodes[0]
        watcher = Recorder(b.url, "alice", "project:p1")
        await watcher.start()
        try:
            await publish_many(a.url, 20)
            await until(lambda: len(watcher.raw) == 20, timeout=10)
            assert proxy.silence_subscriptions() >= 1
            acked = await publish_many(a.url, 30, start=20)
            await until(lambda: len(watcher.raw) >= 50, timeout=15)
            assert len(acked) == 30
            assert watcher.offsets() == list(range(1, 51)), "lost, duplicated or out of order"
            assert "went silent" in (tmp_path / "node1.log").read_text()
        finally:
            await watcher.subscriber.close()
            await proxy.stop()


async def test_redis_losing_its_data_is_told_never_hidden(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        watchers = [Recorder(node.url, f"user{i}", "project:p1") for i, node in enumerate((a, b))]
        for watcher in watchers:
            await watcher.start()
        try:
            await publish_many(a.url, 10)
            await until(lambda: all(len(w.raw) == 10 for w in watchers), timeout=10)

            await running.redis.stop()
            refused = await publish_many(a.url, 3, start=10)
            await running.redis.start()  # empty: nothing was kept
            await asyncio.sleep(1.5)
            acked = await publish_many(a.url, 10, start=100)

            assert refused == [], "nothing was acknowledged while Redis was down"
            for watcher in watchers:
                await until(
                    lambda w=watcher: len([t for t in w.ticks if t["data"]["n"] >= 100]) == len(acked),
                    timeout=15,
                )
                assert ("project:p1", "epoch_changed") in watcher.resets, watcher.name
                # Within each epoch, consecutive offsets from where the client stood: no gap.
                for epoch in {epoch for epoch, _ in watcher.raw}:
                    offsets = [o for e, o in watcher.raw if e == epoch]
                    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
        finally:
            for watcher in watchers:
                await watcher.subscriber.close()


async def test_task_progress_through_several_nodes_never_goes_backwards(tmp_path: Path) -> None:
    async with cluster(
        tmp_path, nodes=2, NOTIFIER_WORKER_RATE_PER_SECOND="100000", NOTIFIER_WORKER_RATE_BURST="10000"
    ) as running:
        a, b = running.nodes
        page = Subscriber(b.url, token("alice", ["p1"]))
        events: list[dict] = []
        page.on(
            "*", lambda envelope: events.append(envelope) if envelope["type"].startswith("task.") else None
        )
        await page.connect()
        workers = [Worker(node.url, token(f"w{i}", role=Role.PUBLISHER)) for i, node in enumerate((a, b))]
        for worker in workers:
            await worker.connect()
        try:
            await workers[0].create_task("p1", id="t")
            await page.subscribe(["task:t"])

            async def report(worker: Worker, values: range) -> None:
                for value in values:
                    with contextlib.suppress(NotifierClientError):  # behind the other: CONFLICT
                        await worker.task_progress("t", value / 10)

            await asyncio.gather(report(workers[0], range(0, 1000, 2)), report(workers[1], range(1, 1000, 2)))
            await workers[1].complete_task("t", result="done")
            await until(lambda: any(e["type"] == "task.completed" for e in events), timeout=10)

            progress = [e["data"]["progress"] for e in events if e["type"] == "task.progress"]
            assert progress == sorted(progress), "progress went backwards"
            assert events[-1]["type"] == "task.completed"
            assert [e["data"]["version"] for e in events] == sorted(e["data"]["version"] for e in events)
        finally:
            for worker in workers:
                await worker.close()
            await page.close()


async def test_refresh_once_per_interval_and_config_everywhere(tmp_path: Path) -> None:
    async with cluster(
        tmp_path, nodes=3, NOTIFIER_REFRESH_INTERVAL_SECONDS="0", NOTIFIER_REFRESH_MIN_INTERVAL_SECONDS="0.5"
    ) as running:
        clients = [Subscriber(node.url, token(f"u{i}")) for i, node in enumerate(running.nodes)]
        refreshes: list[list[float]] = [[] for _ in clients]
        updates: list[list[dict]] = [[] for _ in clients]
        for i, client in enumerate(clients):
            client.on("refresh", lambda env, i=i: refreshes[i].append(time.monotonic()))
            client.on("config.updated", lambda env, i=i: updates[i].append(env["data"]))
            await client.connect()
        try:
            admin = Subscriber(running.nodes[0].url, token("root", role=Role.ADMIN))
            await admin.connect()
            changed = time.monotonic()
            assert (await admin.call("config.set_refresh_interval", {"seconds": 1}))["refresh_interval"] == 1
            await until(lambda: all(updates), timeout=1.0)  # every node within a second
            await asyncio.sleep(3.6)
            await admin.close()
            for i in range(len(clients)):
                assert updates[i] == [{"refresh_interval": 1.0}], i
                assert 3 <= len(refreshes[i]) <= 4, (i, [t - changed for t in refreshes[i]])
            async with aiohttp.ClientSession() as http:
                for _ in range(30):  # node heartbeats come every second
                    async with http.get(f"{running.nodes[2].url}/api/v1/status", headers=ADMIN) as response:
                        status = await response.json()
                    if status["cluster"]["user_connections"] == 3:
                        break
                    await asyncio.sleep(0.2)
            assert status["refresh_interval"] == 1
            assert len(status["cluster"]["nodes"]) == 3
            assert status["cluster"]["user_connections"] == 3
        finally:
            for client in clients:
                await client.close()


async def test_a_retry_on_another_node_is_applied_once(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        replies = []
        for node in (a, b):
            worker = Subscriber(node.url, token("w", role=Role.PUBLISHER))
            worker.namespace = "/workers"
            worker.sio.handlers.pop("/", None)
            await worker.connect()
            replies.append(
                await worker.call(
                    "notify", {"user_ids": ["alice"], "title": "once", "idempotency_key": "order-77"}
                )
            )
            await worker.close()
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"{b.url}/api/v1/notifications?user_id=alice",
                headers={"Authorization": f"Bearer {token('root', role=Role.ADMIN)}"},
            ) as response,
        ):
            inbox = await response.json()
        assert replies[1]["duplicate"] is True
        assert replies[0]["notifications"] == replies[1]["notifications"]
        assert [n["title"] for n in inbox["notifications"]] == ["once"]


async def test_a_postgresql_restart_gives_coded_errors_then_normal_service(tmp_path: Path) -> None:
    postgres = PostgresServer()
    await postgres.init()
    await postgres.start()
    redis = RedisServer(tmp_path / "redis")
    await redis.start()
    running = Cluster(tmp_path, redis, postgres.url)
    try:
        node = await running.add_node()
        alice = Subscriber(node.url, token("alice"))
        received: list[str] = []
        alice.on("notification", lambda env: received.append(env["data"]["id"]))
        await alice.connect()
        acked, refused = set(), []
        async with aiohttp.ClientSession() as http:

            async def notify(title: str) -> None:
                async with http.post(
                    f"{node.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": title},
                    headers={"Authorization": f"Bearer {PUBLISHER}"},
                ) as response:
                    body = await response.json()
                    if response.status == 201:
                        acked.add(body["notifications"][0]["id"])
                    else:
                        refused.append((response.status, body["error"]["code"]))

            for n in range(5):
                await notify(f"before {n}")
            await postgres.stop()
            for n in range(5):
                await notify(f"during {n}")
            async with http.get(f"{node.url}/readyz") as response:
                assert response.status == 503
            await postgres.start()
            for _ in range(50):
                async with http.get(f"{node.url}/readyz") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.1)
            for n in range(5):
                await notify(f"after {n}")

        assert refused and set(refused) == {(503, "STORE_UNAVAILABLE")}
        assert len(acked) == 10
        await until(lambda: len(received) == 10, timeout=10)
        assert set(received) == acked, "only what was stored was delivered"
        await alice.close()
    finally:
        await running.stop()
        await redis.stop()
        await postgres.stop()
        postgres.remove()


async def test_readiness_returns_with_the_next_redis_call_that_works(tmp_path: Path) -> None:
    """One killed Redis connection must not take a node out of rotation for good: readiness
    follows the next call that works, whichever call failed."""
    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        async with aiohttp.ClientSession() as http:

            async def ready() -> bool:
                async with http.get(node.url + "/readyz") as response:
                    return response.status == 200

            publishing = asyncio.create_task(publish_many(node.url, 400))
            await asyncio.sleep(0.2)
            await running.redis.command("CLIENT", "KILL", "TYPE", "normal")
            killed_at = time.monotonic()
            samples: list[tuple[float, bool]] = []
            while time.monotonic() - killed_at < 2.0:
                samples.append((time.monotonic() - killed_at, await ready()))
                await asyncio.sleep(0.05)
            await publishing
            assert samples[-1][1], "not ready 2 s after one killed connection"
            unready = [at for at, ok in samples if not ok]
            assert not unready or max(unready) < 1.0, f"unready until {max(unready):.2f} s after the kill"


async def test_terminated_postgresql_sessions_answer_with_a_code_never_internal(tmp_path: Path) -> None:
    import asyncpg

    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        statuses: list[int] = []
        async with aiohttp.ClientSession() as http:

            async def notify_many(count: int) -> None:
                for n in range(count):
                    async with http.post(
                        f"{node.url}/api/v1/notifications",
                        json={"user_ids": ["alice"], "title": f"n{n}"},
                        headers={"Authorization": f"Bearer {PUBLISHER}"},
                    ) as response:
                        statuses.append(response.status)
                        if response.status != 201:
                            assert (await response.json())["error"]["code"] == "STORE_UNAVAILABLE"

            writing = asyncio.create_task(notify_many(300))
            admin = await asyncpg.connect(running.store_url)
            try:
                for _ in range(3):
                    await asyncio.sleep(0.1)
                    await admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
            finally:
                await admin.close()
            await writing
            assert set(statuses) <= {201, 503}, f"answers other than stored or unavailable: {set(statuses)}"

            async def ready() -> bool:
                async with http.get(node.url + "/readyz") as response:
                    return response.status == 200

            await eventually(ready, timeout=10)
        assert "Traceback" not in (tmp_path / "node0.log").read_text()


async def test_the_store_password_is_in_no_log_line(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=0) as running:
        assert running.store_url.startswith("postgresql://postgres@")
        with_password = running.store_url.replace("postgres@", "postgres:hunter2-secret@", 1)
        node = await running.add_node(NOTIFIER_STORE_URL=with_password)  # trust auth: any password
        await publish_many(node.url, 3)
        log = (tmp_path / "node0.log").read_text()
        assert "hunter2-secret" not in log
        assert "postgres:***@" in log  # the start-up line names the store, masked


async def test_a_node_following_thousands_of_rooms_resubscribes_in_bounded_time(tmp_path: Path) -> None:
    """After its subscription is killed, a node following 2,000 rooms over a 20 ms link catches
    up in a few round trips (not one per room) and delivers live again within 2 s."""
    async with cluster(tmp_path, nodes=1) as running:
        proxy = SilencingProxy(running.redis.port)
        await proxy.start()
        b = await running.add_node(NOTIFIER_BROKER_URL=proxy.url)
        a = running.nodes[0]
        rooms = [f"project:many{n}" for n in range(2000)]
        follower = Subscriber(b.url, issue_token(SECRET, "HS256", "ops", projects=["*"]))
        ticks: list[dict] = []
        follower.on("tick", ticks.append)
        await follower.connect()
        try:
            for start in range(0, len(rooms), 100):
                await follower.subscribe(rooms[start : start + 100])
            proxy.delay = 0.02
            await running.redis.command("CLIENT", "KILL", "TYPE", "pubsub")
            killed = time.monotonic()
            worker = Worker(a.url, token("w", role=Role.PUBLISHER))
            await worker.connect()
            try:

                async def delivered_live() -> bool:
                    await worker.publish("project:many1999", "tick", {"at": time.monotonic()})
                    return any(t["room"] == "project:many1999" for t in ticks)

                await eventually(delivered_live, timeout=10)
            finally:
                await worker.close()
            assert time.monotonic() - killed < 2.0, f"live again after {time.monotonic() - killed:.1f} s"
        finally:
            await follower.close()
            await proxy.stop()


def told_or_delivered(watcher: Recorder, acked: list[int]) -> list[int]:
    """The acknowledged ticks the client neither received nor was told it may have missed:
    silent losses. (Told: a reset of the room after the tick was acknowledged.)"""
    received = {t["data"]["n"] for t in watcher.ticks}
    if ("project:p1", "epoch_changed") in watcher.resets:
        return []  # told to reload: what it missed is in the store, not lost unannounced
    return [n for n in acked if n not in received]


@pytest.mark.parametrize("subscribers_on", ["publishing-node", "other-node"])
async def test_redis_restored_from_an_older_snapshot_loses_nothing_silently(
    tmp_path: Path, subscribers_on: str
) -> None:
    """Redis comes back from an RDB snapshot taken mid-stream: offsets handed out after the
    snapshot would be handed out again. Every client that was connected, or comes back with a
    position, is either given every acknowledged event or told it cannot recover."""
    async with cluster(tmp_path, nodes=2) as running:
        a, b = running.nodes
        node = a if subscribers_on == "publishing-node" else b
        live = Recorder(node.url, "alice", "project:p1")
        away = Recorder(node.url, "bob", "project:p1")
        for watcher in (live, away):
            await watcher.start()
        try:
            acked = await publish_many(a.url, 20)
            await running.redis.command("SAVE")  # the snapshot Redis will come back from
            acked += await publish_many(a.url, 20, start=20)
            await until(lambda: len(away.raw) >= 40 and len(live.raw) >= 40, timeout=10)
            await away.subscriber.close()  # bob is away, positioned at offset 40

            await running.redis.stop()  # killed; it saves nothing more
            await running.redis.start()  # it loads the snapshot (dump.rdb): offsets 1..20 only
            after = await publish_many(a.url, 20, start=100)
            assert after, "nothing could be published after Redis came back"
            acked += after
            # Back, asking to resume from offset 40 (again if refused with STORE_UNAVAILABLE,
            # as a client does: the node's first Redis call after the restart may find a
            # pooled connection that Redis closed).
            for attempt in range(3):
                try:
                    await away.subscriber.connect()
                    break
                except NotifierClientError as exc:
                    if exc.code != "STORE_UNAVAILABLE" or attempt == 2:
                        raise
                    await asyncio.sleep(0.2)

            for watcher in (live, away):
                # Both stood past what Redis came back with: both are told, none silently wrong.
                await until(lambda w=watcher: ("project:p1", "epoch_changed") in w.resets, timeout=10)
                assert told_or_delivered(watcher, acked) == [], watcher.name
            # And the room goes on, in its new epoch, for everyone.
            last = await publish_many(a.url, 1, start=200)
            for watcher in (live, away):
                await until(lambda w=watcher: 200 in {t["data"]["n"] for t in w.ticks}, timeout=10)
            assert last == [200]
            epochs = {epoch for epoch, _ in live.raw}
            assert len(epochs) == 2, "the rewound history was given a new epoch"
        finally:
            for watcher in (live, away):
                await watcher.subscriber.close()


async def test_an_idempotent_publish_is_appended_once_even_when_its_completion_was_lost(
    tmp_path: Path,
) -> None:
    """A node dies after Redis appended the event and before the key's answer was stored; the
    retry, once the claim is stale, runs again: Redis itself answers the first offset."""
    import asyncpg

    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        worker = Worker(node.url, token("w", role=Role.PUBLISHER))
        await worker.connect()
        try:
            first = await worker.call(
                "publish", {"room": "project:p1", "type": "tick", "idempotency_key": "k"}
            )
            db = await asyncpg.connect(running.store_url)
            try:
                await db.execute("UPDATE notifier_idempotency SET result = NULL, ts = 0")
            finally:
                await db.close()
            retry = await worker.call(
                "publish", {"room": "project:p1", "type": "tick", "idempotency_key": "k"}
            )
        finally:
            await worker.close()
        assert (retry["offset"], retry["id"]) == (first["offset"], first["id"])
        assert await running.redis.command("XLEN", "notifier:log:project:p1") == 1


async def test_a_redis_call_that_times_out_after_sending_is_answered_as_unknown_and_retried_safely(
    tmp_path: Path,
) -> None:
    """Redis runs the append but its answer comes too late: the publisher is told the outcome
    is unknown (never "nothing was stored"), and the retry with the same key appends nothing."""
    async with cluster(tmp_path, nodes=0) as running:
        proxy = SilencingProxy(running.redis.port)
        await proxy.start()
        node = await running.add_node(NOTIFIER_BROKER_URL=proxy.url)
        headers = {"Authorization": f"Bearer {PUBLISHER}", "Idempotency-Key": "unknown-1"}
        body = {"room": "project:p1", "type": "tick", "data": {"n": 1}}
        async with aiohttp.ClientSession() as http:
            proxy.delay = 6.0  # past the broker's 5 s socket timeout
            async with http.post(f"{node.url}/api/v1/publish", json=body, headers=headers) as response:
                status, answer = response.status, await response.json()
            assert (status, answer["error"]["code"]) == (503, "OUTCOME_UNKNOWN")
            proxy.delay = 0.0

            async def retried() -> dict | None:
                async with http.post(f"{node.url}/api/v1/publish", json=body, headers=headers) as again:
                    return await again.json() if again.status == 201 else None

            first = await eventually(retried, timeout=20)
        assert first["offset"] == 1
        assert await running.redis.command("XLEN", "notifier:log:project:p1") == 1
        await proxy.stop()


def notifications_seen(subscriber: Subscriber) -> list[str]:
    seen: list[str] = []
    subscriber.on("notification", lambda event: seen.append(event["data"]["title"]))
    return seen


async def test_a_notification_stored_while_redis_is_down_is_answered_stored_and_delivered_later(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        alice = Subscriber(node.url, token("alice"))
        seen = notifications_seen(alice)
        await alice.connect()
        headers = {"Authorization": f"Bearer {PUBLISHER}"}
        try:
            async with aiohttp.ClientSession() as http:
                await running.redis.stop()  # PostgreSQL stores it; Redis cannot deliver it now
                async with http.post(
                    f"{node.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": "hello"},
                    headers=headers,
                ) as response:
                    assert response.status == 201, await response.text()
                await running.redis.start()
                # Delivered by the redelivery sweep once Redis is back, once.
                await until(lambda: seen == ["hello"], timeout=30)
                async with http.post(
                    f"{node.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": "marker"},
                    headers=headers,
                ) as response:
                    assert response.status == 201
                await until(lambda: "marker" in seen, timeout=10)
                assert seen == ["hello", "marker"]
                admin = {"Authorization": f"Bearer {issue_token(SECRET, 'HS256', 'root', role=Role.ADMIN)}"}
                async with http.get(
                    f"{node.url}/api/v1/notifications?user_id=alice", headers=admin
                ) as listed:
                    inbox = await listed.json()
            assert [n["title"] for n in inbox["notifications"]] == ["marker", "hello"]
            assert await running.redis.command("XLEN", "notifier:log:user:alice") == 4  # 2 x (note, count)
        finally:
            await alice.close()


async def test_a_node_that_dies_before_delivering_what_it_stored_leaves_it_to_another(
    tmp_path: Path,
) -> None:
    async with cluster(tmp_path, nodes=1) as running:
        (survivor,) = running.nodes
        link = SilencingProxy(running.redis.port)
        await link.start()
        doomed = await running.add_node(NOTIFIER_BROKER_URL=link.url)
        alice = Subscriber(survivor.url, token("alice"))
        seen = notifications_seen(alice)
        await alice.connect()
        try:
            link.cut()  # the doomed node stores in PostgreSQL and cannot reach Redis
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    f"{doomed.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": "orphan"},
                    headers={"Authorization": f"Bearer {PUBLISHER}"},
                ) as response,
            ):
                assert response.status == 201, await response.text()
            assert doomed.process is not None
            doomed.process.kill()  # kill -9 before it could deliver
            await doomed.process.wait()
            await until(lambda: seen == ["orphan"], timeout=30)
        finally:
            await alice.close()
        assert await running.redis.command("XLEN", "notifier:log:user:alice") == 2


@pytest.mark.parametrize("broker", ["redis", "postgresql"])
async def test_a_role_that_owns_only_its_schema_is_enough_on_postgresql_15(
    tmp_path: Path, broker: str
) -> None:
    """docs/deployment.md's privileges, as PostgreSQL 15+ grants them: no CREATE on `public`; a
    role owning a schema of its own, named by NOTIFIER_POSTGRES_SCHEMA (the PostgreSQL broker's
    tables go there too)."""
    import secrets

    import asyncpg

    role = f"notifier_role_{secrets.token_hex(4)}"
    async with cluster(tmp_path, nodes=0, broker=broker) as running:
        admin = await asyncpg.connect(running.store_url)
        try:
            await admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            await admin.execute(f"CREATE SCHEMA notifier AUTHORIZATION {role}")
            as_role = running.store_url.replace("postgres@", f"{role}@", 1)
            brokers = {"NOTIFIER_BROKER_URL": as_role} if broker == "postgresql" else {}
            node = await running.add_node(
                NOTIFIER_STORE_URL=as_role, NOTIFIER_POSTGRES_SCHEMA="notifier", **brokers
            )
            async with aiohttp.ClientSession() as http:
                async with http.post(
                    f"{node.url}/api/v1/notifications",
                    json={"user_ids": ["alice"], "title": "stored"},
                    headers={"Authorization": f"Bearer {PUBLISHER}"},
                ) as response:
                    assert response.status == 201, await response.text()
            tables = await admin.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'notifier'")
            expected = {"notifier_notifications", "notifier_tasks"}
            if broker == "postgresql":
                expected |= {"notifier_room_events", "notifier_room_heads", "notifier_presence_rooms"}
            assert expected <= {t["tablename"] for t in tables}
            for node in running.nodes:
                await node.kill()
            running.nodes.clear()
        finally:
            await admin.execute(f"DROP OWNED BY {role}")
            await admin.execute(f"DROP ROLE IF EXISTS {role}")
            await admin.close()


async def test_a_position_a_client_makes_up_retires_no_history(tmp_path: Path) -> None:
    """Only what a node saw of a room counts as evidence of a rewind: a client claiming to stand
    far past the head is told it cannot recover, and everyone else's history stays as it is."""
    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        watcher = Recorder(node.url, "alice", "project:p1")
        await watcher.start()
        liar = Subscriber(node.url, token("mallory", ["p1"]))
        await liar.connect()
        try:
            await publish_many(node.url, 3)
            await until(lambda: len(watcher.raw) == 3, timeout=10)
            epoch = watcher.raw[0][0]
            reply = await liar.call(
                "subscribe",
                {"rooms": ["project:p1"], "since": {"project:p1": {"epoch": epoch, "offset": 10**9}}},
            )
            assert reply["rooms"]["project:p1"]["recovered"] is False
            await publish_many(node.url, 2, start=3)
            await until(lambda: len(watcher.raw) == 5, timeout=10)
            assert {e for e, _ in watcher.raw} == {epoch} and watcher.resets == []
        finally:
            await liar.close()
            await watcher.subscriber.close()
