"""An acknowledgement means stored: against a real process killed with -9, a full disk, a
database deleted or replaced under it, and start-up on a broken machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import socketio

from notifier.auth import Role, issue_token
from tests.conftest import SECRET
from tests.service_process import ServiceProcess, free_port, run_notifier

PUBLISHER = issue_token(SECRET, "HS256", "svc", role=Role.PUBLISHER)
ADMIN = issue_token(SECRET, "HS256", "root", role=Role.ADMIN)


async def notify(
    http: aiohttp.ClientSession, url: str, user: str, title: str, body: str | None = None
) -> tuple[int, dict]:
    async with http.post(
        f"{url}/api/v1/notifications",
        json={"user_ids": [user], "title": title, "body": body},
        headers={"Authorization": f"Bearer {PUBLISHER}"},
    ) as response:
        return response.status, await response.json()


async def unread(http: aiohttp.ClientSession, url: str, user: str) -> int:
    async with http.get(
        f"{url}/api/v1/notifications?user_id={user}", headers={"Authorization": f"Bearer {ADMIN}"}
    ) as response:
        assert response.status == 200, await response.text()
        return int((await response.json())["unread"])


async def ready(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(f"{url}/readyz") as response:
        return response.status, await response.json()


async def eventually(check, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_acknowledged_notifications_survive_kill_9(tmp_path: Path) -> None:
    service = ServiceProcess(tmp_path / "data", SECRET)
    async with aiohttp.ClientSession() as http:
        for round_number in range(4):
            await service.start()
            user = f"user{round_number}"
            acked = 0
            statuses = await asyncio.gather(*(notify(http, service.url, user, f"n{n}") for n in range(150)))
            # At once after the last 201: no time for anything to be written afterwards.
            os.kill(service.process.pid, 9)
            await service.process.wait()
            acked = sum(1 for status, _ in statuses if status == 201)

            await service.start()
            assert await unread(http, service.url, user) == acked == 150, round_number
            await service.kill()


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int) -> Iterator[Path]:
    """A tmpfs of `size_kb` mounted at `path` (root only: mount needs CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with filler.open("wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
    return filler


async def test_a_full_disk_refuses_writes_delivers_nothing_unstored_and_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 2048) as disk:
        service = ServiceProcess(
            disk / "data", SECRET, log_path=tmp_path / "service.log", NOTIFIER_LOG_LEVEL="INFO"
        )
        await service.start()
        client = socketio.AsyncClient(reconnection=False)
        received: list[str] = []
        client.on("notification", lambda envelope: received.append(envelope["data"]["id"]))
        await client.connect(
            service.url, auth={"token": issue_token(SECRET, "HS256", "alice")}, transports=["websocket"]
        )
        acked: set[str] = set()
        try:
            async with aiohttp.ClientSession() as http:
                for n in range(5):
                    status, body = await notify(http, service.url, "alice", f"before {n}")
                    assert status == 201
                    acked.add(body["notifications"][0]["id"])

                filler = fill(disk)
                refused = []
                for n in range(400):
                    status, body = await notify(http, service.url, "alice", f"full {n}", "x" * 2000)
                    if status == 201:
                        acked.add(body["notifications"][0]["id"])
                    else:
                        refused.append((status, body["error"]["code"]))
                        if len(refused) >= 5:
                            break
                assert refused and set(refused) == {(503, "STORE_UNAVAILABLE")}, refused
                status, report = await ready(http, service.url)
                assert status == 503 and "store" in report["problems"]
                assert str(disk / "data") in report["problems"]["store"]

                filler.unlink()
                await eventually(lambda: _is_ready(http, service.url))
                status, body = await notify(http, service.url, "alice", "after")
                assert status == 201
                acked.add(body["notifications"][0]["id"])
                await asyncio.sleep(0.2)

            assert set(received) <= acked, "delivered live but never stored"
            log = service.log_path.read_text()
            assert log.count("component_unavailable") == 1
            assert "Traceback" not in log

            await client.disconnect()
            await service.terminate()
            await service.start()
            async with aiohttp.ClientSession() as http:
                assert await unread(http, service.url, "alice") == len(acked)
        finally:
            await client.disconnect()
            await service.kill()


async def _is_ready(http: aiohttp.ClientSession, url: str) -> bool:
    return (await ready(http, url))[0] == 200


async def test_a_deleted_database_is_noticed_and_written_back(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "data", SECRET, log_path=tmp_path / "service.log", NOTIFIER_LOG_LEVEL="INFO"
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            for n in range(10):
                assert (await notify(http, service.url, "alice", f"n{n}"))[0] == 201
            database = tmp_path / "data" / "notifier.db"
            database.unlink()

            await eventually(lambda: _log_has(service, "store_file_restored"), timeout=5)
            assert database.exists()
            for n in range(5):
                assert (await notify(http, service.url, "alice", f"after {n}"))[0] == 201
            assert (await ready(http, service.url))[0] == 200

        await service.terminate()
        await service.start()
        async with aiohttp.ClientSession() as http:
            assert await unread(http, service.url, "alice") == 15
    finally:
        await service.kill()


async def store_refuses(http: aiohttp.ClientSession, url: str) -> bool:
    """Writes answer 503 STORE_UNAVAILABLE (nothing acknowledged that is not stored)."""
    status, body = await notify(http, url, "alice", "refused?")
    return status == 503 and body["error"]["code"] == "STORE_UNAVAILABLE"


async def _log_has(service: ServiceProcess, text: str) -> bool:
    assert service.log_path is not None
    return text in service.log_path.read_text()


async def test_a_database_replaced_by_garbage_is_refused_then_recovered(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "data", SECRET, log_path=tmp_path / "service.log", NOTIFIER_LOG_LEVEL="INFO"
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            assert (await notify(http, service.url, "alice", "kept"))[0] == 201
            database = tmp_path / "data" / "notifier.db"
            garbage = tmp_path / "data" / "garbage"
            garbage.write_bytes(os.urandom(8192))
            garbage.replace(database)

            await eventually(lambda: store_refuses(http, service.url), timeout=5)
            assert (await ready(http, service.url))[0] == 503
            orphans = list((tmp_path / "data").glob("notifier.db.orphaned-*"))
            assert len(orphans) == 1, "the open database was kept aside"

            database.unlink()  # the operator removes the garbage: a new database is made
            await eventually(lambda: _is_ready(http, service.url))
            assert (await notify(http, service.url, "alice", "new"))[0] == 201
    finally:
        await service.kill()


def run_serve(
    env: dict[str, str], cwd: Path, seconds: float | None = None, secret: str | None = SECRET
) -> subprocess.CompletedProcess[str]:
    """`notifier serve` until it exits (or, with `seconds`, until SIGTERM after that long);
    `secret=None`: development mode."""
    secrets = {"NOTIFIER_JWT_SECRET": secret} if secret is not None else {}
    return run_notifier("serve", env={**secrets, **env}, cwd=cwd, seconds=seconds)


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "corrupt-pages",
        "unwritable",
        "second-process",
        "bad-host",
        "cors-without-scheme",
        "development-mode-unwritable",
        "port-in-use",
        "missing-key",
        "unsupported-url",
        "redis-with-sqlite",
    ],
)
def test_start_up_failures_are_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    env = {"NOTIFIER_DATA_DIR": str(data), "NOTIFIER_PORT": str(free_port())}
    expected = "NOTIFIER_STORE_URL"
    holder = None
    holder_process: subprocess.Popen[bytes] | None = None
    if case == "corrupt":
        (data / "notifier.db").write_bytes(b"this is not a database" * 100)
        expected = str(data / "notifier.db")
    elif case == "corrupt-pages":
        # A whole database whose pages past the first were overwritten: its header is fine.
        made = run_serve({**env, "NOTIFIER_DRAIN_SECONDS": "0"}, tmp_path, seconds=2.0)
        assert made.returncode in (0, 124), made.stderr  # 124: `timeout` ended it
        with (data / "notifier.db").open("r+b") as database:
            database.seek(4096)
            database.write(os.urandom(4096 * 3))
        expected = str(data / "notifier.db")
    elif case == "unwritable":
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        env["NOTIFIER_DATA_DIR"] = str(blocker / "data")
        expected = f"NOTIFIER_DATA_DIR: cannot create {blocker / 'data'}"
    elif case == "second-process":
        holder_process = subprocess.Popen(
            [sys.executable, "-m", "notifier", "serve"],
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")},
                "NOTIFIER_JWT_SECRET": SECRET,
                "NOTIFIER_DATA_DIR": str(data),
                "NOTIFIER_PORT": str(free_port()),
            },
            stderr=subprocess.PIPE,
        )
        assert holder_process.stderr is not None
        holder_process.stderr.readline()  # its first line: it has the database by then
        env["NOTIFIER_PORT"] = str(free_port())
        expected = (
            f"NOTIFIER_DATA_DIR: {data} is in use by another notifier process (pid {holder_process.pid})"
        )
    elif case == "bad-host":
        env["NOTIFIER_HOST"] = "192.0.2.1"  # TEST-NET-1: no address of this machine, no traffic
        expected = "NOTIFIER_HOST"
    elif case == "cors-without-scheme":
        env["NOTIFIER_CORS_ORIGINS"] = "app.example.com"
        expected = "NOTIFIER_CORS_ORIGINS"
    elif case == "development-mode-unwritable":
        # No secret given, and the data directory holds a directory where the secret goes:
        # not writable for anyone, root included.
        env["NOTIFIER_STORE_URL"] = "memory://"
        (data / "jwt-secret").mkdir()
        (data / "jwt-secret" / "x").write_text("")
        expected = "NOTIFIER_DATA_DIR"
    elif case == "port-in-use":
        import socket

        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        env["NOTIFIER_PORT"] = str(holder.getsockname()[1])
        expected = "NOTIFIER_PORT"
    elif case == "missing-key":
        env.update(NOTIFIER_JWT_ALGORITHMS="RS256", NOTIFIER_JWT_PUBLIC_KEY=str(tmp_path / "nope.pem"))
        expected = "NOTIFIER_JWT_PUBLIC_KEY"
    elif case == "unsupported-url":
        env["NOTIFIER_STORE_URL"] = "mysql://somewhere/db"
    else:
        env["NOTIFIER_BROKER_URL"] = "redis://127.0.0.1:6379/9"
        expected = "NOTIFIER_BROKER_URL"
    try:
        result = run_serve(env, tmp_path, secret=None if case.startswith("development") else SECRET)
    finally:
        if holder is not None:
            holder.close()
        if holder_process is not None:
            holder_process.kill()
            holder_process.wait()

    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and expected in lines[0], result.stderr


