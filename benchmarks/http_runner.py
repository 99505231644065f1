"""Is the wire layer's GuardedRunner (aiohttp's AppRunner with a swapped connection handler:
a header timeout and JSON answers to malformed HTTP) worth its private class swap?

    .venv/bin/python -m benchmarks.run runner

Two servers, each in its own process on 127.0.0.1, serving notifier's app: one with
`GuardedRunner` (what `notifier serve` uses), one with aiohttp's plain `AppRunner`. Measured
side by side: requests per second over kept-alive connections (the cost of the handler's
header timer), and how many of a batch of slow-header connections (a request line sent, the
headers never finished) each server still holds a few seconds past the header timeout (the
benefit). Bounded: a fixed number of requests and connections, loopback only.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp

HEADER_TIMEOUT = 2.0


def serve(kind: str, port: int) -> None:
    """The server process: notifier's app behind the chosen runner."""
    from aiohttp import web

    from notifier.app import create_app, make_runner
    from notifier.settings import Settings

    async def run() -> None:
        settings = Settings(
            jwt_secret="b" * 40,
            store_url="memory://",
            data_dir=tempfile.mkdtemp(),
            http_header_timeout_seconds=HEADER_TIMEOUT,
            log_level="ERROR",
        )
        app = create_app(settings)
        runner = make_runner(app) if kind == "guarded" else web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(run())


async def _requests_per_second(url: str, count: int, concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(n: int) -> None:
            for _ in range(n):
                async with http.get(url + "/healthz") as response:
                    await response.read()

        await worker(10)  # warm up
        started = time.perf_counter()
        await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
        return count / (time.perf_counter() - started)


async def _slow_headers_held(port: int, connections: int) -> int:
    """Open connections that send a request line and never finish the headers; return how many
    the server has not closed HEADER_TIMEOUT + 2 s later."""
    streams = []
    for _ in range(connections):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        streams.append((reader, writer))
    await asyncio.sleep(HEADER_TIMEOUT + 2.0)
    held = 0
    for reader, writer in streams:
        try:
            data = await asyncio.wait_for(reader.read(1024), 0.05)
            if not data and not reader.at_eof():
                held += 1
            elif data and not reader.at_eof():
                rest = await asyncio.wait_for(reader.read(1024), 0.2)
                held += 0 if not rest else 1
        except TimeoutError:
            held += 1  # nothing came and the connection is still open
        writer.close()
    return held


async def runner_command(args: Any) -> list[dict[str, Any]]:
    from benchmarks.run import _free_port, _wait_listening

    rows = []
    for kind in ("guarded", "plain"):
        port = _free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.http_runner",
            kind,
            str(port),
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await _wait_listening(port)
            rate = await _requests_per_second(f"http://127.0.0.1:{port}", 20_000, 20)
            held = await _slow_headers_held(port, 200)
        finally:
            process.terminate()
            await process.wait()
        row = {"runner": kind, "requests_per_s": round(rate), "slow_header_connections_held": held}
        print(row, flush=True)
        rows.append(row)
    guarded, plain = rows
    print(
        f"GuardedRunner: {guarded['requests_per_s'] / plain['requests_per_s']:.2f}x the plain runner's "
        f"request rate; slow-header connections held after {HEADER_TIMEOUT + 2:.0f} s: "
        f"{guarded['slow_header_connections_held']} of 200 (plain: {plain['slow_header_connections_held']})"
    )
    return rows


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
