"""Receipts, escalation and webhooks, against a real webhook receiver that verifies every
signature: a notification nobody sees in time goes out once; one seen first does not; quiet
hours hold it (critical passes); a receiver that is down gets it later, in order."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from notifier import Settings
from notifier.auth import Role
from notifier.client import NotifierClientError, Subscriber
from tests.conftest import RunningServer, eventually, make_settings, start_server, stop_server, until
from tests.webhook_receiver import WebhookReceiver


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    hooks = WebhookReceiver()
    await hooks.start()
    yield hooks
    await hooks.stop()


@pytest.fixture
def server_settings(tmp_path: Path, receiver: WebhookReceiver) -> Settings:
    return make_settings(
        tmp_path,
        store_url=f"sqlite:///{tmp_path / 'notifier.db'}",
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
        webhook_allow_private=True,  # the receiver is on loopback
        webhook_retry_base_seconds=0.2,
        webhook_retry_max_seconds=0.5,
    )


async def notify(server: RunningServer, user_ids: list[str], title: str, **fields) -> list[str]:
    status, answer = await server.http(
        "POST",
        "/api/v1/notifications",
        server.token("svc", role=Role.PUBLISHER),
        json={"user_ids": user_ids, "title": title, **fields},
    )
    assert status == 201, answer
    return [n["id"] for n in answer["notifications"]]


async def receipts(server: RunningServer, notification_id: str) -> dict:
    status, answer = await server.http(
        "GET", f"/api/v1/notifications/{notification_id}/receipts", server.token("svc", role=Role.PUBLISHER)
    )
    assert status == 200, answer
    return answer


ESCALATE = {"after_seconds": 1, "channels": ["webhook"]}


async def test_receipts_say_who_got_saw_read_and_acted_on_what(server: RunningServer) -> None:
    alice = Subscriber(server.url, server.token("alice"))
    laptop = Subscriber(server.url, server.token("alice"))
    for device in (alice, laptop):
        await device.connect()
    try:
        (note,) = await notify(server, ["alice"], "deploy finished")

        async def both_delivered() -> bool:
            kinds = [r["kind"] for r in (await receipts(server, note))["receipts"]]
            return kinds.count("delivered") == 2

        await eventually(both_delivered, timeout=5)
        await alice.seen([note])
        await alice.actioned(note, "open")
        assert (await laptop.read([note]))["marked"] == [note]
        answer = await receipts(server, note)
        kinds = sorted(r["kind"] for r in answer["receipts"])
        assert kinds == ["actioned", "delivered", "delivered", "read", "seen"]
        assert next(r for r in answer["receipts"] if r["kind"] == "actioned")["action"] == "open"
        assert answer["escalation"] is None
        # Reporting again changes nothing; another user's notification is not theirs to report.
        assert (await alice.seen([note]))["recorded"] == 0
        (bobs,) = await notify(server, ["bob"], "not alice's")
        assert (await alice.seen([bobs]))["recorded"] == 0
    finally:
        for device in (alice, laptop):
            await device.close()

    status, body = await server.http("GET", f"/api/v1/notifications/{note}/receipts", server.token("alice"))
    assert status == 403 and body["error"]["code"] == "FORBIDDEN"
    publisher = server.token("svc", role=Role.PUBLISHER)
    bad = await server.http("GET", "/api/v1/notifications/no%20such/receipts", publisher)
    assert bad[0] == 422 and bad[1]["error"]["code"] == "INVALID_PAYLOAD"
    metrics = server.notifier.receipts
    assert metrics.stored == 5


async def test_a_thousand_deliveries_cost_a_few_receipt_writes(server: RunningServer) -> None:
    users = [f"u{i}" for i in range(10)]
    devices = [Subscriber(server.url, server.token(user)) for user in users]
    for device in devices:
        await device.connect()
    try:
        writes_before = server.notifier.receipts.writes
        for n in range(100):
            await notify(server, users, f"n{n}")
        await until(lambda: server.notifier.receipts.stored >= 1000, timeout=20)
        writes = server.notifier.receipts.writes - writes_before
        print(f"1000 delivered receipts in {writes} store writes")
        assert server.notifier.receipts.stored == 1000
        assert writes <= 250, writes  # one per loop iteration's reports, not one per receipt
    finally:
        for device in devices:
            await device.close()


async def test_an_offline_user_gets_a_signed_webhook_after_the_delay_once(
    server: RunningServer, receiver: WebhookReceiver
) -> None:
    sent = time.monotonic()
    (note,) = await notify(server, ["bob"], "your build broke", escalate=ESCALATE, data={"build": 7})
    await until(lambda: receiver.of_type("notification.unseen"), timeout=10)
    took = time.monotonic() - sent
    (hook,) = receiver.received
    assert hook.data["notification"]["id"] == note and hook.data["notification"]["data"] == {"build": 7}
    assert hook.id == f"{note}:escalation:webhook"
    assert 1.0 <= took < 4.0, took
    assert receiver.refused == 0
    escalation = (await receipts(server, note))["escalation"]
    assert escalation["state"] == "done"


async def test_seen_on_one_device_first_sends_nothing(
    server: RunningServer, receiver: WebhookReceiver
) -> None:
    alice = Subscriber(server.url, server.token("alice"))
    await alice.connect()
    try:
        (note,) = await notify(server, ["alice"], "seen in time", escalate=ESCALATE)
        await alice.seen([note])
    finally:
        await alice.close()
    assert (await receipts(server, note))["escalation"]["state"] == "cancelled"
    # A later escalation goes out: the cancelled one, due before it, never did.
    (marker,) = await notify(server, ["bob"], "marker", escalate=ESCALATE)
    await until(lambda: receiver.of_type("notification.unseen"), timeout=10)
    assert [r.data["notification"]["id"] for r in receiver.of_type("notification.unseen")] == [marker]


async def test_quiet_hours_hold_an_escalation_and_critical_ones_pass(
    server: RunningServer, receiver: WebhookReceiver
) -> None:
    now = datetime.now(UTC)
    start, end = (now - timedelta(hours=1)).strftime("%H:%M"), (now + timedelta(hours=1)).strftime("%H:%M")
    status, saved = await server.http(
        "PUT",
        "/api/v1/preferences",
        server.token("bob"),
        json={"quiet_hours": {"start": start, "end": end, "timezone": "UTC"}},
    )
    assert status == 200 and saved["quiet_hours"]["end"] == end
    (held,) = await notify(server, ["bob"], "can wait", escalate=ESCALATE)
    (urgent,) = await notify(server, ["bob"], "pager", escalate=ESCALATE, critical=True)
    await until(lambda: receiver.received, timeout=10)
    assert [r.data["notification"]["id"] for r in receiver.received] == [urgent]

    async def postponed() -> dict | None:
        escalation = (await receipts(server, held))["escalation"]
        return escalation if escalation["last_error"] == "quiet hours" else None

    escalation = await eventually(postponed, timeout=5)
    assert escalation["state"] == "pending" and escalation["attempts"] == 0
    quiet_end = datetime.combine(now.date(), datetime.strptime(end, "%H:%M").time(), UTC)
    if quiet_end <= now:
        quiet_end += timedelta(days=1)
    assert escalation["due_at"] == int(quiet_end.timestamp() * 1000)  # held until they end


async def test_categories_go_to_the_channels_the_user_chose(
    server: RunningServer, receiver: WebhookReceiver
) -> None:
    bob = Subscriber(server.url, server.token("bob"))
    await bob.connect()
    try:
        saved = await bob.call("preferences.set", {"channels": {"marketing": []}})
        assert saved["preferences"]["channels"] == {"marketing": []}
        assert (await bob.call("preferences.get"))["preferences"]["channels"] == {"marketing": []}
        with pytest.raises(NotifierClientError) as refused:
            await bob.call("preferences.set", {"quiet_hours": {"start": "25:00", "end": "07:00"}})
        assert refused.value.code == "INVALID_PAYLOAD"
        with pytest.raises(NotifierClientError) as zone:
            quiet = {"start": "22:00", "end": "07:00", "timezone": "Mars/Base"}
            await bob.call("preferences.set", {"quiet_hours": quiet})
        assert zone.value.code == "INVALID_PAYLOAD" and "time zone" in zone.value.message
    finally:
        await bob.close()
    (muted,) = await notify(server, ["bob"], "a sale", escalate=ESCALATE, category="marketing")
    (sent,) = await notify(server, ["bob"], "an outage", escalate=ESCALATE, category="ops")
    await until(lambda: receiver.of_type("notification.unseen"), timeout=10)
    assert [r.data["notification"]["id"] for r in receiver.of_type("notification.unseen")] == [sent]
    assert (await receipts(server, muted))["escalation"]["state"] == "done"  # ran, to no channel


async def test_a_receiver_that_is_down_gets_everything_later_in_order(
    server: RunningServer, receiver: WebhookReceiver
) -> None:
    receiver.down = True
    notes = [(await notify(server, ["bob"], f"n{n}", escalate=ESCALATE))[0] for n in range(5)]
    await until(lambda: receiver.attempts_while_down >= 3, timeout=15)
    assert receiver.received == []
    receiver.down = False
    await until(lambda: len(receiver.received) == 5, timeout=15)
    assert [r.data["notification"]["id"] for r in receiver.received] == notes, "out of order"
    assert receiver.repeats == 0


async def test_a_delivery_that_keeps_failing_is_listed_and_can_be_replayed(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = make_settings(
        tmp_path,
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
        webhook_allow_private=True,
        webhook_max_attempts=2,
        webhook_retry_base_seconds=0.1,
    )
    server, runner = await start_server(settings)
    admin = server.token("ops", role=Role.ADMIN)
    try:
        receiver.down = True
        (note,) = await notify(server, ["bob"], "lost cause", escalate=ESCALATE)

        async def failed() -> list | None:
            status, body = await server.http("GET", "/api/v1/webhooks/failures", admin)
            assert status == 200
            return body["failures"] or None

        (failure,) = await eventually(failed, timeout=15)
        assert failure["attempts"] == 1 and failure["last_error"] == "HTTP 503"
        assert failure["payload"]["data"]["notification"]["id"] == note
        receiver.down = False
        status, body = await server.http("POST", f"/api/v1/webhooks/failures/{failure['id']}/replay", admin)
        assert (status, body) == (200, {"replayed": failure["id"]})
        await until(lambda: receiver.received, timeout=10)
        again = await server.http("POST", f"/api/v1/webhooks/failures/{failure['id']}/replay", admin)
        assert again[0] == 404
        assert (await server.http("GET", "/api/v1/webhooks/failures", server.token("bob")))[0] == 403
    finally:
        await stop_server(server, runner)


async def test_channels_that_are_not_configured_are_refused(tmp_path: Path) -> None:
    server, runner = await start_server(make_settings(tmp_path))
    try:
        status, body = await server.http(
            "POST",
            "/api/v1/notifications",
            server.token("svc", role=Role.PUBLISHER),
            json={"user_ids": ["bob"], "title": "t", "escalate": ESCALATE},
        )
        assert status == 422 and "webhook is not configured" in body["error"]["message"]
        admin = server.token("ops", role=Role.ADMIN)
        status, body = await server.http("GET", "/api/v1/webhooks/failures", admin)
        assert status == 404
    finally:
        await stop_server(server, runner)


async def test_a_node_killed_during_a_batch_of_500_escalations_leaves_each_sent_once(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Two nodes on PostgreSQL and Redis share the escalations; one is killed (-9) while the
    batch goes out. What it had claimed is taken over once its lease ends; the receiver,
    dropping repeats by `webhook-id`, gets each notification once."""
    from tests.cluster import cluster
    from tests.test_cluster import token

    receiver.delay = 0.2  # a slow receiver: the batch is still going out when the node dies
    env = {
        "NOTIFIER_WEBHOOK_URL": receiver.url,
        "NOTIFIER_WEBHOOK_SECRET": receiver.secret,
        "NOTIFIER_WEBHOOK_ALLOW_PRIVATE": "true",
        "NOTIFIER_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
        "NOTIFIER_JOB_LEASE_SECONDS": "2",
    }
    async with cluster(tmp_path, nodes=2, **env) as running:
        doomed, survivor = running.nodes
        users = [f"user{i}" for i in range(500)]
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{doomed.url}/api/v1/notifications",
                json={"user_ids": users, "title": "batch", "escalate": ESCALATE},
                headers={"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"},
            ) as response,
        ):
            assert response.status == 201
            notes = {n["id"] for n in (await response.json())["notifications"]}
        await until(lambda: len(receiver.received) >= 50, timeout=20)
        assert len(receiver.received) < 500, "the batch was over before the kill"
        assert doomed.process is not None
        doomed.process.kill()
        await doomed.process.wait()
        killed_at = len(receiver.received)
        await until(lambda: len(receiver.received) == 500, timeout=60)
        got = [r.data["notification"]["id"] for r in receiver.received]
        assert sorted(got) == sorted(notes), "each notification exactly once"
        assert receiver.refused == 0
        print(f"killed after {killed_at} of 500; {receiver.repeats} repeats dropped by webhook-id")
        assert survivor.process is not None and survivor.process.returncode is None


