"""The dashboard in a real browser: live progress, notifications, mark-read, latency."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from tests.conftest import RunningServer

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


async def test_dashboard_shows_live_progress_and_clears_the_badge(server: RunningServer) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "dashboard.png"
    screenshot.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    browser = await asyncio.create_subprocess_exec(
        "node", str(ROOT / "tests" / "browser" / "dashboard_check.mjs"), cwd=ROOT,
        env={**env, "NOTIFIER_URL": server.url, "SCREENSHOT": str(screenshot),
             "NOTIFIER_TOKEN": server.token("alice", ["demo"])},
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
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
