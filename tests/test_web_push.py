"""Web Push against a push service written in the tests: it checks the VAPID signature and
decrypts each message with the device's own private key, as a browser would show it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from py_vapid import Vapid02

from notifier import Settings
from notifier.auth import Role
from tests.conftest import RunningServer, eventually, make_settings, start_server, stop_server, until
from tests.push_service import PushService


def vapid_pem() -> str:
    key = Vapid02()
    key.generate_keys()
    return key.private_pem().decode()


@pytest.fixture
async def push_service() -> AsyncIterator[PushService]:
    service = PushService()
    await service.start()
    yield service
    await service.stop()


@pytest.fixture
def server_settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        vapid_private_key=vapid_pem(),
        vapid_subject="mailto:ops@example.com",
        push_allow_private=True,  # the push service is on loopback
        webhook_retry_base_seconds=0.2,
    )


async def subscribe(server: RunningServer, user: str, subscription: dict) -> tuple[int, dict]:
    return await server.http("POST", "/api/v1/push/subscriptions", server.token(user), json=subscription)


async def notify(server: RunningServer, user: str, title: str, **fields) -> str:
    status, answer = await server.http(
        "POST",
        "/api/v1/notifications",
        server.token("svc", role=Role.PUBLISHER),
        json={"user_ids": [user], "title": title, **fields},
    )
    assert status == 201, answer
    return str(answer["notifications"][0]["id"])


PUSH = {"after_seconds": 1, "channels": ["push"]}
ROOT = Path(__file__).resolve().parents[1]


async def test_an_offline_user_gets_the_push_on_every_browser_decrypted(
    server: RunningServer, push_service: PushService
) -> None:
    phone, laptop = push_service.device("phone"), push_service.device("laptop")
    for device in (phone, laptop):
        status, answer = await subscribe(server, "bob", device.subscription())
        assert status == 201 and answer == {"endpoint": device.endpoint, "user_id": "bob"}
    sent = time.monotonic()
    note = await notify(server, "bob", "Build 7 failed", body="tests: 3 failed", escalate=PUSH, critical=True)
    await until(lambda: phone.shown and laptop.shown, timeout=10)
    took = time.monotonic() - sent
    for device in (phone, laptop):
        (shown,) = device.shown
        assert (shown["id"], shown["title"], shown["body"], shown["critical"]) == (
            note,
            "Build 7 failed",
            "tests: 3 failed",
            True,
        )
    assert push_service.refused == []
    assert 1.0 <= took < 4.0, took
    status, key = await server.http("GET", "/api/v1/push/vapid-public-key")
    assert status == 200 and len(key["public_key"]) == 87  # 65 bytes, base64url


async def test_a_subscription_the_push_service_says_is_gone_is_removed(
    server: RunningServer, push_service: PushService
) -> None:
    gone, alive = push_service.device("gone"), push_service.device("alive")
    for device in (gone, alive):
        assert (await subscribe(server, "bob", device.subscription()))[0] == 201
    gone.gone = True
    await notify(server, "bob", "first", escalate=PUSH)
    await until(lambda: alive.shown, timeout=10)

    async def removed() -> bool:
        endpoints = [s.endpoint for s in await server.notifier.store.push_subscriptions("bob")]
        return endpoints == [alive.endpoint]

    await eventually(removed, timeout=5)
    push = server.notifier.push
    assert push is not None
    await until(lambda: push.expired == 1, timeout=5)


async def test_a_service_worker_reporting_seen_cancels_the_push(
    server: RunningServer, push_service: PushService
) -> None:
    phone = push_service.device("phone")
    assert (await subscribe(server, "bob", phone.subscription()))[0] == 201
    note = await notify(server, "bob", "seen on the lock screen", escalate=PUSH)
    status, answer = await server.http(
        "POST", f"/api/v1/notifications/{note}/receipts", server.token("bob"), json={"kind": "seen"}
    )
    assert (status, answer) == (200, {"recorded": 1})
    marker = await notify(server, "bob", "marker", escalate=PUSH)
    await until(lambda: phone.shown, timeout=10)
    assert [m["id"] for m in phone.shown] == [marker]
    status, answer = await server.http(
        "POST", f"/api/v1/notifications/{note}/receipts", server.token("bob"), json={"kind": "actioned"}
    )
    assert status == 422 and answer["error"]["code"] == "INVALID_PAYLOAD"


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("endpoint", "ftp://push.example/x", "URL"),
        ("p256dh", "bm90LWEtcG9pbnQ", "p256dh"),
        ("auth", "c2hvcnQ", "auth"),
        ("auth", "%%%", "base64url"),
        ("endpoint", None, "endpoint"),
    ],
)
async def test_a_bad_subscription_is_refused_with_a_code(
    server: RunningServer, push_service: PushService, field: str, value: str | None, words: str
) -> None:
    subscription = push_service.device("phone").subscription()
    if field == "endpoint":
        subscription["endpoint"] = value
    else:
        subscription["keys"][field] = value
    status, answer = await subscribe(server, "bob", subscription)
    assert status == 422 and answer["error"]["code"] == "INVALID_PAYLOAD", answer
    assert words in answer["error"]["message"], answer
    assert await server.notifier.store.push_subscriptions("bob") == []


async def test_private_push_endpoints_are_refused_unless_allowed(
    tmp_path: Path, push_service: PushService
) -> None:
    settings = make_settings(tmp_path, vapid_private_key=vapid_pem(), vapid_subject="mailto:ops@example.com")
    server, runner = await start_server(settings)
    try:
        for endpoint in (
            "https://127.0.0.1/push/x",
            "https://169.254.169.254/latest",
            "http://example.com/x",
        ):
            subscription = {**push_service.device("x").subscription(), "endpoint": endpoint}
            status, answer = await subscribe(server, "bob", subscription)
            assert status == 422 and answer["error"]["code"] == "INVALID_PAYLOAD", (endpoint, answer)
    finally:
        await stop_server(server, runner)
    off, off_runner = await start_server(make_settings(tmp_path / "off"))
    try:
        assert (await off.http("GET", "/api/v1/push/vapid-public-key"))[0] == 404
    finally:
        await stop_server(off, off_runner)


PAGE = """<!doctype html><html><body><script type="module">
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const registration = await navigator.serviceWorker.register("/notifier-sw.js");
await navigator.serviceWorker.ready;
// What NotifierClient.registerPush() hands the worker (a real push service is not reachable
// from the test machine, so the subscription itself is registered by the test).
const saved = new Promise((resolve) => navigator.serviceWorker.addEventListener("message", (event) => {
  if (event.data?.type === "notifier.config.saved") resolve();
}));
registration.active.postMessage({ type: "notifier.config", token, url: location.origin });
await saved;
document.body.dataset.ready = "true";
</script></body></html>"""


async def test_the_example_service_worker_shows_a_push_and_reports_it_seen(server: RunningServer) -> None:
    """One origin serves the page, client_examples/notifier-sw.js and (proxied) notifier's API,
    as an application would; Chromium gets the push over the DevTools protocol."""
    import asyncio
    import json
    import os
    import subprocess

    import aiohttp
    from aiohttp import web

    root = ROOT
    forwarded = ("authorization", "content-type")

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def worker(request: web.Request) -> web.FileResponse:
        return web.FileResponse(root / "client_examples" / "notifier-sw.js")

    async def api(request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request.method,
                server.url + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() in forwarded},
            ) as answer,
        ):
            return web.Response(
                status=answer.status, body=await answer.read(), content_type="application/json"
            )

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/notifier-sw.js", worker)
    app.router.add_route("*", "/api/{tail:.*}", api)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    origin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        note = await notify(
            server, "bob", "Shown by the worker", escalate={"after_seconds": 3600, "channels": ["push"]}
        )
        message = {
            "id": note,
            "title": "Shown by the worker",
            "body": "from a push",
            "data": {},
            "critical": False,
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
        browser = await asyncio.create_subprocess_exec(
            "node",
            str(root / "tests" / "browser" / "push_worker.mjs"),
            env={
                **env,
                "PAGE_URL": origin,
                "NOTIFIER_TOKEN": server.token("bob"),
                "PUSH_MESSAGE": json.dumps(message),
            },
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(browser.communicate(), 60)
        assert browser.returncode == 0, err.decode()[-2000:]
        assert out.decode().strip().endswith("SHOWN Shown by the worker"), out.decode()

        async def seen() -> dict | None:
            _, answer = await server.http(
                "GET", f"/api/v1/notifications/{note}/receipts", server.token("svc", role=Role.PUBLISHER)
            )
            kinds = {(r["kind"], r["device"]) for r in answer["receipts"]}
            return answer if ("seen", "push") in kinds else None

        answer = await eventually(seen, timeout=10)
        assert answer["escalation"]["state"] == "cancelled"  # seen: the push will not be sent
    finally:
        await runner.cleanup()
