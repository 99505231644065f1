"""`notifier serve --workers N`: N worker processes behind one port.

The supervisor owns the listening socket. For each connection it peeks at the request line
(MSG_PEEK: the bytes stay in the kernel for the worker to read) and passes the socket itself
to a worker over a Unix socket (SCM_RIGHTS): the worker a long-polling sid names
(`worker_routing`), else the next one in turn. After that hand-over the supervisor is out of
the connection's path: a websocket's frames, a poll's body and the answers go between the
client and the worker, which sees the client's own address (so per-address limits hold).
This is `@socket.io/sticky`'s idea without its copy of the first request, and it was chosen
over a proxy in the supervisor, which would read and write every byte of every connection
once more (see docs/performance.md for what the hand-over costs).

A worker that dies is started again; its clients reconnect to the others and replay what they
missed, as when a node of a cluster dies. SIGTERM or SIGINT drains every worker, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .logs import get_logger
from .worker_routing import REQUEST_LINE_LIMIT, request_line_complete, worker_of_request

log = get_logger("notifier.supervisor")

# How long a new connection may take to send its request line before it is closed (a slow
# client holds no worker meanwhile).
_REQUEST_LINE_SECONDS = 10.0
# Connections accepted per wake-up of the listener before giving the loop back.
_ACCEPTS_PER_WAKE = 64
# A worker that dies again within this long of its start waits longer before the next start
# (doubling up to the last), so one that cannot run does not spin.
_RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0)
_STABLE_SECONDS = 30.0
_READY = b"ready"


@dataclass(eq=False)
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    channel: socket.socket | None = None
    ready: bool = False
    started_at: float = 0.0
    restarts: int = 0
    waiter: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(
        self,
        listener: socket.socket,
        count: int,
        worker_command: list[str],
        *,
        drain_seconds: float,
    ) -> None:
        self._listener = listener
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # Accepted only once the request's first bytes are in: the peek that follows then
            # almost always finds the request line, with no wait for readiness (Linux).
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, int(_REQUEST_LINE_SECONDS))
        self._command = worker_command
        self._workers = [_Worker(index) for index in range(count)]
        self._turn = itertools.cycle(range(count))
        self._drain_seconds = drain_seconds
        self._directory = Path(tempfile.mkdtemp(prefix="notifier-workers-"))
        self._stopping = False
        self._failed_start: int | None = None
        self._all_ready = asyncio.Event()
        # Connections whose request line has not come whole yet: the socket, its deadline, and
        # whether part of it came (its low-water mark was raised).
        self._waiting: dict[int, tuple[socket.socket, float, bool]] = {}
        self._loop = asyncio.get_running_loop()

    async def run(self) -> int:
        """Start the workers, serve until a signal, drain; the exit status."""
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, stop.set)
        try:
            for worker in self._workers:
                await self._start(worker)
            started = asyncio.ensure_future(self._all_ready.wait())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({started, stopped}, return_when=asyncio.FIRST_COMPLETED)
            started.cancel()
            if self._failed_start is not None or stop.is_set():
                stopped.cancel()
                return 2 if self._failed_start is not None else 0
            self._listener.setblocking(False)
            self._loop.add_reader(self._listener.fileno(), self._accept)
            host, port = self._listener.getsockname()[:2]
            log.info("listening", url=f"http://{host}:{port}", workers=len(self._workers))
            await stopped
            return 0 if self._failed_start is None else 2
        finally:
            await self._stop_all()
            shutil.rmtree(self._directory, ignore_errors=True)

    # Workers

    async def _start(self, worker: _Worker) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        command = [
            *self._command,
            "--worker",
            f"{worker.index}/{len(self._workers)}",
            "--channel-fd",
            str(theirs.fileno()),
            "--worker-directory",
            str(self._directory),
        ]
        worker.process = await asyncio.create_subprocess_exec(*command, pass_fds=[theirs.fileno()])
        theirs.close()
        worker.channel = ours
        worker.ready = False
        worker.started_at = time.monotonic()
        self._loop.add_reader(ours.fileno(), self._heard, worker)
        worker.waiter = self._loop.create_task(self._watch(worker))
        log.info("worker_started", worker=worker.index, pid=worker.process.pid)

    def _heard(self, worker: _Worker) -> None:
        channel = worker.channel
        assert channel is not None
        try:
            message = channel.recv(64)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if message == _READY:
            worker.ready = True
            if all(w.ready for w in self._workers):
                self._all_ready.set()
        elif not message:  # the worker is gone; _watch restarts it
            self._loop.remove_reader(channel.fileno())

    async def _watch(self, worker: _Worker) -> None:
        assert worker.process is not None
        status = await worker.process.wait()
        self._retire(worker)
        if self._stopping:
            return
        if not self._all_ready.is_set():
            # A worker that cannot start (its configuration, an unreachable store) has said
            # why on stderr; the others are stopped and the supervisor exits with it.
            log.error("worker_failed_to_start", worker=worker.index, status=status)
            self._failed_start = worker.index
            self._all_ready.set()
            return
        log.warning("worker_died", worker=worker.index, status=status, pid=worker.process.pid)
        stable = time.monotonic() - worker.started_at > _STABLE_SECONDS
        worker.restarts = 0 if stable else worker.restarts + 1
        await asyncio.sleep(_RESTART_DELAYS[min(worker.restarts, len(_RESTART_DELAYS) - 1)])
        if not self._stopping:
            await self._start(worker)

    def _retire(self, worker: _Worker) -> None:
        worker.ready = False
        if worker.channel is not None:
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(worker.channel.fileno())
            worker.channel.close()
            worker.channel = None

    async def _stop_all(self) -> None:
        """SIGTERM to every worker (each drains its connections), SIGKILL to any still running
        after its drain and a margin."""
        # The listener stays open while the workers drain, as one process's does: readiness
        # says 503 meanwhile and the connections here go on being served.
        self._stopping = True
        running = [w for w in self._workers if w.process is not None and w.process.returncode is None]
        for worker in running:
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        waiters = [w.waiter for w in self._workers if w.waiter is not None]
        if waiters:
            _, late = await asyncio.wait(waiters, timeout=self._drain_seconds + 15)
            for worker in running:
                if worker.process is not None and worker.process.returncode is None:
                    log.warning("worker_killed", worker=worker.index, reason="did not stop in time")
                    worker.process.kill()
            if late:
                await asyncio.wait(late, timeout=5)
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self._listener.fileno())
        self._listener.close()
        for connection, _, _ in self._waiting.values():
            connection.close()
        self._waiting.clear()
        log.info("workers_stopped")

    # Connections

    def _accept(self) -> None:
        for _ in range(_ACCEPTS_PER_WAKE):
            try:
                connection, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the backlog waits for the next wake
                log.warning("accept_failed", detail=exc.strerror)
                return
            connection.setblocking(False)
            self._peek(connection, time.monotonic() + _REQUEST_LINE_SECONDS)

    def _peek(self, connection: socket.socket, deadline: float, partial: bool = False) -> None:
        try:
            head = connection.recv(REQUEST_LINE_LIMIT, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            self._wait(connection, deadline, partial)
            return
        except OSError:
            connection.close()
            return
        if not head:  # closed before a byte
            connection.close()
        elif request_line_complete(head):
            if partial:  # the worker reads this socket as usual
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
            self._hand_over(connection, worker_of_request(head))
        else:
            # Part of the line. The bytes stay in the socket, which would stay readable: it is
            # made readable again only once more have come (the receive low-water mark), so a
            # client sending a byte at a time costs a peek per byte, not a busy loop.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, len(head) + 1)
            self._wait(connection, deadline, True)

    def _wait(self, connection: socket.socket, deadline: float, partial: bool) -> None:
        fd = connection.fileno()
        self._waiting[fd] = (connection, deadline, partial)
        self._loop.add_reader(fd, self._readable, fd)
        self._loop.call_later(max(deadline - time.monotonic(), 0), self._expire, fd, deadline)

    def _readable(self, fd: int) -> None:
        self._loop.remove_reader(fd)
        waiting = self._waiting.pop(fd, None)
        if waiting is not None:
            self._peek(*waiting)

    def _expire(self, fd: int, deadline: float) -> None:
        """A connection that has not sent its request line in time is closed (the same fd
        may be another connection's by now: its deadline tells)."""
        waiting = self._waiting.get(fd)
        if waiting is not None and waiting[1] == deadline:
            del self._waiting[fd]
            self._loop.remove_reader(fd)
            waiting[0].close()

    def _hand_over(self, connection: socket.socket, named: int | None) -> None:
        """To the worker the sid names when it is up, else to the next ready one in turn (a
        sid of a worker that died: the new one answers that it does not know it)."""
        count = len(self._workers)
        placed = named is not None and named < count and self._workers[named].ready
        # Only connections no sid places take a turn: a polling client's second connection
        # (its POST beside the pending GET) would otherwise give every handshake one parity.
        first = named if placed and named is not None else next(self._turn)
        candidates = [self._workers[(first + step) % count] for step in range(count)]
        for worker in candidates:
            if not worker.ready or worker.channel is None:
                continue
            try:
                socket.send_fds(worker.channel, [b"c"], [connection.fileno()])
            except (BlockingIOError, InterruptedError):
                continue  # its queue is full: a stalled worker takes no more
            except OSError:
                worker.ready = False
                continue
            break
        connection.close()


def worker_command() -> list[str]:
    """How the supervisor starts a worker: this interpreter, `notifier serve` (the worker's
    own arguments follow)."""
    return [sys.executable, "-m", "notifier", "serve"]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0))
