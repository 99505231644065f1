"""<notifier-inbox> in Chromium, on a page of another origin (client_examples/inbox.html, as an
application serves it) loading the element from notifier: empty, 3 items, 500 items (no full
re-render per event), a narrow screen and the dark theme, with screenshots in
test-artifacts/; markup in a title is shown as text."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from aiohttp import web

from notifier.models import InboxChange, InboxSet, NotifyRequest
from tests.conftest import make_settings, start_server, stop_server

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
XSS = "<img src=x onerror=alert(1)>"


async def test_the_inbox_element_live_on_a_page_of_its_own(tmp_path: Path) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page_html = (ROOT / "client_examples" / "inbox.html").read_text()
    app = web.Application()
    holder: dict[str, str] = {}

    async def page(request: web.Request) -> web.Response:
        text = page_html.replace("http://127.0.0.1:8080", holder["url"])  # this run's notifier
        return web.Response(text=text, content_type="text/html")

    app.router.add_get("/", page)
    site_runner = web.AppRunner(app, access_log=None)
    await site_runner.setup()
    await web.TCPSite(site_runner, "127.0.0.1", 0).start()
    origin = f"http://127.0.0.1:{site_runner.addresses[0][1]}"
    server, runner = await start_server(make_settings(tmp_path, cors_origins=[origin]))
    holder["url"] = server.url
    notifier = server.notifier
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    browser = await asyncio.create_subprocess_exec(
        "node",
        str(ROOT / "tests" / "browser" / "inbox_check.mjs"),
        cwd=ROOT,
        env={
            **env,
            "PAGE_URL": origin,
            "ARTIFACTS": str(ARTIFACTS),
            "NOTIFIER_TOKEN": server.token("alice"),
        },
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert browser.stdin is not None and browser.stdout is not None and browser.stderr is not None

    async def expect(step: str, timeout: float = 40) -> dict:
        line = (await asyncio.wait_for(browser.stdout.readline(), timeout)).decode().strip()
        if not line.startswith(step + " "):
            problem = (await browser.stderr.read()).decode()[-2000:]
            raise AssertionError(f"expected {step}, browser said {line!r}; {problem}")
        return dict(json.loads(line[len(step) + 1 :]))

    async def go() -> None:
        browser.stdin.write(b"go\n")
        await browser.stdin.drain()

    async def notify(title: str, **fields: object) -> str:
        notes = await notifier.notify(NotifyRequest(user_ids=["alice"], title=title, **fields))
        return notes[0].id

    try:
        empty = await expect("EMPTY")
        assert empty == {"empty": True, "errors": []}

        await notify("Invoice 7 is due", category="billing", severity="warning")
        await notify(XSS, body="<b>not bold</b>")
        actions = [
            {"id": "approve", "label": "Approve", "event": {"deploy": 9}},
            {"id": "open", "label": "Open", "url": "https://ci.example/9"},
        ]
        await notify("Deploy 9 waits for you", category="ci", severity="critical", actions=actions)
        await go()
        three = await expect("THREE")
        assert three["titles"] == ["Deploy 9 waits for you", XSS, "Invoice 7 is due"]
        assert three["images"] == 0 and three["dialogs"] == [], "markup in a title was run"
        assert three["badge"] == "3" and three["actions"] == ["Approve", "Open"]
        assert three["tabs"] == ["All 3", "billing 1", "ci 1", "general 1"]

        keyboard = await expect("KEYBOARD")
        assert keyboard["badge"] == "2"
        assert (await notifier.inbox_counts("alice"))["unread"] == 2

        await go()
        assert (await expect("TAB"))["shown"] == ["Invoice 7 is due"]

        for start in range(0, 497, 100):
            await asyncio.gather(*(notify(f"bulk {n}") for n in range(start, min(497, start + 100))))
        await go()
        assert (await expect("FIVE_HUNDRED", timeout=60))["items"] == 500
        middle = (await notifier.store.list_notifications("alice", 1, None, False))[0]
        await notify("the newest")
        await notifier.change_inbox("alice", InboxChange(ids=[middle.id], set=InboxSet(archived=True)))
        await go()
        kept = await expect("KEPT")
        assert kept["kept"], "an event rendered the whole list again"
        assert kept["items"] == 500 and kept["first"] == "the newest"

        narrow = await expect("NARROW")
        assert narrow["left"] >= 0 and narrow["right"] <= 360, narrow
        dark = await expect("DARK")
        assert dark["background"] == "rgb(27, 31, 39)" and dark["items"] == 499 and not dark["open"]
        assert dark["errors"] == []
        # 501 sent, one read by keyboard, two archived (archived ones are not counted).
        assert (await notifier.inbox_counts("alice"))["unread"] == 498
        browser.stdin.close()  # the script's step reader ends with it
        assert await asyncio.wait_for(browser.wait(), 20) == 0
    finally:
        if browser.returncode is None:
            browser.kill()
            await browser.wait()
        await stop_server(server, runner)
        await site_runner.cleanup()
