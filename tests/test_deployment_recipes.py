"""docs/deployment.md's recipes, run as written: each `<!-- recipe: name -->` shell block, with
only its addresses made this machine's (a database and Redis of the test's own, free ports, a
secret file), then a client on the last process gets an event published on the first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role, issue_token
from notifier.client import Subscriber, Worker
from tests.backends import postgres_database
from tests.cluster import RedisServer
from tests.conftest import SECRET, until
from tests.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "deployment.md"
DOC_STORE = "postgresql://notifier:secret@db.internal:5432/notifier"
DOC_REDIS = "redis://redis.internal:6379/0"
DOC_SECRET = "/run/secrets/notifier-jwt"


def recipes() -> dict[str, str]:
    text = DOC.read_text()
    found = re.findall(r"<!-- recipe: (\w+) -->\n```sh\n(.*?)```", text, flags=re.S)
    return dict(found)


def test_the_document_has_its_recipes() -> None:
    assert sorted(recipes()) == ["postgresql", "redis", "workers"]


@pytest.mark.parametrize("name", ["workers", "postgresql", "redis"])
async def test_a_recipe_runs_as_written(tmp_path: Path, name: str) -> None:
    script = recipes()[name]
    secret_file = tmp_path / "jwt-secret"
    secret_file.write_text(SECRET)
    ports = {port: free_port() for port in re.findall(r"NOTIFIER_PORT=(\d+)", script)}
    redis = RedisServer(tmp_path / "redis")
    await redis.start()
    try:
        async with postgres_database() as store_url:
            local = script.replace(DOC_STORE, store_url).replace(DOC_REDIS, redis.url)
            local = local.replace(DOC_SECRET, str(secret_file))
            for documented, port in ports.items():
                local = local.replace(f"NOTIFIER_PORT={documented}", f"NOTIFIER_PORT={port}")
            env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
            env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
            with (tmp_path / "recipe.log").open("wb") as log:
                shell = await asyncio.create_subprocess_exec(
                    "bash",
                    "-c",
                    local + "\nwait\n",
                    cwd=tmp_path,
                    env=env,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            try:
                urls = [f"http://127.0.0.1:{port}" for port in ports.values()]
                await _healthy(urls, shell)
                await _delivered_across(urls[0], urls[-1])
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(shell.pid, signal.SIGTERM)
                await asyncio.wait_for(shell.wait(), 20)
    finally:
        await redis.stop()


async def _healthy(urls: list[str], shell: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:

        async def ready() -> bool:
            assert shell.returncode in (None, 0), f"the recipe exited with {shell.returncode}"
            for url in urls:
                try:
                    async with http.get(url + "/readyz") as response:
                        if response.status != 200:
                            return False
                except aiohttp.ClientError:
                    return False
            return True

        for _ in range(300):
            if await ready():
                return
            await asyncio.sleep(0.1)
        raise TimeoutError("the recipe's processes did not become ready")


async def _delivered_across(publish_on: str, subscribe_on: str) -> None:
    alice = Subscriber(subscribe_on, issue_token(SECRET, "HS256", "alice", projects=["p1"]))
    ticks: list[dict] = []
    alice.on("tick", ticks.append)
    await alice.connect()
    await alice.subscribe(["project:p1"])
    worker = Worker(publish_on, issue_token(SECRET, "HS256", "svc", role=Role.PUBLISHER))
    await worker.connect()
    try:
        for n in range(5):
            await worker.publish("project:p1", "tick", {"n": n})
        await until(lambda: len(ticks) == 5, timeout=10)
        assert [t["data"]["n"] for t in ticks] == list(range(5))
    finally:
        await worker.close()
        await alice.close()
