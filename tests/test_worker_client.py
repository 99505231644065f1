"""The Python worker client: acks or coded errors, an ordered outbox that survives restarts."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from notifier.auth import Role, issue_token
from notifier.client import NotifierClientError, Subscriber, SyncWorker, Worker
from tests.conftest import SECRET, RunningServer, until
from tests.service_process import ServiceProcess


def publisher_token(user: str = "worker-1") -> str:
    return issue_token(SECRET, "HS256", user, role=Role.PUBLISHER)


async def test_operations_return_acks_or_raise_the_servers_code(server: RunningServer) -> None:
    worker = Worker(server.url, publisher_token())
    await worker.connect()
    try:
        task = await worker.create_task("p1", id="job", title="Import")
        assert task["status"] == "pending"
        assert (await worker.task_progress("job", 40))["progress"] == 40
        assert (await worker.complete_task("job", result={"rows": 2}))["status"] == "completed"
        with pytest.raises(NotifierClientError) as error:
            await worker.task_progress("job", 50)
        assert error.value.code == "CONFLICT"
        with pytest.raises(NotifierClientError) as error:
            await worker.publish("nowhere", "x")
        assert error.value.code == "INVALID_PAYLOAD"
    finally:
        await worker.close()


async def test_refused_connection_raises_with_the_code(server: RunningServer) -> None:
    user_token = issue_token(SECRET, "HS256", "alice")
    worker = Worker(server.url, user_token)
    with pytest.raises(NotifierClientError) as refused:
        await worker.connect()
    assert refused.value.code == "FORBIDDEN"


async def test_a_retried_operation_is_applied_once(server: RunningServer) -> None:
    watcher = await server.connect("alice", projects=["p1"])
    await watcher.call("subscribe", {"rooms": ["project:p1"]})
    raw = await server.worker()
    payload = {"room": "project:p1", "type": "paid", "data": {}, "idempotency_key": "order-17"}

    first = await raw.call("publish", payload)
    retry = await raw.call("publish", payload)
    await raw.call("publish", {"room": "project:p1", "type": "marker", "data": {}})

    assert retry == {**first, "duplicate": True}
    await watcher.next_event("marker")
    assert len(watcher.of_type("paid")) == 1


async def test_a_full_outbox_refuses_at_once(server: RunningServer) -> None:
    worker = Worker(server.url, publisher_token(), max_queue=2)
    waiting = [asyncio.ensure_future(worker.publish("*", "x")) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(NotifierClientError) as full:
        await worker.publish("*", "x")
    assert full.value.code == "QUEUE_FULL"
    await worker.close()
    for call in waiting:
        with pytest.raises(NotifierClientError):
            await call


async def test_publishes_survive_a_server_restart_in_order_and_once(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "data", SECRET)
    await service.start()
    watcher = Subscriber(
        service.url,
        lambda: issue_token(SECRET, "HS256", "alice", projects=["p1"]),
        reconnection_delay=0.1,
        reconnection_delay_max=0.3,
    )
    ticks: list[int] = []
    watcher.on("tick", lambda envelope: ticks.append(envelope["data"]["n"]))
    worker = Worker(service.url, publisher_token(), reconnection_delay=0.1, reconnection_delay_max=0.3)
    try:
        await watcher.connect()
        await watcher.subscribe(["project:p1"])
        await worker.connect()
        calls = [asyncio.ensure_future(worker.publish("project:p1", "tick", {"n": n})) for n in range(100)]
        await until(lambda: len(ticks) >= 30)
        await service.terminate()
        calls += [
            asyncio.ensure_future(worker.publish("project:p1", "tick", {"n": n})) for n in range(100, 200)
        ]
        await asyncio.sleep(0)
        assert worker.queued > 0, "publishes wait in the outbox while the server is down"
        await service.start()
        calls += [
            asyncio.ensure_future(worker.publish("project:p1", "tick", {"n": n})) for n in range(200, 300)
        ]
        replies = await asyncio.wait_for(asyncio.gather(*calls), 30)
        await until(lambda: len(ticks) >= 300)

        assert ticks == list(range(300))
        offsets = sorted(reply["offset"] for reply in replies)
        assert offsets == list(range(1, 301))
    finally:
        await worker.close()
        await watcher.close()
        await service.kill()


async def test_sync_worker_serves_plain_threads(server: RunningServer) -> None:
    watcher = await server.connect("alice", projects=["p1"])
    await watcher.call("subscribe", {"rooms": ["project:p1"]})
    errors: list[BaseException] = []

    def legacy_job() -> None:
        try:
            with SyncWorker(server.url, publisher_token()) as worker:
                worker.create_task("p1", id="sync-job")
                for step in (25, 50, 100):
                    worker.task_progress("sync-job", step)
                worker.complete_task("sync-job")
        except BaseException as exc:  # reported to the test below
            errors.append(exc)

    thread = threading.Thread(target=legacy_job)
    thread.start()
    await asyncio.to_thread(thread.join, 30)

    assert errors == []
    completed = await watcher.next_event("task.completed")
    assert completed["data"]["id"] == "sync-job"
