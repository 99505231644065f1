"""Connecting with a token: who gets in, and the code a refused client is given."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from tests.conftest import (
    SECRET,
    ConnectRefused,
    RunningServer,
    make_settings,
    start_server,
    stop_server,
)


async def test_valid_token_connects_and_receives_its_session(server: RunningServer) -> None:
    alice = await server.connect("alice", projects=["p1"])

    session = await alice.next_event("session")

    assert session["data"]["user_id"] == "alice"
    assert session["data"]["projects"] == ["p1"]
    assert session["data"]["refresh_interval"] == 0
    assert abs(session["data"]["server_time"] - time.time() * 1000) < 5000
    assert session["data"]["rooms"]["user:alice"]["joined"] is True


async def test_missing_token_is_refused_with_auth_required(server: RunningServer) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={})
    assert refused.value.code == "AUTH_REQUIRED"
    assert refused.value.data["message"]


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "wrong-secret-" + "y" * 30),
        # Algorithm "none" must never be accepted, whatever the token's header says.
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, None, algorithm="none"),
        # exp is required.
        jwt.encode({"sub": "alice"}, SECRET),
        jwt.encode({"sub": "alice", "exp": int(time.time()) + 60, "role": "root"}, SECRET),
        "x" * 20000,
    ],
    ids=["garbage", "wrong-key", "alg-none", "no-exp", "unknown-role", "oversized"],
)
async def test_invalid_tokens_are_refused_with_auth_invalid(server: RunningServer, token: str) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": token})
    assert refused.value.code == "AUTH_INVALID"


async def test_expired_token_is_refused_with_auth_expired(server: RunningServer) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(ttl=-60)
    assert refused.value.code == "AUTH_EXPIRED"


async def test_user_token_cannot_open_the_workers_namespace(server: RunningServer) -> None:
    with pytest.raises(ConnectRefused) as refused:
        await server.connect("mallory", namespace="/workers")
    assert refused.value.code == "FORBIDDEN"


async def test_publisher_token_opens_the_workers_namespace(server: RunningServer) -> None:
    worker = await server.worker()
    assert (await worker.call("ping"))["ok"] is True


async def test_bearer_header_is_accepted_for_non_browser_clients(server: RunningServer) -> None:
    client = await server.connect(auth=None, headers={"Authorization": f"Bearer {server.token('bob')}"})
    session = await client.next_event("session")
    assert session["data"]["user_id"] == "bob"


async def test_query_string_token_is_refused_by_default(server: RunningServer) -> None:
    refused = await _connect_with_a_query_token(server)
    assert refused.code == "AUTH_REQUIRED"


async def test_token_expiring_during_a_connection_is_told_and_disconnected(
    server: RunningServer,
) -> None:
    # The test server allows no leeway (see server_settings), so a 2 s token expires in 2 s.
    client = await server.connect("alice", ttl=2)
    disconnected = []
    client.sio.on("disconnect", lambda *args: disconnected.append(args))

    expired = await client.next_event("auth.expired", timeout=6)

    assert expired["data"]["code"] == "AUTH_EXPIRED"
    await client.wait_until(lambda: disconnected, what="disconnect")
    assert not client.sio.connected


async def test_refusals_explain_themselves_in_plain_words(server: RunningServer) -> None:
    wrong_key = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, "another-secret-" + "q" * 30)
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": wrong_key})
    assert refused.value.data["message"] == "the token's signature does not verify"
    with pytest.raises(ConnectRefused) as refused:
        await server.connect(auth={"token": "not.a.jwt"})
    assert refused.value.data["message"] == "the token is not a well-formed JWT"


async def test_a_disabled_query_token_says_so(server: RunningServer) -> None:
    refused = await _connect_with_a_query_token(server)
    assert "query string are disabled" in refused.data["message"]


async def _connect_with_a_query_token(server: RunningServer) -> ConnectRefused:
    original_url = server.url
    server.url = f"{original_url}?token={server.token('alice')}"
    try:
        with pytest.raises(ConnectRefused) as refused:
            await server.connect(auth=None)
    finally:
        server.url = original_url
    return refused.value


async def test_a_public_key_verifies_its_own_family_and_refuses_the_other(tmp_path: Path) -> None:
    """RS256 and ES256 allowed, an RSA public key configured: RS256 tokens get in; an ES256
    token cannot be verified with that key and is refused as an algorithm not accepted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    settings = make_settings(
        tmp_path, jwt_secret=None, jwt_algorithms=["RS256", "ES256"], jwt_public_key=public
    )
    server, runner = await start_server(settings)
    try:
        claims = {"sub": "alice", "exp": int(time.time()) + 60}
        alice = await server.connect(auth={"token": jwt.encode(claims, rsa_key, algorithm="RS256")})
        assert (await alice.next_event("session"))["data"]["user_id"] == "alice"

        other = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
        with pytest.raises(ConnectRefused) as refused:
            await server.connect(auth={"token": other})
        assert refused.value.code == "AUTH_INVALID"
        assert "algorithm" in refused.value.data["message"]
    finally:
        await stop_server(server, runner)
