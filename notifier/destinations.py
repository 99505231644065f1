"""Where the service may send on a client's or an operator's behalf (webhooks, push
endpoints): http(s) URLs whose host resolves to public addresses only, unless private ones
are allowed (a receiver on the same network, or a test). A URL that reaches loopback,
link-local or private addresses would let whoever chose it probe the internal network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from urllib.parse import urlsplit


class UnsafeURL(ValueError):
    pass


def check_url(url: str, schemes: tuple[str, ...] = ("http", "https")) -> tuple[str, int]:
    """The host and port of a URL with one of `schemes`, or UnsafeURL."""
    parts = urlsplit(url)
    if parts.scheme not in schemes or not parts.hostname:
        raise UnsafeURL(f"must be a {' or '.join(s + '://' for s in schemes)} URL with a host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeURL("has an invalid port") from None
    return parts.hostname, port


def private_addresses(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to that are not public (loopback, private, link-local,
    multicast, unspecified, reserved)."""
    found = []
    for *_, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(address[0])
        if not ip.is_global or ip.is_multicast:
            found.append(str(ip))
    return found


def check_destination(url: str, allow_private: bool, schemes: tuple[str, ...] = ("http", "https")) -> None:
    """UnsafeURL unless `url` may be sent to (this resolves its host: run it off the loop)."""
    host, port = check_url(url, schemes)
    if allow_private:
        return
    try:
        private = private_addresses(host, port)
    except OSError as exc:
        raise UnsafeURL(f"{host!r} does not resolve: {exc}") from exc
    if private:
        raise UnsafeURL(f"{host!r} resolves to a non-public address ({', '.join(private)})")


class Destinations:
    """`check_destination` off the event loop, each host's answer kept a minute: thousands of
    pushes to one push service resolve its name once, not once each."""

    def __init__(self, allow_private: bool, schemes: tuple[str, ...], keep_seconds: float = 60.0) -> None:
        self._allow_private = allow_private
        self._schemes = schemes
        self._keep = keep_seconds
        self._checked: dict[tuple[str, int], tuple[float, str | None]] = {}

    async def check(self, url: str) -> None:
        """UnsafeURL unless `url` may be sent to."""
        host, port = check_url(url, self._schemes)
        if self._allow_private:
            return
        now = time.monotonic()
        known = self._checked.get((host, port))
        if known is None or known[0] < now:
            try:
                await asyncio.to_thread(check_destination, url, False, self._schemes)
                verdict = None
            except UnsafeURL as exc:
                verdict = str(exc)
            if len(self._checked) > 10_000:
                self._checked.clear()
            known = self._checked[(host, port)] = (now + self._keep, verdict)
        if known[1] is not None:
            raise UnsafeURL(known[1])