async def test_reads_between_writes_commit_each_transaction_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A read commits the open transaction first (it must see only what is committed); the
    commit that transaction had scheduled then finds nothing to do, whatever opened since."""
    from notifier.health import Health
    from notifier.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'interleaved.db'}", Health())
    await store.open()
    try:
        from notifier.records import Notification

        def note(n: int) -> Notification:
            return Notification(id=f"n{n}", user_id="alice", title="t", body=None, created_at=n)

        # Each round: a write opens a transaction, the read commits it, the next write opens
        # another, all within one loop iteration.
        writes, counts = [], []
        for n in range(20):
            writes.append(asyncio.ensure_future(store.add_notifications([note(n)], 0)))
            await asyncio.sleep(0)  # the write has run its statements
            counts.append(await store.unread_count("alice"))
        await asyncio.gather(*writes)
        assert counts == list(range(1, 21))
        assert await store.unread_count("alice") == 20
    finally:
        await store.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


async def test_a_deleted_write_ahead_log_loses_nothing_acknowledged_after_kill_9(tmp_path: Path) -> None:
    service = ServiceProcess(
        tmp_path / "data", SECRET, log_path=tmp_path / "service.log", NOTIFIER_LOG_LEVEL="INFO"
    )
    await service.start()
    async with aiohttp.ClientSession() as http:
        statuses = [await notify(http, service.url, "alice", f"before {n}") for n in range(50)]
        (tmp_path / "data" / "notifier.db-wal").unlink()
        statuses += [await notify(http, service.url, "alice", f"meanwhile {n}") for n in range(50)]

        async def noticed() -> bool:
            return "store_wal_lost" in (tmp_path / "service.log").read_text()

        await eventually(noticed, timeout=5)
        statuses += [await notify(http, service.url, "alice", f"after {n}") for n in range(50)]
        assert service.process is not None
        os.kill(service.process.pid, 9)
        await service.process.wait()
        acked = sum(1 for status, _ in statuses if status == 201)
        await service.start()
        try:
            assert await unread(http, service.url, "alice") == acked == 150
        finally:
            await service.kill()


@pytest.mark.parametrize("overwrite", ["another-database", "random-bytes"])
async def test_a_database_overwritten_in_place_is_noticed_and_refused(tmp_path: Path, overwrite: str) -> None:
    other = tmp_path / "other"
    if overwrite == "another-database":
        made = run_serve({"NOTIFIER_DATA_DIR": str(other), "NOTIFIER_PORT": str(free_port())}, tmp_path, 2.0)
        assert (other / "notifier.db").exists(), made.stderr
    service = ServiceProcess(
        tmp_path / "data", SECRET, log_path=tmp_path / "service.log", NOTIFIER_LOG_LEVEL="INFO"
    )
    await service.start()
    try:
        async with aiohttp.ClientSession() as http:
            assert (await notify(http, service.url, "alice", "kept"))[0] == 201
            database = tmp_path / "data" / "notifier.db"
            inode = database.stat().st_ino
            replacement = (
                (other / "notifier.db").read_bytes() if overwrite == "another-database" else os.urandom(65536)
            )
            with database.open("r+b") as file:  # in place: the same file, other contents
                file.write(replacement)
            assert database.stat().st_ino == inode

            await eventually(lambda: store_refuses(http, service.url), timeout=5)
            assert (await ready(http, service.url))[0] == 503
            assert "store_file_damaged" in (tmp_path / "service.log").read_text()
            assert "Traceback" not in (tmp_path / "service.log").read_text()
    finally:
        await service.kill()


async def test_a_read_only_database_is_unready_from_the_start(tmp_path: Path) -> None:
    """The database file read-only (its directory writable): unready at once, not at the
    first write. The file is bind-mounted read-only onto itself (root, as CI runs)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root (CI runs as root)")
    data = tmp_path / "data"
    made = run_serve({"NOTIFIER_DATA_DIR": str(data), "NOTIFIER_PORT": str(free_port())}, tmp_path, 2.0)
    database = data / "notifier.db"
    assert database.exists(), made.stderr
    for command in (
        ["mount", "--bind", str(database), str(database)],
        ["mount", "-o", "remount,bind,ro", str(database)],
    ):
        mounting = await asyncio.create_subprocess_exec(*command)
        assert await mounting.wait() == 0
    service = ServiceProcess(data, SECRET, log_path=tmp_path / "service.log")
    try:
        await service.start()
        async with aiohttp.ClientSession() as http:
            status, body = await ready(http, service.url)
            assert status == 503 and "store" in body["problems"], body
            assert (await notify(http, service.url, "alice", "refused"))[0] == 503
    finally:
        await service.kill()
        unmounting = await asyncio.create_subprocess_exec("umount", "-l", str(database))
        await unmounting.wait()
