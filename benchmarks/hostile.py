"""Hostile and broken clients, by hand, on raw sockets: what an attacker would send.

Used by tests/test_hostile.py (bounded checks) and by `benchmarks.run hostile`, which measures
what each costs the service (log bytes per malformed packet, memory after abandoned polls, a
bystander's ping latency while one anonymous client floods).

    .venv/bin/python -m benchmarks.hostile <attack> --url http://127.0.0.1:8080 [--count N | --seconds S]

Everything stays on loopback and is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import struct
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

_TEXT = 0x1


def masked_frame(payload: bytes, opcode: int = _TEXT) -> bytes:
    """A client frame (clients must mask, RFC 6455 section 5.3)."""
    mask = os.urandom(4)
    body = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return header + mask + body


async def raw_websocket(url: str, query: str = "EIO=4&transport=websocket"):
    """Open a websocket by hand and read past the 101 answer and the OPEN packet."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket.io/?{query} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    status = await reader.readuntil(b"\r\n\r\n")
    if not status.startswith(b"HTTP/1.1 101"):
        writer.close()
        raise ConnectionError(status.split(b"\r\n")[0].decode())
    header = await reader.readexactly(2)
    await reader.readexactly(header[1] & 0x7F)  # the OPEN packet (short)
    return reader, writer


async def _flood(url: str, frame: bytes, seconds: float) -> int:
    """One anonymous websocket sending `frame` as fast as the socket takes it, never reading."""
    _, writer = await raw_websocket(url)
    batch = frame * 2000
    sent = 0
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not writer.is_closing():
            writer.write(batch)
            await writer.drain()
            sent += 2000
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
    return sent


async def flood_noops(url: str, seconds: float) -> int:
    """Engine.IO NOOP packets, as fast as the socket takes them."""
    return await _flood(url, masked_frame(b"6"), seconds)


async def flood_pings(url: str, seconds: float) -> int:
    """Websocket PING control frames, as fast as the socket takes them, no PONG ever read."""
    return await _flood(url, masked_frame(b"x" * 100, opcode=0x9), seconds)


async def _run_bounded(one: Callable[[], Awaitable[None]], count: int, concurrency: int) -> None:
    """`one` run `count` times, at most `concurrency` at once."""
    slots = asyncio.Semaphore(concurrency)

    async def bounded() -> None:
        async with slots:
            await one()

    await asyncio.gather(*(bounded() for _ in range(count)))


async def malformed_sessions(url: str, count: int, concurrency: int = 20) -> int:
    """`count` anonymous websockets, each sending one malformed packet (`4{`) and being closed."""
    done = 0

    async def one() -> None:
        nonlocal done
        try:
            reader, writer = await raw_websocket(url)
        except (ConnectionError, OSError):
            return
        writer.write(masked_frame(b"4{"))
        try:
            await asyncio.wait_for(reader.read(), 5)
        except (TimeoutError, ConnectionError, OSError):
            pass
        writer.close()
        done += 1

    await _run_bounded(one, count, concurrency)
    return done


async def _http(url: str, request: bytes, read_timeout: float = 5.0) -> bytes:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(65536), read_timeout)
    finally:
        writer.close()


async def _open_polling(url: str) -> str:
    parts = urlsplit(url)
    answer = await _http(
        url,
        (
            f"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n"
        ).encode(),
    )
    body = answer.split(b"\r\n\r\n", 1)[1]
    return body.split(b'"sid":"', 1)[1].split(b'"', 1)[0].decode()


