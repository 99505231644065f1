"""Web Push: a notification nobody saw in time goes to the user's browsers, even closed ones.

Browsers register a subscription (RFC 8030: an endpoint at their push service, and keys);
each escalation sends one message per subscription, encrypted for it (RFC 8291, aes128gcm,
with http-ece) and signed with the server's VAPID key (RFC 8292, with py-vapid). Every message
is a durable job: retried with backoff on 429, 5xx or no answer; a subscription the push
service says is gone (404, 410) is removed. Endpoints are user input: they must be https (or
http where private destinations are allowed) and resolve to public addresses.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import time
from typing import Any
from urllib.parse import urlsplit

import http_ece
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from .clock import Clock, millis
from .destinations import Destinations, UnsafeURL
from .errors import ErrorCode, NotifierError
from .jobs import Retries
from .logs import get_logger
from .records import Job, JobState, Notification, PushSubscription
from .store import Store
from .webhooks import Poster

log = get_logger("notifier.service")

PUSH = "push"
# How long a push service keeps a message for a browser that is offline.
_TTL_SECONDS = 86400
_GONE = (404, 410)


def b64url_decode(value: str) -> bytes:
    """Strict: a character outside the base64url alphabet is an error, not skipped."""
    return base64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def load_vapid(key: str) -> Vapid02:
    """A VAPID private key: PEM, or the raw 32 bytes in base64url (what web-push tools print)."""
    key = key.strip()
    if key.startswith("-----BEGIN"):
        return Vapid02.from_pem(key.encode())
    return Vapid02.from_raw(key.encode())


def public_key_of(vapid: Vapid02) -> str:
    """The applicationServerKey browsers subscribe with (base64url, uncompressed point)."""
    encoding, form = serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    raw = vapid.public_key.public_bytes(encoding, form)
    return b64url(raw)


def check_keys(p256dh: str, auth: str) -> None:
    """ValueError unless `p256dh` is a P-256 public key and `auth` 16 bytes (base64url)."""
    try:
        point, secret = b64url_decode(p256dh), b64url_decode(auth)
    except (binascii.Error, ValueError):
        raise ValueError("keys must be base64url") from None
    if len(secret) != 16:
        raise ValueError("keys.auth must be 16 bytes")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError:
        raise ValueError("keys.p256dh is not a P-256 public key") from None


def encrypt(payload: bytes, p256dh: str, auth: str) -> bytes:
    """The message body for one subscription (RFC 8291): a fresh key pair each time."""
    sender = ec.generate_private_key(ec.SECP256R1())
    encrypted: bytes = http_ece.encrypt(
        payload,
        salt=os.urandom(16),
        private_key=sender,
        dh=b64url_decode(p256dh),
        auth_secret=b64url_decode(auth),
        version="aes128gcm",
    )
    return encrypted


def _origin(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


class WebPush:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        poster: Poster,
        *,
        vapid_key: str,
        subject: str,
        allow_private: bool,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._store = store
        self._clock = clock
        self._poster = poster
        self._vapid = load_vapid(vapid_key)
        self.public_key = public_key_of(self._vapid)
        self._subject = subject
        self._destinations = Destinations(allow_private, ("http", "https") if allow_private else ("https",))
        self._retries = Retries(max_attempts, retry_base_seconds, retry_max_seconds)
        self.poke: Any = lambda: None
        # A VAPID header per push service, signed once and reused (valid 12 h, renewed at 6).
        self._signed: dict[str, tuple[float, dict[str, str]]] = {}
        # For the metrics.
        self.sent = 0
        self.retried = 0
        self.failed = 0
        self.expired = 0  # subscriptions the push service said are gone

    async def subscribe(self, user_id: str, endpoint: str, p256dh: str, auth: str) -> PushSubscription:
        try:
            await self._destinations.check(endpoint)
            check_keys(p256dh, auth)
        except (UnsafeURL, ValueError) as exc:
            log.warning("push_subscription_refused", user=user_id, detail=str(exc))
            raise NotifierError(ErrorCode.INVALID_PAYLOAD, f"push subscription: {exc}") from None
        subscription = PushSubscription(endpoint, user_id, p256dh, auth, millis(self._clock.now()))
        await self._store.add_push_subscription(subscription)
        return subscription

    async def unsubscribe(self, user_id: str, endpoint: str) -> bool:
        return await self._store.remove_push_subscription(endpoint, user_id)

    async def escalate(self, notification: Notification, escalation: Job) -> None:
        subscriptions = await self._store.push_subscriptions(notification.user_id)
        now = millis(self._clock.now())
        message = {
            "id": notification.id,
            "title": notification.title,
            "body": notification.body,
            "data": notification.data,
            "category": notification.category,
            "critical": notification.critical,
        }
        jobs = []
        for s in subscriptions:
            device = hashlib.sha256(s.endpoint.encode()).hexdigest()[:16]
            payload = {"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth, "message": message}
            jobs.append(Job(f"{escalation.id}:push:{device}", PUSH, device, now, payload))
        if jobs:
            await self._store.add_jobs(jobs)
            self.poke()

    def _authorization(self, audience: str) -> dict[str, str]:
        now = time.time()
        signed = self._signed.get(audience)
        if signed is None or signed[0] < now:
            claims = {"sub": self._subject, "aud": audience, "exp": int(now) + 12 * 3600}
            signed = self._signed[audience] = (now + 6 * 3600, self._vapid.sign(claims))
            if len(self._signed) > 1000:  # push services are few; endpoints are not
                self._signed.pop(next(iter(self._signed)))
        return signed[1]

    async def send(self, job: Job) -> None:
        payload = job.payload
        endpoint = payload["endpoint"]
        try:
            await self._destinations.check(endpoint)
        except UnsafeURL as exc:
            await self._store.finish_job(job.id, JobState.FAILED, f"refused: {exc}")
            self.failed += 1
            return
        body = encrypt(orjson.dumps(payload["message"]), payload["p256dh"], payload["auth"])
        headers = {
            **self._authorization(_origin(endpoint)),
            "TTL": str(_TTL_SECONDS),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Urgency": "high" if payload["message"].get("critical") else "normal",
        }
        try:
            status = await self._poster.post(endpoint, body, headers)
            error = None if 200 <= status < 300 else f"HTTP {status}"
        except (OSError, TimeoutError) as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"[:300]
        if error is None:
            await self._store.finish_job(job.id, JobState.DONE)
            self.sent += 1
        elif status in _GONE:
            await self._store.remove_push_subscription(endpoint)
            await self._store.finish_job(job.id, JobState.CANCELLED, f"subscription gone ({error})")
            self.expired += 1
            log.info("push_subscription_expired", endpoint=_origin(endpoint), status=status)
        elif await self._retries.after_failure(self._store, self._clock, job, error):
            self.failed += 1
            log.warning("push_failed", job=job.id, error=error)
        else:
            self.retried += 1
