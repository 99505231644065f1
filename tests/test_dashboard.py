"""The dashboard in a real browser: live progress, notifications, mark-read, latency."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from notifier.auth import Role
from tests.cluster import Nginx
from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


async def test_dashboard_shows_live_progress_and_clears_the_badge(server: RunningServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    browser = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "browser" / "dashboard_check.mjs"),
        cwd=ROOT,
        env={
            **env,
            "NOTIFIER_URL": server.url,
            "SCREENSHOT": str(screenshot),
            "NOTIFIER_TOKEN": server.token("alice", ["demo"]),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert browser.stdin is not None and browser.stdout is not None

    async def expect(prefix: str) -> str:
        line = (await asyncio.wait_for(browser.stdout.readline(), 20)).decode().strip()
        assert line.startswith(prefix), f"expected {prefix}, browser said {line!r}"
        return line

    async def go() -> None:
        browser.stdin.write(b"go\n")
        await browser.stdin.drain()

    try:
        await expect("READY")
        worker = await server.worker()
        await worker.call("task.create", {"id": "report", "project_id": "demo", "title": "Report"})
        await worker.call("task.progress", {"task_id": "report", "progress": 60})
        await go()
        assert float((await expect("BAR")).split()[1]) >= 60

        await worker.call("notify", {"user_ids": ["alice"], "title": "Report ready"})
        await go()
        assert (await expect("BADGE")).split()[1] == "1"
        await expect("CLEARED")
        assert await asyncio.wait_for(browser.wait(), 20) == 0
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()

    inbox = await (await server.connect("alice")).call("notifications.list", {})
    assert inbox["unread"] == 0, "the click in the browser marked it read on the server"
    assert screenshot.stat().st_size > 10_000


async def test_the_operator_view_behind_a_path_prefix(server: RunningServer, tmp_path: Path) -> None:
    """Through nginx under /notifier/: a `*` admin token sees every project live, a task's
    project, message, error and times, presence, a filtered event stream, the cluster and the
    refresh control; a thousand tasks update row by row."""
    ARTIFACTS.mkdir(exist_ok=True)
    upstream = server.url.removeprefix("http://")
    nginx = Nginx(tmp_path / "nginx", [upstream])
    await nginx.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    browser = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "browser" / "operator_check.mjs"),
        cwd=ROOT,
        env={
            **env,
            "DASHBOARD_URL": f"{nginx.url}/notifier/",
            "ARTIFACTS": str(ARTIFACTS),
            "NOTIFIER_TOKEN": server.token("ops", ["*"], role=Role.ADMIN),
            "EXPIRED_TOKEN": server.token("ops", ["*"], ttl=-60),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert browser.stdin is not None and browser.stdout is not None

    async def expect(step: str, timeout: float = 30) -> dict:
        line = (await asyncio.wait_for(browser.stdout.readline(), timeout)).decode().strip()
        assert line.startswith(step + " "), f"expected {step}, browser said {line!r}"
        return json.loads(line[len(step) + 1 :])

    async def go() -> None:
        browser.stdin.write(b"go\n")
        await browser.stdin.drain()

    try:
        refused = await expect("REFUSED")
        assert "the token has expired" in refused["problem"] and "AUTH_EXPIRED" in refused["problem"]
        ready = await expect("READY")
        assert ready["nodes"] >= 1 and ready["who"] == "ops · admin"

        worker = await server.worker()
        await worker.call(
            "task.create", {"id": "deploy-1", "project_id": "alpha", "title": "Deploy", "message": "building"}
        )
        await worker.call("task.fail", {"task_id": "deploy-1", "error": "disk full"})
        await go()
        task = await expect("TASK")
        assert task["project"] == "alpha" and task["message"] == "building"
        assert task["error"] == "error: disk full" and "finished" in task["times"]

        await expect("PRESENCE_OPEN")
        bob = await server.connect("bob", ["alpha"])
        await bob.call("subscribe", {"rooms": ["project:alpha"]})
        await go()
        # The operator is in the room too: showing its presence subscribed to it.
        assert (await expect("PRESENCE"))["users"] == ["bob1 connection", "ops1 connection"]
        filtered = await expect("FILTERED")
        assert filtered["shown"] and all("task.failed" in text for text in filtered["shown"])
        assert filtered["total"] > len(filtered["shown"])
        assert (await expect("REFRESH"))["interval"] == "30s"

        await worker.call("notify", {"user_ids": ["ops"], "title": "check the receipts"})
        await go()
        receipts = await expect("RECEIPTS")
        assert len(receipts["rows"]) == 1 and receipts["rows"][0].startswith("delivered"), receipts
        assert receipts["escalation"] == "no escalation"

        for start in range(0, 1000, 250):
            await asyncio.gather(
                *(
                    worker.call("task.create", {"id": f"bulk-{n}", "project_id": "bulk"})
                    for n in range(start, start + 250)
                )
            )
        await go()
        assert (await expect("BULK"))["rows"] == 1001
        for start in range(0, 1000, 250):
            await asyncio.gather(
                *(
                    worker.call("task.progress", {"task_id": f"bulk-{n}", "progress": 50})
                    for n in range(start, start + 250)
                )
            )
        await go()
        progress = await expect("PROGRESS", timeout=60)
        assert progress["kept"], "a progress update re-rendered the row instead of updating it"
        assert progress["rows"] == 1001 and progress["errors"] == []
        assert await asyncio.wait_for(browser.wait(), 20) == 0
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()
        await nginx.stop()
