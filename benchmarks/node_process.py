"""A Node load generator as a child process: a JSON config in, commands on stdin, JSON lines
out (each with a `kind`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent


class NodeGenerator:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @staticmethod
    async def spawn(
        script: str, config: dict[str, Any], *, cpus: set[int] | None = None, limit: int = 2**24
    ) -> asyncio.subprocess.Process:
        """`cpus`: the cores the generator's processes may use (the server keeps the rest)."""
        command = ["node", str(BENCH / script), json.dumps(config)]
        if cpus:
            command = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *command]
        return await asyncio.create_subprocess_exec(
            *command,
            cwd=BENCH,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            limit=limit,
        )

    async def read(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        """The next line of this `kind` (lines of other kinds are skipped)."""
        assert self.process.stdout is not None
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise RuntimeError("the load generator exited")
            message = json.loads(line)
            if message.get("kind") == kind:
                return message

    async def command(self, line: str, kind: str) -> dict[str, Any]:
        """Send a command line and wait for its answer of `kind`."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.read(kind)

    async def stop(self, grace: float = 15) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write(b"quit\n")
            await self.process.stdin.drain()
        try:
            await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# The load generators stand in for thousands of users from one address with one token: the
# limits meant for one real user or address are lifted for the server under test.
LOAD_GENERATOR_LIMITS = {
    "NOTIFIER_MAX_CONNECTIONS_PER_USER": "1000000",
    "NOTIFIER_MAX_PENDING_SESSIONS_PER_PEER": "1000000",
    "NOTIFIER_MAX_HTTP_CONNECTIONS_PER_PEER": "1000000",
}
