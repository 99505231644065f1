"""Several real notifier processes sharing a Redis of the test's own and a PostgreSQL database
of the test's own, and the clients' ways to them."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import redis.asyncio as aioredis

from tests.backends import postgres_database
from tests.conftest import SECRET
from tests.service_process import ServiceProcess, free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """`redis-server` on a port of its own, keeping nothing on disk (as a restart would lose)."""

    def __init__(self, directory: Path, *extra: str) -> None:
        """`extra`: more `redis-server` arguments (`--replicaof host port` for a replica)."""
        self.port = free_port()
        self.extra = extra
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = await asyncio.create_subprocess_exec(
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--logfile",
            "",
            *self.extra,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                async with aioredis.Redis.from_url(self.url) as client:
                    await client.ping()
                return
            except (OSError, aioredis.ConnectionError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def command(self, *args: str) -> object:
        async with aioredis.Redis.from_url(self.url, decode_responses=True) as client:
            return await client.execute_command(*args)


class Cluster:
    def __init__(self, directory: Path, redis: RedisServer | None, store_url: str) -> None:
        """`redis` None: the broker is PostgreSQL, the store's own database."""
        self.directory = directory
        self.redis = redis
        self.store_url = store_url
        self.broker_url = redis.url if redis is not None else store_url
        self.nodes: list[ServiceProcess] = []

    async def add_node(self, **env: str) -> ServiceProcess:
        index = len(self.nodes)
        settings = {
            "NOTIFIER_STORE_URL": self.store_url,
            "NOTIFIER_BROKER_URL": self.broker_url,
            "NOTIFIER_LOG_LEVEL": "INFO",
            **env,
        }
        node = ServiceProcess(
            self.directory / f"node{index}",
            SECRET,
            log_path=self.directory / f"node{index}.log",
            **settings,
        )
        await node.start()
        self.nodes.append(node)
        return node

    async def stop(self) -> None:
        for node in self.nodes:
            await node.kill()


@asynccontextmanager
async def cluster(directory: Path, nodes: int, broker: str = "redis", **env: str) -> AsyncIterator[Cluster]:
    """`broker`: "redis" (a Redis of the test's own) or "postgresql" (the store's database)."""
    redis = RedisServer(directory / "redis") if broker == "redis" else None
    if redis is not None:
        await redis.start()
    try:
        async with postgres_database() as store_url:
            running = Cluster(directory, redis, store_url)
            try:
                for _ in range(nodes):
                    await running.add_node(**env)
                yield running
            finally:
                await running.stop()
    finally:
        if redis is not None:
            await redis.stop()


ROOT = Path(__file__).resolve().parents[1]
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


class Nginx:
    """nginx running deploy/nginx/notifier.conf in front of the given nodes."""

    def __init__(self, directory: Path, upstreams: list[str]) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.upstreams = upstreams
        self.process: asyncio.subprocess.Process | None = None

    def _configure(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        site = (ROOT / "deploy" / "nginx" / "notifier.conf").read_text()
        lines = [line for line in site.splitlines() if not line.strip().startswith("server 127.0.0.1:808")]
        at = next(i for i, line in enumerate(lines) if "hash $remote_addr" in line) + 1
        lines[at:at] = [f"    server {upstream} max_fails=1 fail_timeout=5s;" for upstream in self.upstreams]
        site = "\n".join(lines).replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        for include in ("notifier_proxy.conf", "notifier_socketio.conf"):
            copy = self.directory / include
            copy.write_text((ROOT / "deploy" / "nginx" / include).read_text())
            site = site.replace(f"/etc/nginx/{include}", str(copy))
        (self.directory / "notifier.conf").write_text(site)
        main = self.directory / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""
        main.write_text(
            f"{user}worker_processes 1;\npid {self.directory}/nginx.pid;\n"
            f"error_log {self.directory}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            "http {\n    access_log off;\n"
            f"    client_body_temp_path {self.directory}/body;\n"
            f"    proxy_temp_path {self.directory}/proxy;\n"
            f"    fastcgi_temp_path {self.directory}/fastcgi;\n"
            f"    uwsgi_temp_path {self.directory}/uwsgi;\n"
            f"    scgi_temp_path {self.directory}/scgi;\n"
            f"    include {self.directory}/notifier.conf;\n}}\n"
        )
        return main

    async def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._configure()
        self.process = await asyncio.create_subprocess_exec(
            NGINX,
            "-p",
            str(self.directory),
            "-c",
            str(config),
            "-g",
            "daemon off;",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                return
            except OSError:
                if self.process.returncode is not None or time.monotonic() > deadline:
                    error = await self.process.stderr.read() if self.process.stderr else b""
                    raise RuntimeError(f"nginx did not start: {error.decode()[-500:]}") from None
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), Path("/usr/bin"))


class PostgresServer:
    """A PostgreSQL server of the test's own (initdb in a temporary directory), so that a test
    may stop and start it. As root, it runs as the `postgres` user, as PostgreSQL requires."""

    def __init__(self) -> None:
        # Not under pytest's temporary directory: that one is private to its owner, and the
        # server runs as another user.
        self.directory = Path(tempfile.mkdtemp(prefix="notifier-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.process: asyncio.subprocess.Process | None = None

    def _as_owner(self, *command: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else list(command)

    async def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        initdb = await asyncio.create_subprocess_exec(
            *self._as_owner(
                str(POSTGRES_BIN / "initdb"),
                "-D",
                str(self.directory / "db"),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert await initdb.wait() == 0, "initdb failed"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            *self._as_owner(
                str(POSTGRES_BIN / "postgres"),
                "-D",
                str(self.directory / "db"),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.directory}",
                "-c",
                "fsync=off",
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                import asyncpg

                conn = await asyncpg.connect(self.url, timeout=2)
                await conn.close()
                return
            except Exception:  # not up yet
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """A fast shutdown, as `pg_ctl stop -m fast`: sessions are cut."""
        if self.process is not None and self.process.returncode is None:
            stopping = await asyncio.create_subprocess_exec(
                "pkill", "-INT", "-f", f"postgres -D {self.directory}/db"
            )
            await stopping.wait()
            await asyncio.wait_for(self.process.wait(), 20)

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