async def abandoned_polls(url: str, count: int, concurrency: int = 50) -> int:
    """Open long-polling sessions, start a poll on each, and hang up before it is answered."""
    parts = urlsplit(url)
    done = 0

    async def one() -> None:
        nonlocal done
        sid = await _open_polling(url)
        _, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(
            (
                f"GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()
        done += 1

    await _run_bounded(one, count, concurrency)
    return done


async def unexpected_posts(url: str, count: int, body: bytes = b"6") -> list[float]:
    """Long-polling POSTs carrying an unexpected packet; returns how long each answer took."""
    parts = urlsplit(url)
    took = []
    for _ in range(count):
        sid = await _open_polling(url)
        started = time.monotonic()
        await _http(
            url,
            (
                f"POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body,
        )
        took.append(time.monotonic() - started)
    return took


async def long_header(url: str, size: int = 9000) -> bytes:
    parts = urlsplit(url)
    return await _http(
        url, (f"GET /healthz HTTP/1.1\r\nHost: {parts.netloc}\r\nX-Junk: {'a' * size}\r\n\r\n").encode()
    )


async def slow_headers(url: str, wait: float) -> tuple[bytes, float]:
    """Send a request line and then nothing: how the server answers, and after how long."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    try:
        answer = await asyncio.wait_for(reader.read(65536), wait)
    except TimeoutError:
        answer = b""
    finally:
        writer.close()
    return answer, time.monotonic() - started


# Measurements (benchmarks.run hostile): the figures of docs/performance.md "Hostile clients".


async def _bystander(url: str, token: str, seconds: float) -> list[float]:
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, auth={"token": token}, transports=["websocket"])
    latencies = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await client.call("ping", {}, timeout=10)
            latencies.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.02)
    finally:
        await client.disconnect()
    return sorted(latencies)


async def _attacker(url: str, *args: str) -> asyncio.subprocess.Process:
    import sys

    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.hostile",
        *args,
        "--url",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def open_from(address: str, url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    parts = urlsplit(url)
    return await asyncio.open_connection(parts.hostname, parts.port, local_addr=(address, 0))


async def websocket_handshake(
    writer: asyncio.StreamWriter, reader: asyncio.StreamReader, query: str
) -> tuple[int, bytes]:
    """Send a websocket handshake; the answer's status and head."""
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /socket.io/?{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return int(head.split(b" ", 2)[1]), head


async def exhaust(url: str, kind: str, count: int, token: str = "") -> list[asyncio.StreamWriter]:
    """Try to take `count` file descriptors of the server, one way each (bounded, loopback):
    `user`: websockets connected with one user's token; `idle`: HTTP connections that send
    nothing, from 127.0.0.2; `pending`: sessions that keep sending a refused CONNECT, from
    127.0.0.3. Returns what the server let it keep open."""
    held: list[asyncio.StreamWriter] = []

    async def one() -> None:
        address = {"user": "127.0.0.1", "idle": "127.0.0.2", "pending": "127.0.0.3"}[kind]
        try:
            reader, writer = await open_from(address, url)
        except OSError:
            return
        try:
            if kind == "idle":
                try:
                    if not await asyncio.wait_for(reader.read(1), 0.5):
                        writer.close()
                        return
                except TimeoutError:
                    held.append(writer)  # neither answered nor closed: it holds a descriptor
                    return
                writer.close()
                return
            status, _ = await websocket_handshake(writer, reader, "EIO=4&transport=websocket")
            if status != 101:
                writer.close()
                return
            auth = json.dumps({"token": token if kind == "user" else "refused"}).encode()
            writer.write(masked_frame(b"40" + auth))
            await writer.drain()
            held.append(writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            writer.close()

    await _run_bounded(one, count, 50)
    return held


async def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _healthy(url: str) -> bool:
    import aiohttp

    try:
        async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def measure(service, user_token: str, publisher_token: str) -> dict[str, float]:
    """Every figure against one running service (`service` as tests.service_process makes)."""
    import aiohttp

    figures: dict[str, float] = {}
    log_before = service.log_path.stat().st_size
    done = await malformed_sessions(service.url, 10_000)
    figures["malformed_packets"] = done
    figures["log_bytes_for_10000_malformed"] = service.log_path.stat().st_size - log_before

    rss_before = service.rss_kb()
    await abandoned_polls(service.url, 3000)
    await asyncio.sleep(2)
    figures["rss_growth_kb_after_3000_abandoned_polls"] = service.rss_kb() - rss_before

    slowest = 0.0
    for body in (b"6", b"0", b"2", b"7"):
        slowest = max(slowest, *await unexpected_posts(service.url, 30, body))
    figures["slowest_unexpected_post_s"] = slowest

    idle = await _bystander(service.url, user_token, 3)
    attackers = [
        await _attacker(service.url, "flood", "--seconds", "6"),
        await _attacker(service.url, "malformed", "--count", "1000000"),
    ]
    await asyncio.sleep(0.5)
    flooded = await _bystander(service.url, user_token, 4)
    for attacker in attackers:
        if attacker.returncode is None:
            attacker.kill()
        await attacker.wait()
    figures["bystander_p50_ms_idle"] = idle[len(idle) // 2]
    figures["bystander_p99_ms_idle"] = idle[int(len(idle) * 0.99) - 1]
    figures["bystander_p50_ms_under_flood"] = flooded[len(flooded) // 2]
    figures["bystander_p99_ms_under_flood"] = flooded[int(len(flooded) * 0.99) - 1]

    rss_before = service.rss_kb()
    pinger = await _attacker(service.url, "pings", "--seconds", "6")
    await asyncio.sleep(0.5)
    pinged = await _bystander(service.url, user_token, 4)
    figures["rss_growth_kb_under_ping_frame_flood"] = service.rss_kb() - rss_before
    if pinger.returncode is None:
        pinger.kill()
    await pinger.wait()
    figures["bystander_p99_ms_under_ping_frame_flood"] = pinged[int(len(pinged) * 0.99) - 1]

    pid = service.process.pid
    for kind in ("user", "idle", "pending"):
        before = await _fds(pid)
        held = await exhaust(service.url, kind, 3000, user_token)
        figures[f"server_fds_added_by_3000_{kind}_attempts"] = await _fds(pid) - before
        figures[f"healthz_during_{kind}_attack"] = 1.0 if await _healthy(service.url) else 0.0
        for writer in held:
            writer.close()
        await asyncio.sleep(1.5)  # the server lets go of them

    lost = 0
    async with aiohttp.ClientSession() as http:
        for round_number in range(6):
            user = f"durable{round_number}"

            async def notify(n: int, user: str = user) -> int:
                async with http.post(
                    f"{service.url}/api/v1/notifications",
                    json={"user_ids": [user], "title": f"n{n}"},
                    headers={"Authorization": f"Bearer {publisher_token}"},
                ) as r:
                    return r.status

            statuses = await asyncio.gather(*(notify(n) for n in range(200)))
            service.process.kill()
            await service.process.wait()
            await service.start()
            async with http.get(
                f"{service.url}/api/v1/notifications?user_id={user}",
                headers={"Authorization": f"Bearer {publisher_token}"},
            ) as r:
                stored = (await r.json())["unread"] if r.status == 200 else 0
            lost += statuses.count(201) - stored
    figures["acknowledged_lost_after_kill_9_in_6_rounds_of_200"] = lost
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("attack", choices=["flood", "pings", "malformed", "abandoned-polls", "posts"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    if args.attack == "flood":
        print(asyncio.run(flood_noops(args.url, args.seconds)), flush=True)
    elif args.attack == "pings":
        print(asyncio.run(flood_pings(args.url, args.seconds)), flush=True)
    elif args.attack == "malformed":
        print(asyncio.run(malformed_sessions(args.url, args.count)), flush=True)
    elif args.attack == "abandoned-polls":
        print(asyncio.run(abandoned_polls(args.url, args.count)), flush=True)
    else:
        took = asyncio.run(unexpected_posts(args.url, args.count))
        print(max(took), flush=True)


if __name__ == "__main__":
    main()
