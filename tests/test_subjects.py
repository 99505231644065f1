"""Token subjects as identity providers issue them connect, subscribe, receive notifications
and recover them after a reconnect, on every backend: the embedded SQLite store, memory, and
Redis with PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role, issue_token
from notifier.client import NotifierClientError, Subscriber
from tests.cluster import cluster
from tests.conftest import SECRET, make_settings, start_server, stop_server, until

SUBJECTS = [
    "auth0|5f7c8ec7c33c6c004bbafe82",
    "google-oauth2|1234",
    "a+b@example.com",
    "josé",
    "Alice Smith",
    "user/1",
    "x" * 255,
]


@asynccontextmanager
async def service(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a running service on the given backend."""
    if kind == "redis+postgresql":
        async with cluster(tmp_path, nodes=1) as running:
            yield running.nodes[0].url
        return
    store = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'notifier.db'}"
    server, runner = await start_server(make_settings(tmp_path, store_url=store))
    try:
        yield server.url
    finally:
        await stop_server(server, runner)


def token(sub: str, role: Role = Role.USER) -> str:
    return issue_token(SECRET, "HS256", sub, role=role, projects=["p1"])


async def notify(url: str, user: str, title: str) -> None:
    headers = {"Authorization": f"Bearer {token('publisher', Role.PUBLISHER)}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/v1/notifications", json={"user_ids": [user], "title": title}, headers=headers
        ) as response,
    ):
        assert response.status == 201, await response.text()


@pytest.mark.parametrize("kind", ["sqlite", "memory", "redis+postgresql"])
async def test_subjects_from_identity_providers_work_end_to_end(kind: str, tmp_path: Path) -> None:
    async with service(kind, tmp_path) as url:
        for sub in SUBJECTS:
            client = Subscriber(url, token(sub))
            notes: list[dict] = []
            client.on("notification", notes.append)
            await client.connect()
            try:
                await until(lambda client=client: client.session is not None, timeout=10)
                assert client.session is not None and client.session["user_id"] == sub
                await client.subscribe(["project:p1"])
                await notify(url, sub, "live")
                await until(lambda notes=notes: len(notes) == 1, timeout=10)
                # Offline, a notification waits; the reconnect replays it.
                await client.close()
                await notify(url, sub, "while away")
                await client.connect()
                await until(lambda notes=notes: len(notes) == 2, timeout=10)
                assert [n["data"]["title"] for n in notes] == ["live", "while away"]
                assert notes[1].get("replayed") is True
                listed = await client.call("notifications.list", {})
                assert {n["title"] for n in listed["notifications"]} == {"live", "while away"}
            finally:
                await client.close()


@pytest.mark.parametrize("sub", ["", "x" * 256, "bell\x07", "esc\x1b[2J", "line\nbreak", "c1\x85"])
async def test_subjects_that_are_not_text_are_refused_with_a_code(sub: str, tmp_path: Path) -> None:
    async with service("memory", tmp_path) as url:
        client = Subscriber(url, token(sub))
        with pytest.raises(NotifierClientError) as refused:
            await client.connect()
        assert refused.value.code == "AUTH_INVALID"
        await client.close()
