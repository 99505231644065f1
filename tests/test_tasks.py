"""Task state: validated transitions, state on subscribe, coalesced progress that never lies."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from notifier import Settings
from tests.conftest import RunningServer, make_settings


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    # Workers here report as fast as the socket allows; their own rate limit is not under test.
    return make_settings(tmp_path, worker_rate_per_second=1e6, worker_rate_burst=100000)


async def test_transitions_are_validated_and_change_nothing_when_refused(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    await worker.call("task.create", {"id": "t", "project_id": "p1"})
    await worker.call("task.progress", {"task_id": "t", "progress": 50})

    too_big = await worker.call("task.progress", {"task_id": "t", "progress": 101})
    backwards = await worker.call("task.progress", {"task_id": "t", "progress": 20})
    duplicate = await worker.call("task.create", {"id": "t", "project_id": "p1"})
    assert (await worker.call("task.complete", {"task_id": "t"}))["ok"] is True
    twice = await worker.call("task.complete", {"task_id": "t"})
    after = await worker.call("task.progress", {"task_id": "t", "progress": 99})
    fail_after = await worker.call("task.fail", {"task_id": "t", "error": "late"})

    assert too_big["error"]["code"] == "INVALID_PAYLOAD"
    assert backwards["error"]["code"] == "CONFLICT"
    assert duplicate["error"]["code"] == "CONFLICT"
    assert twice["error"]["code"] == "CONFLICT"
    assert after["error"]["code"] == "CONFLICT"
    assert fail_after["error"]["code"] == "CONFLICT"
    state = (await worker.call("task.get", {"task_id": "t"}))["task"]
    assert state["status"] == "completed" and state["progress"] == 100 and state["error"] is None


async def test_subscribing_mid_task_answers_the_current_state_first(
    server: RunningServer,
) -> None:
    worker = await server.worker()
    await worker.call("task.create", {"id": "scan", "project_id": "p1", "total": 200})
    await worker.call(
        "task.progress",
        {"task_id": "scan", "progress": 37.5, "current": 75, "message": "scanning host 75"},
    )
    page = await server.connect("alice", projects=["p1"])

    ack = await page.call("subscribe", {"rooms": ["task:scan"]})
    await worker.call("task.progress", {"task_id": "scan", "progress": 80})

    task = ack["rooms"]["task:scan"]["task"]
    assert (task["status"], task["progress"], task["current"], task["total"]) == ("running", 37.5, 75, 200)
    assert task["message"] == "scanning host 75"
    later = await page.next_event("task.progress")
    assert later["data"]["progress"] == 80
    assert (await page.call("task.get", {"task_id": "scan"}))["task"]["progress"] == 80


async def test_ten_thousand_progress_updates_are_coalesced_without_lying(
    server: RunningServer,
) -> None:
    rate = server.settings.progress_max_per_second
    worker = await server.worker()
    await worker.call("task.create", {"id": "big", "project_id": "p1"})
    browser = await server.connect("alice", projects=["p1"])
    await browser.call("subscribe", {"rooms": ["task:big"]})

    started = time.monotonic()
    for n in range(10_000):
        await worker.sio.emit("task.progress", {"task_id": "big", "progress": n / 100}, namespace="/workers")
    done = await worker.call("task.complete", {"task_id": "big", "result": "ok"}, timeout=30)
    elapsed = time.monotonic() - started

    assert done["ok"] is True
    await browser.next_event("task.completed")
    progress = [data["data"]["progress"] for data in browser.of_type("task.progress")]
    names = [name for name, _ in browser.events if name.startswith("task.")]
    assert names[-1] == "task.completed" and names.count("task.completed") == 1
    assert progress == sorted(progress), "progress went backwards"
    assert len(progress) <= elapsed * rate + 2, (len(progress), elapsed)
    assert progress[-1] == 99.99, "the newest value must be delivered before completion"


async def test_active_tasks_are_listed_for_resuming(server: RunningServer) -> None:
    worker = await server.worker()
    for task_id, project in (("a", "p1"), ("b", "p1"), ("c", "p2")):
        await worker.call("task.create", {"id": task_id, "project_id": project})
        await worker.call("task.progress", {"task_id": task_id, "progress": 10})
    await worker.call("task.complete", {"task_id": "b"})

    status, body = await server.http(
        "GET", "/api/v1/tasks?status=running&project=p1", server.token("alice", ["p1", "p2"])
    )

    assert status == 200 and [task["id"] for task in body["tasks"]] == ["a"]


async def test_finished_tasks_are_removed_after_retention(server: RunningServer) -> None:
    worker = await server.worker()
    await worker.call("task.create", {"id": "old", "project_id": "p1"})
    await worker.call("task.create", {"id": "live", "project_id": "p1"})
    await worker.call("task.complete", {"task_id": "old"})

    server.notifier.settings.task_retention_seconds = -1  # everything finished is past it
    await server.notifier.run_maintenance()

    assert (await worker.call("task.get", {"task_id": "old"}))["error"]["code"] == "NOT_FOUND"
    assert (await worker.call("task.get", {"task_id": "live"}))["ok"] is True
