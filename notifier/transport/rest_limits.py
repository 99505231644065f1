"""A rate limit per token on REST: the same numbers as a socket connection's (users: the user
rate; publishers and admins: the worker rate), refused with 429 and `Retry-After`."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from ..auth import Claims
from ..clock import Clock
from ..errors import ErrorCode, NotifierError
from ..settings import Settings
from ..wire.ratelimit import TokenBucket, Verdict

# Tokens whose buckets are remembered (the least recently used are forgotten: a forgotten
# token starts again with a full burst, which is what a new one gets anyway).
_MAX_TOKENS = 10_000


class RestRateLimit:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._settings = settings
        self._clock = clock
        self._buckets: OrderedDict[bytes, TokenBucket] = OrderedDict()

    def charge(self, token: str, claims: Claims) -> None:
        """Count one request against the token; RATE_LIMITED when it is over."""
        key = hashlib.blake2b(token.encode(), digest_size=16).digest()
        bucket = self._buckets.get(key)
        if bucket is None:
            settings = self._settings
            if claims.can_publish:
                rate, burst = settings.worker_rate_per_second, settings.worker_rate_burst
            else:
                rate, burst = settings.user_rate_per_second, settings.user_rate_burst
            bucket = self._buckets[key] = TokenBucket(rate, burst, float("inf"), self._clock)
            if len(self._buckets) > _MAX_TOKENS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take() is not Verdict.ALLOW:
            raise NotifierError(ErrorCode.RATE_LIMITED, "too many requests with this token; slow down")
