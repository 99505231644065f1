"""The smaller refusals of the second hostile-input round, each as a client meets it."""

from __future__ import annotations

import time
from pathlib import Path

import aiohttp
import jwt
import pytest

from notifier.auth import Role
from tests.conftest import SECRET, ConnectRefused, RunningServer, make_settings, start_server, stop_server


async def test_a_time_claim_that_is_no_number_is_invalid_not_expired(server: RunningServer) -> None:
    forged = jwt.encode({"sub": "mallory", "exp": True}, SECRET, algorithm="HS256")
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": forged})
    assert refused.value.code == "AUTH_INVALID"


async def test_a_token_minted_up_to_the_leeway_ahead_is_revoked_too(tmp_path: Path) -> None:
    server, runner = await start_server(make_settings(tmp_path, jwt_leeway_seconds=10))
    try:
        now = int(time.time())
        ahead = jwt.encode({"sub": "alice", "iat": now + 9, "exp": now + 3600}, SECRET, algorithm="HS256")
        admin = server.token("ops", role=Role.ADMIN)
        assert (await server.http("POST", "/api/v1/users/alice/disconnect", admin))[0] == 200
        with pytest.raises(ConnectRefused) as refused:
            await server.connect(auth={"token": ahead})
        assert refused.value.code == "AUTH_REVOKED"
        status, body = await server.http("GET", "/api/v1/notifications", ahead)
        assert (status, body["error"]["code"]) == (401, "AUTH_REVOKED")
    finally:
        await stop_server(server, runner)


async def test_rest_has_a_rate_limit_per_token(tmp_path: Path) -> None:
    server, runner = await start_server(make_settings(tmp_path, user_rate_per_second=1, user_rate_burst=5))
    try:
        token = server.token("alice")
        async with aiohttp.ClientSession() as http:
            answers = []
            for _ in range(8):
                async with http.get(
                    server.url + "/api/v1/notifications", headers={"Authorization": f"Bearer {token}"}
                ) as response:
                    answers.append((response.status, response.headers.get("Retry-After")))
        assert answers[:5] == [(200, None)] * 5
        assert (429, "1") in answers[5:]
        # Another token is not held back by this one.
        assert (await server.http("GET", "/api/v1/notifications", server.token("bob")))[0] == 200
    finally:
        await stop_server(server, runner)


@pytest.mark.parametrize("setting", ["allow-list", "untrusted-forwarding"])
async def test_the_origin_check_trusts_no_header_a_client_chose(tmp_path: Path, setting: str) -> None:
    overrides = {"cors_origins": ["https://app.example"]} if setting == "allow-list" else {}
    server, runner = await start_server(make_settings(tmp_path, **overrides))
    try:
        host = server.url.removeprefix("http://")
        if setting == "allow-list":
            # The page's origin matches Host, but an allow-list is the whole answer.
            origin, headers = f"http://{host}", {}
        else:
            # A client claiming to come through a proxy it does not come through.
            origin, headers = (
                "https://evil.example",
                {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"},
            )
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                server.url + "/socket.io/?EIO=4&transport=polling", headers={"Origin": origin, **headers}
            ) as response,
        ):
            assert response.status == 403
            assert (await response.json())["error"]["code"] == "FORBIDDEN"
    finally:
        await stop_server(server, runner)


async def test_the_dashboard_page_is_sent_with_a_content_security_policy(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.url + "/") as response:
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "script-src 'self' 'sha256-" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
