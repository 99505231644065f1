"""The service as it is deployed: the wheel built by scripts/build-wheel.sh (the Dockerfile's
build step), installed into a fresh virtualenv (its run step), run from a directory without
the checkout and with no Node on PATH; and the systemd units."""

from __future__ import annotations

import asyncio
import configparser
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from notifier.auth import Role, issue_token
from tests.conftest import SECRET
from tests.service_process import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtualenv outside the checkout with the wheel installed, as deploy/Dockerfile does."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [str(ROOT / "scripts" / "build-wheel.sh"), str(work / "dist")],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable},
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    wheel = next((work / "dist").glob("notifier-*.whl"))
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(wheel)],
        check=True,
        timeout=600,
    )
    yield venv


def runtime_env(venv: Path, **settings: str) -> dict[str, str]:
    """What the service sees in the image: its venv on PATH, nothing else (no Node)."""
    env = {"PATH": f"{venv}/bin", "HOME": str(venv), "LANG": "C.UTF-8"}
    env.update(settings)
    return env


async def wait_healthy(url: str, process: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            assert process.returncode is None, "the service exited"
            try:
                async with http.get(url + "/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError("the service did not become healthy")


async def test_the_installed_wheel_serves_the_dashboard_without_node(
    installed: Path,
    tmp_path: Path,
) -> None:
    env = runtime_env(
        installed,
        NOTIFIER_PORT=str(free_port()),
        NOTIFIER_JWT_SECRET=SECRET,
        NOTIFIER_DATA_DIR=str(tmp_path / "data"),
    )
    assert shutil.which("node", path=env["PATH"]) is None
    where = await asyncio.create_subprocess_exec(
        str(installed / "bin" / "python"),
        "-c",
        "import notifier; print(notifier.__file__)",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(where.communicate(), 30)
    package = Path(out.decode().strip()).parent
    assert str(installed) in str(package), "the installed package, not the checkout"

    url = f"http://127.0.0.1:{env['NOTIFIER_PORT']}"
    service = await asyncio.create_subprocess_exec(
        str(installed / "bin" / "notifier"), "serve", cwd=tmp_path, env=env
    )
    try:
        await wait_healthy(url, service)
        async with aiohttp.ClientSession() as http:
            for name in ("socket.io.esm.min.js", "notifier-client.mjs", "dashboard.js"):
                async with http.get(f"{url}/static/{name}") as response:
                    assert response.status == 200, name
                    served = await response.read()
                local = package / "static" / ("" if name == "dashboard.js" else "vendor") / name
                assert served == local.read_bytes(), f"{name} comes from the installed package"
        browser = await asyncio.create_subprocess_exec(
            "node",
            str(ROOT / "tests" / "browser" / "connects.mjs"),
            cwd=ROOT,
            env={
                **os.environ,
                "DASHBOARD_URL": url + "/",
                "NOTIFIER_TOKEN": issue_token(SECRET, "HS256", "alice", projects=["demo"]),
            },
            stdout=subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(browser.communicate(), 30)
        assert out.decode().strip() == "CONNECTED alice · user"
    finally:
        service.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.wait(), 15) == 0


def unit(path: Path) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("name", ["notifier.service", "notifier@.service"])
def test_the_systemd_units_verify(name: str, installed: Path, tmp_path: Path) -> None:
    """systemd-analyze checks each unit, pointed at the test's installed wheel."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    text = (ROOT / "deploy" / "systemd" / name).read_text()
    copy = tmp_path / name.replace("@", "@8081" if "@" in name else "")
    copy.write_text(
        text.replace("/opt/notifier", str(installed))
        .replace("EnvironmentFile=", "EnvironmentFile=-")
        .replace("User=notifier", "User=root")
        .replace("Group=notifier", "Group=root")
    )
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if str(copy.name) in line]
    assert result.returncode == 0 and not problems, result.stderr


async def test_the_template_units_command_runs_the_service(installed: Path, tmp_path: Path) -> None:
    """notifier@<port>: ExecStart and the environment file, as systemd would run them."""
    service_unit = unit(ROOT / "deploy" / "systemd" / "notifier@.service")
    port = free_port()
    command = (
        service_unit.get("Service", "ExecStart")
        .replace("/opt/notifier", str(installed))
        .replace("1%i", str(free_port()))
        .replace("%i", str(port))
        .split()
    )
    settings = dict(
        line.split("=", 1)
        for line in (ROOT / "deploy" / "systemd" / "notifier.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    secret = tmp_path / "jwt-secret"
    secret.write_text(SECRET + "\n")
    env = runtime_env(
        installed, **settings, NOTIFIER_JWT_SECRET_FILE=str(secret), NOTIFIER_DATA_DIR=str(tmp_path / "data")
    )
    service = await asyncio.create_subprocess_exec(*command, cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(url, service)
        token = issue_token(SECRET, "HS256", "ops", role=Role.ADMIN)
        async with (
            aiohttp.ClientSession() as http,
            http.get(url + "/api/v1/status", headers={"Authorization": f"Bearer {token}"}) as response,
        ):
            assert response.status == 200  # the secret came from the file
    finally:
        service.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(service.wait(), 30) == 0
