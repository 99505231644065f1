"""A real restart of a real server process: clients recover, the inbox is intact."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from notifier.auth import Role, issue_token
from notifier.client import Subscriber
from tests.conftest import SECRET, until
from tests.service_process import ServiceProcess


def token(user: str, projects: list[str] | None = None, role: Role = Role.USER) -> str:
    return issue_token(SECRET, "HS256", user, role=role, projects=projects or [])


async def publish(url: str, n: int) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/api/v1/publish",
            json={"room": "project:p1", "type": "tick", "data": {"n": n}},
            headers={"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"},
        ) as response,
    ):
        assert response.status == 201, await response.text()


async def notify(url: str, title: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            url + "/api/v1/notifications",
            json={"user_ids": ["alice"], "title": title},
            headers={"Authorization": f"Bearer {token('svc', role=Role.PUBLISHER)}"},
        ) as response,
    ):
        assert response.status == 201


async def test_sigterm_exits_promptly_and_clients_recover_after_restart(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "data", SECRET)
    await service.start()
    alice = Subscriber(
        service.url, lambda: token("alice", ["p1"]), reconnection_delay=0.1, reconnection_delay_max=0.3
    )
    ticks: list[dict] = []
    alice.on("tick", ticks.append)
    try:
        await alice.connect()
        await alice.subscribe(["project:p1"])
        for n in range(3):
            await publish(service.url, n)
        await notify(service.url, "before restart")
        await until(lambda: len(ticks) == 3)

        code, took = await service.terminate()
        assert code == 0 and took < 5.0, (code, took)

        await service.start()
        for n in range(3, 5):
            await publish(service.url, n)
        await until(lambda: len(ticks) == 5)
        await until(lambda: alice.connected and alice.session is not None)

        assert [t["offset"] for t in ticks] == [1, 2, 3, 4, 5]
        assert [t["data"]["n"] for t in ticks] == [0, 1, 2, 3, 4]
        assert alice.session["rooms"]["project:p1"]["recovered"] is True
        inbox = await alice.call("notifications.list", {})
        assert [n["title"] for n in inbox["notifications"]] == ["before restart"]
        assert alice.session["unread"] == 1
    finally:
        await alice.close()
        await service.kill()
