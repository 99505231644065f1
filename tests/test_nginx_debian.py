"""deploy/nginx as an operator installs it on Debian (docs/deployment.md): dropped into a copy
of the stock configuration, its default site still enabled; plain and with TLS (wss://)."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
import socketio

from notifier.auth import Role, issue_token
from tests.cluster import cluster
from tests.conftest import SECRET, until
from tests.debian_nginx import DEBIAN_NGINX, DebianNginx

pytestmark = pytest.mark.skipif(
    not (DEBIAN_NGINX / "nginx.conf").exists(), reason="Debian's nginx is not installed"
)


async def publish(url: str, n: int) -> None:
    token = issue_token(SECRET, "HS256", "svc", role=Role.PUBLISHER)
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{url}/api/v1/publish",
            json={"room": "project:p1", "type": "tick", "data": {"n": n}},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        assert response.status == 201


async def receive_through(url: str, node_url: str, **options: object) -> None:
    client = socketio.AsyncClient(reconnection=False, **options)  # type: ignore[arg-type]
    ticks: list[dict] = []
    client.on("tick", ticks.append)
    await client.connect(
        url,
        auth={"token": issue_token(SECRET, "HS256", "alice", projects=["p1"])},
        transports=["websocket"],
        wait_timeout=5,
    )
    try:
        reply = await client.call("subscribe", {"rooms": ["project:p1"]}, timeout=5)
        assert reply["ok"], reply
        await publish(node_url, 1)
        await until(lambda: [t["data"]["n"] for t in ticks] == [1], timeout=5)
    finally:
        await client.disconnect()


async def test_the_recipe_works_in_debians_own_nginx(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1) as running:
        (node,) = running.nodes
        nginx = DebianNginx(tmp_path / "nginx", [f"127.0.0.1:{node.port}"])
        await nginx.start()
        try:
            url = f"http://127.0.0.1:{nginx.port}"
            async with aiohttp.ClientSession() as http:
                async with http.get(url + "/healthz") as response:
                    assert response.status == 200 and (await response.json())["ok"] is True
                # Another name on the same port: Debian's default site, still there.
                async with http.get(url + "/", headers={"Host": "other.example"}) as response:
                    assert "nginx" in (await response.text()).lower()
            await receive_through(url, node.url)
        finally:
            await nginx.stop()


async def test_the_tls_recipe_serves_wss(tmp_path: Path) -> None:
    async with cluster(tmp_path, nodes=1, NOTIFIER_TRUSTED_PROXIES="127.0.0.1") as running:
        (node,) = running.nodes
        nginx = DebianNginx(tmp_path / "nginx", [f"127.0.0.1:{node.port}"], tls=True)
        await nginx.start()
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(
                    f"http://127.0.0.1:{nginx.port}/healthz", allow_redirects=False
                ) as response:
                    assert response.status == 301 and response.headers["Location"].startswith("https://")
                insecure = ssl.create_default_context()
                insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
                async with http.get(f"https://127.0.0.1:{nginx.tls_port}/healthz", ssl=insecure) as response:
                    assert response.status == 200
            await receive_through(f"https://127.0.0.1:{nginx.tls_port}", node.url, ssl_verify=False)
        finally:
            await nginx.stop()