async def test_the_application_is_told_when_a_user_comes_online_and_goes_offline(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = make_settings(
        tmp_path,
        webhook_url=receiver.url,
        webhook_secret=receiver.secret,
        webhook_allow_private=True,
        presence_grace_seconds=0.5,
    )
    server, runner = await start_server(settings)
    try:
        phone = Subscriber(server.url, server.token("alice"))
        laptop = Subscriber(server.url, server.token("alice"))
        await phone.connect()
        await laptop.connect()  # a second device: no second user.online
        await until(lambda: receiver.of_type("user.online"), timeout=10)
        await phone.close()
        await laptop.close()
        went = time.monotonic()
        await until(lambda: receiver.of_type("user.offline"), timeout=10)
        assert time.monotonic() - went >= 0.5  # after the grace
        assert [(r.type, r.data) for r in receiver.received] == [
            ("user.online", {"user_id": "alice"}),
            ("user.offline", {"user_id": "alice"}),
        ]
    finally:
        await stop_server(server, runner)


async def test_a_webhook_url_that_is_not_http_or_is_private_is_refused_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from notifier.app import create_app
    from notifier.errors import StartupError
    from tests.webhook_receiver import SECRET as WEBHOOK_SECRET

    with pytest.raises(ValidationError, match="http:// or https://"):
        make_settings(tmp_path, webhook_url="ftp://hooks.example.com/x", webhook_secret=WEBHOOK_SECRET)
    with pytest.raises(ValidationError, match="NOTIFIER_WEBHOOK_SECRET is required"):
        make_settings(tmp_path, webhook_url="https://hooks.example.com/x")
    with pytest.raises(ValidationError, match="whsec_"):
        make_settings(tmp_path, webhook_url="https://hooks.example.com/x", webhook_secret="not base64!")
    for private in ("http://127.0.0.1:9/x", "http://169.254.169.254/latest", "http://10.0.0.7/hook"):
        settings = make_settings(tmp_path, webhook_url=private, webhook_secret=WEBHOOK_SECRET)
        with pytest.raises(StartupError, match=r"NOTIFIER_WEBHOOK_URL: .*non-public address"):
            create_app(settings)


async def test_two_nodes_send_each_channel_once_and_a_seen_on_the_other_node_cancels(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Redis and PostgreSQL, two nodes: the user is offline; one notification escalates to a
    webhook and a push, each arriving once; another, seen through the other node, goes
    nowhere."""
    from py_vapid import Vapid02

    from tests.cluster import cluster
    from tests.push_service import PushService
    from tests.test_cluster import token

    vapid = Vapid02()
    vapid.generate_keys()
    pushes = PushService()
    await pushes.start()
    env = {
        "NOTIFIER_WEBHOOK_URL": receiver.url,
        "NOTIFIER_WEBHOOK_SECRET": receiver.secret,
        "NOTIFIER_WEBHOOK_ALLOW_PRIVATE": "true",
        "NOTIFIER_VAPID_PRIVATE_KEY": vapid.private_pem().decode(),
        "NOTIFIER_VAPID_SUBJECT": "mailto:ops@example.com",
        "NOTIFIER_PUSH_ALLOW_PRIVATE": "true",
    }
    try:
        async with cluster(tmp_path, nodes=2, **env) as running, aiohttp.ClientSession() as http:
            a, b = running.nodes
            phone = pushes.device("phone")
            bob = {"Authorization": f"Bearer {token('bob')}"}
            async with http.post(
                f"{b.url}/api/v1/push/subscriptions", json=phone.subscription(), headers=bob
            ) as r:
                assert r.status == 201
            publisher = {"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"}
            escalate = {"after_seconds": 1, "channels": ["webhook", "push"]}
            webhook_only = {**escalate, "channels": ["webhook"]}
            notes = []
            for title in ("seen elsewhere", "unseen"):
                async with http.post(
                    f"{a.url}/api/v1/notifications",
                    json={"user_ids": ["bob"], "title": title, "escalate": escalate},
                    headers=publisher,
                ) as answer:
                    notes.append((await answer.json())["notifications"][0]["id"])
            seen, unseen = notes
            async with http.post(
                f"{b.url}/api/v1/notifications/{seen}/receipts", json={"kind": "seen"}, headers=bob
            ) as answer:
                assert (await answer.json()) == {"recorded": 1}
            await until(lambda: receiver.of_type("notification.unseen") and phone.shown, timeout=15)
            # Both nodes run escalations; give a stray second send the time to show up.
            async with http.post(
                f"{b.url}/api/v1/notifications",
                json={
                    "user_ids": ["carol"],
                    "title": "marker",
                    "escalate": webhook_only,
                },
                headers=publisher,
            ) as answer:
                assert answer.status == 201
            await until(lambda: len(receiver.of_type("notification.unseen")) == 2, timeout=15)
            hooks = [r.data["notification"]["id"] for r in receiver.of_type("notification.unseen")]
            assert hooks[0] == unseen and len(hooks) == 2 and receiver.repeats == 0
            assert [m["id"] for m in phone.shown] == [unseen]
    finally:
        await pushes.stop()
