"""What the supervisor of `notifier serve --workers N` and its workers agree on: who a worker
is, how its sids name it, where its sockets are, and which worker a connection belongs to.

A long-polling session lives in one worker's memory, so every request carrying its sid must
reach that worker. Each worker puts `w<index>.` before its sids; the supervisor reads the
request line of a new connection (peeking, so the worker still reads every byte itself) and
passes the connection to the worker its sid names, or to the next worker when it names none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

# The most of a request that is looked at for its request line; a longer line is not ours to
# judge (the worker it goes to answers it, 414 or 400).
REQUEST_LINE_LIMIT = 8192
_SEPARATOR = "."


@dataclass(frozen=True, slots=True)
class WorkerRole:
    """This process is worker `index` of `count` under a supervisor."""

    index: int
    count: int
    # The supervisor's end hands connections over this Unix socket (SOCK_SEQPACKET).
    channel_fd: int
    # Where the workers' own sockets are (each one's forwarded requests and scrapes).
    directory: Path

    @property
    def sid_prefix(self) -> str:
        return sid_prefix(self.index)

    def forward_socket(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"

    def scrape_socket(self, index: int) -> Path:
        return self.directory / f"worker-{index}.internal.sock"

    @property
    def siblings(self) -> list[int]:
        return [index for index in range(self.count) if index != self.index]


def sid_prefix(index: int) -> str:
    return f"w{index}{_SEPARATOR}"


def worker_of_sid(sid: str | None) -> int | None:
    """The worker a sid names, None when it names none (not made by a worker)."""
    if not sid or sid[0] != "w":
        return None
    head, separator, _ = sid.partition(_SEPARATOR)
    if not separator or not head[1:].isdigit() or len(head) > 6:
        return None
    return int(head[1:])


def worker_of_request(head: bytes) -> int | None:
    """The worker named by the `sid` of the request line at the start of `head` (the bytes
    received so far on a new connection), None if it names none."""
    line, _, _ = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    try:
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return None
    query = urlsplit(target).query
    if "sid=" not in query:
        return None
    for name, value in parse_qsl(query):
        if name == "sid":
            return worker_of_sid(value)
    return None


def request_line_complete(head: bytes) -> bool:
    """True once `head` holds the whole request line, or as much as will be looked at."""
    return b"\n" in head or len(head) >= REQUEST_LINE_LIMIT
