"""One connection for every tab of an origin (`NotifierClient {shared: true}`), in Chromium
with three tabs: one socket at the server, every tab gets every event, calls from any tab;
the leader tab closes, another takes over and resumes, and no event is lost or doubled."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from aiohttp import web

from notifier.keys import GATEWAY
from notifier.models import NotifyRequest
from notifier.transport.socket_api import SocketGateway
from tests.conftest import make_settings, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]

PAGE = """<!doctype html><html><head><link rel="icon" href="data:,"></head><body><script type="module">
const { NotifierClient } = await import("NOTIFIER/static/notifier-client.standalone.mjs");
const token = new URLSearchParams(location.hash.slice(1)).get("token");
window.received = [];
window.titles = [];
window.client = new NotifierClient("NOTIFIER", { token, shared: true });
window.client.on("notification", (env) => {
  window.received.push(env.data.id);
  window.titles.push(env.data.title);
});
await window.client.connect();
document.body.dataset.ready = "true";
</script></body></html>"""


async def test_three_tabs_share_one_connection_and_survive_the_leader_closing(tmp_path: Path) -> None:
    holder: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.replace("NOTIFIER", holder["url"]), content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    site = web.AppRunner(app, access_log=None)
    await site.setup()
    await web.TCPSite(site, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{site.addresses[0][1]}"
    server, runner = await start_server(make_settings(tmp_path, cors_origins=[origin]))
    holder["url"] = server.url
    gateway: SocketGateway = server.app[GATEWAY]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    browser = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "browser" / "shared_tabs.mjs"),
        cwd=ROOT,
        env={**env, "PAGE_URL": origin, "NOTIFIER_TOKEN": server.token("alice")},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert browser.stdin is not None and browser.stdout is not None and browser.stderr is not None

    async def expect(step: str) -> dict:
        line = (await asyncio.wait_for(browser.stdout.readline(), 40)).decode().strip()
        if not line.startswith(step + " "):
            problem = (await browser.stderr.read()).decode()[-2000:]
            raise AssertionError(f"expected {step}, browser said {line!r}; {problem}")
        return dict(json.loads(line[len(step) + 1 :]))

    async def go() -> None:
        browser.stdin.write(b"go\n")
        await browser.stdin.drain()

    async def notify(title: str) -> None:
        await server.notifier.notify(NotifyRequest(user_ids=["alice"], title=title))

    try:
        opened = await expect("OPEN")
        assert [tab["leader"] for tab in opened["tabs"]].count(True) == 1 and opened["errors"] == []
        assert gateway.connection_counts().get("/") == 1, "one connection for three tabs"

        for n in range(10):
            await notify(f"n{n}")
        await go()
        ten = await expect("TEN")
        assert all(len(tab["received"]) == 10 for tab in ten["tabs"]), ten
        assert ten["tabs"][2]["answer"] == 10  # a call from a tab that does not hold the connection

        closed = await expect("CLOSED")
        tabs = [tab for tab in closed["tabs"] if tab is not None]
        assert len(tabs) == 2 and [tab["leader"] for tab in tabs].count(True) == 1

        for n in range(10, 20):
            await notify(f"n{n}")
        await notify("marker")
        await go()
        twenty = await expect("TWENTY")
        for tab in (tab for tab in twenty["tabs"] if tab is not None):
            assert len(tab["received"]) == 21 and len(set(tab["received"])) == 21, "lost or doubled"
        assert twenty["errors"] == []
        assert gateway.connection_counts().get("/") == 1
        browser.stdin.close()
        assert await asyncio.wait_for(browser.wait(), 20) == 0
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()
        await stop_server(server, runner)
        await site.cleanup()
