"""Configuration: a clear one-line refusal, and a development mode that just works."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import jwt
import pytest

from notifier.client import Subscriber
from tests.service_process import ServiceProcess, run_notifier


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_notifier(*args, env=env, cwd=cwd)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NOTIFIER_PORT", "not-a-port"),
        ("NOTIFIER_JWT_ALGORITHMS", "HS256,RS256"),
        ("NOTIFIER_PROGRESS_MAX_PER_SECOND", "0"),
        ("NOTIFIER_LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_configuration_stops_start_up_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    result = run_cli("serve", env={variable: value}, cwd=tmp_path)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0], result.stderr


def test_public_key_algorithms_need_a_public_key(tmp_path: Path) -> None:
    result = run_cli("serve", env={"NOTIFIER_JWT_ALGORITHMS": "RS256"}, cwd=tmp_path)
    assert result.returncode == 2 and "NOTIFIER_JWT_PUBLIC_KEY" in result.stderr


async def test_development_mode_secret_is_kept_private_and_shared_with_token(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    minted = run_cli(
        "token",
        "--sub",
        "newcomer",
        "--project",
        "demo",
        env={"NOTIFIER_DATA_DIR": str(data_dir)},
        cwd=tmp_path,
    )
    assert minted.returncode == 0, minted.stderr
    secret_file = data_dir / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    service = ServiceProcess(data_dir, secret=None)
    await service.start()
    try:
        client = Subscriber(service.url, minted.stdout.strip())
        await client.connect()
        assert (await client.subscribe(["project:demo"]))["project:demo"]["joined"] is True
        await client.close()
    finally:
        await service.kill()


def test_secrets_may_come_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "jwt"
    secret_file.write_text("s" * 40 + "\n")
    shown = run_cli("config", env={"NOTIFIER_JWT_SECRET_FILE": str(secret_file)}, cwd=tmp_path)
    assert shown.returncode == 0
    assert "NOTIFIER_JWT_SECRET=*** (set)" in shown.stdout and "s" * 40 not in shown.stdout

    both = run_cli(
        "config",
        env={"NOTIFIER_JWT_SECRET_FILE": str(secret_file), "NOTIFIER_JWT_SECRET": "t" * 40},
        cwd=tmp_path,
    )
    assert both.returncode == 2 and "not both" in both.stderr


def test_config_masks_passwords_and_reports_unknown_variables(tmp_path: Path) -> None:
    result = run_cli(
        "config",
        env={
            "NOTIFIER_STORE_URL": "postgresql://app:hunter2@db/notifier",
            "NOTIFIER_BROKER_URL": "redis://:sesame@cache:6379/0",
            "NOTIFIER_PING_INTERVALL_SECONDS": "5",
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert "hunter2" not in result.stdout and "sesame" not in result.stdout
    assert "NOTIFIER_STORE_URL=postgresql://app:***@db/notifier" in result.stdout
    assert "NOTIFIER_PING_INTERVALL_SECONDS (did you mean NOTIFIER_PING_INTERVAL_SECONDS?)" in result.stderr


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"NOTIFIER_JWT_SECRET": "short"}, "NOTIFIER_JWT_SECRET"),
        (
            {"NOTIFIER_JWT_ALGORITHMS": "RS256", "NOTIFIER_JWT_PUBLIC_KEY": "PRIVATE"},
            "NOTIFIER_JWT_PUBLIC_KEY",
        ),
        (
            {"NOTIFIER_JWT_ALGORITHMS": "RS256", "NOTIFIER_JWT_PUBLIC_KEY": "/nowhere.pem"},
            "NOTIFIER_JWT_PUBLIC_KEY",
        ),
        (
            {"NOTIFIER_JWT_ALGORITHMS": "ES256", "NOTIFIER_JWT_PUBLIC_KEY": "RSA PUBLIC"},
            "NOTIFIER_JWT_PUBLIC_KEY",
        ),
    ],
    ids=["short-hmac-secret", "private-key-as-public", "missing-key-file", "key-of-another-type"],
)
def test_unsafe_or_broken_keys_are_refused_in_one_line(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    if env.get("NOTIFIER_JWT_PUBLIC_KEY") == "PRIVATE":
        env = {**env, "NOTIFIER_JWT_PUBLIC_KEY": rsa_private_pem()}
    if env.get("NOTIFIER_JWT_PUBLIC_KEY") == "RSA PUBLIC":
        env = {**env, "NOTIFIER_JWT_PUBLIC_KEY": rsa_public_pem()}
    result = run_cli("serve", env=env, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and variable in lines[0], result.stderr


def rsa_private_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        _rsa_key()
        .private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        .decode()
    )


def rsa_public_pem() -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        _rsa_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _rsa_key() -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa

    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
async def test_token_signs_with_the_private_keys_algorithm(tmp_path: Path, kind: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    private = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    key_file = tmp_path / "private.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    algorithm = "RS256" if kind == "rsa" else "ES256"

    # No public key configured, nor the algorithm: the key says which.
    minted = run_cli(
        "token", "--sub", "alice", "--private-key", str(key_file), "--aud", "app", env={}, cwd=tmp_path
    )
    assert minted.returncode == 0, minted.stderr
    header = jwt.get_unverified_header(minted.stdout.strip())
    assert header["alg"] == algorithm

    service = ServiceProcess(
        tmp_path / "data",
        None,
        NOTIFIER_JWT_ALGORITHMS=algorithm,
        NOTIFIER_JWT_PUBLIC_KEY=public,
        NOTIFIER_JWT_AUDIENCE="app",
    )
    await service.start()
    try:
        client = Subscriber(service.url, minted.stdout.strip())
        await client.connect()
        await client.close()
    finally:
        await service.kill()


def test_token_says_which_development_secret_it_used(tmp_path: Path) -> None:
    first = run_cli("token", "--sub", "a", env={"NOTIFIER_DATA_DIR": "data"}, cwd=tmp_path)
    again = run_cli("token", "--sub", "a", env={"NOTIFIER_DATA_DIR": "data"}, cwd=tmp_path)
    path = str((tmp_path / "data" / "jwt-secret").resolve())
    assert path in first.stderr and "created now" in first.stderr
    assert path in again.stderr and "existing" in again.stderr
