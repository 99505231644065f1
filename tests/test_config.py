"""Configuration: a clear one-line refusal, and a development mode that just works."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.client import Subscriber
from tests.service_process import ServiceProcess


def run_cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    return subprocess.run(
        [sys.executable, "-m", "notifier", *args], env={**clean, **env}, cwd=cwd,
        capture_output=True, text=True, timeout=30,
    )


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
    minted = run_cli("token", "--sub", "newcomer", "--project", "demo",
                     env={"NOTIFIER_DATA_DIR": str(data_dir)}, cwd=tmp_path)
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
