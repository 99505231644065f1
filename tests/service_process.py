"""The service as a real separate process, for restart and shutdown tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """`python -m notifier serve` on a port of its own, with its data in `data_dir`."""

    def __init__(
        self,
        data_dir: Path,
        secret: str | None,
        port: int | None = None,
        log_path: Path | None = None,
        serve_args: tuple[str, ...] = (),
        **env: str,
    ) -> None:
        """`secret=None` runs it in development mode (a generated secret in data_dir);
        `log_path` collects its log (stderr) in a file; `serve_args` follow `serve`."""
        self.serve_args = serve_args
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
        self.env.update(
            {
                "NOTIFIER_PORT": str(self.port),
                "NOTIFIER_DATA_DIR": str(data_dir),
                "NOTIFIER_LOG_LEVEL": "WARNING",
                **env,
            }
        )
        if secret is not None:
            self.env["NOTIFIER_JWT_SECRET"] = secret
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 15.0) -> None:
        stderr = None
        if self.log_path is not None:
            stderr = self.log_path.open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "notifier",
                "serve",
                *self.serve_args,
                env=self.env,
                stderr=stderr,
            )
        finally:
            if stderr is not None:
                stderr.close()
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.process.returncode is not None:
                    raise RuntimeError(f"service exited with {self.process.returncode}")
                try:
                    async with session.get(self.url + "/healthz") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        raise TimeoutError("service did not become healthy")

    async def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return the exit code and how long the exit took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        return code, time.monotonic() - started

    def rss_kb(self) -> int:
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def run_notifier(
    *args: str, env: dict[str, str], cwd: Path, seconds: float | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m notifier <args>` to its end, with no NOTIFIER_ variables but `env`'s (with
    `seconds`: sent SIGTERM after that long)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFIER_")}
    command = [sys.executable, "-m", "notifier", *args]
    if seconds is not None:
        command = ["timeout", "-s", "TERM", str(seconds), *command]
    return subprocess.run(command, env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=30)
