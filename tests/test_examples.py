"""The JavaScript client's own tests, and a smoke run of every example in client_examples/."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp

from notifier.auth import Role, issue_token
from notifier.client import Subscriber
from tests.conftest import SECRET, RunningServer
from tests.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "client_examples"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return {**env, **extra}


def test_javascript_client_suite_passes_against_a_real_service() -> None:
    result = subprocess.run(
        ["node", "--test", "client_examples/test/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=clean_env(NOTIFIER_PYTHON=sys.executable),
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout


async def test_node_subscriber_prints_the_events_it_follows(server: RunningServer) -> None:
    node = await asyncio.create_subprocess_exec(
        "node",
        str(EXAMPLES / "node_subscriber.mjs"),
        "project:demo",
        "--count",
        "2",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(NOTIFIER_URL=server.url, NOTIFIER_TOKEN=server.token("alice", ["demo"])),
    )
    assert node.stderr is not None
    while b"ready" not in (line := await asyncio.wait_for(node.stderr.readline(), 10)):
        assert line, "the subscriber exited before it was ready"
    worker = await server.worker()
    await worker.call("publish", {"room": "project:demo", "type": "deploy", "data": {"v": 1}})
    await worker.call("notify", {"user_ids": ["alice"], "title": "hi"})

    stdout, _ = await asyncio.wait_for(node.communicate(), 10)

    assert node.returncode == 0
    lines = stdout.decode().splitlines()
    assert '"type":"deploy"' in lines[0] and '"type":"notification"' in lines[1]


async def test_python_worker_reports_a_whole_job(server: RunningServer) -> None:
    watcher = await server.connect("alice", projects=["demo"])
    await watcher.call("subscribe", {"rooms": ["project:demo"]})
    token = server.token("worker", role="publisher")

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "python_worker.py"),
        "--project",
        "demo",
        "--steps",
        "3",
        "--delay",
        "0",
        "--task-id",
        "fake-import",
        env=clean_env(NOTIFIER_URL=server.url, NOTIFIER_TOKEN=token),
        stdout=subprocess.PIPE,
    )
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0, stdout
    completed = await watcher.next_event("task.completed")
    assert completed["data"]["id"] == "fake-import" and completed["data"]["result"] == {"steps": 3}


async def test_own_aiohttp_app_emits_from_its_handlers(tmp_path: Path) -> None:
    port = free_port()
    app = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLES / "aiohttp_app.py"),
        "--port",
        str(port),
        env=clean_env(NOTIFIER_JWT_SECRET=SECRET, NOTIFIER_DATA_DIR=str(tmp_path)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(url + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            shop = Subscriber(url, issue_token(SECRET, "HS256", "owner", role=Role.USER, projects=["demo"]))
            paid: list[dict] = []
            shop.on("order.paid", paid.append)
            await shop.connect()
            await shop.subscribe(["project:demo"])
            async with session.post(url + "/orders", json={"shop": "demo", "id": 5}) as response:
                assert response.status == 200
            for _ in range(200):
                if paid:
                    break
                await asyncio.sleep(0.01)
            await shop.close()
        assert paid and paid[0]["data"] == {"shop": "demo", "id": 5}
    finally:
        app.terminate()
        await app.wait()
