"""The HTTP client that sends webhooks (`webhooks.Poster`), on aiohttp: no redirects (a
redirect could lead a signed request to a private address), a bounded answer, a timeout."""

from __future__ import annotations

import aiohttp

_MAX_ANSWER_BYTES = 65536


class HttpPoster:
    def __init__(self, timeout_seconds: float = 10.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as answer:
                await answer.content.read(_MAX_ANSWER_BYTES)
                return answer.status
        except aiohttp.ClientError as exc:
            raise OSError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
