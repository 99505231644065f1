"""The channels escalations go out on, as the settings configure them: each is off (None)
until its settings are given (docs/channels.md)."""

from __future__ import annotations

from dataclasses import dataclass

from .clock import Clock
from .email_digest import EmailDigests
from .escalation import Channel
from .settings import Settings
from .store import Store
from .webhooks import Poster, Webhooks
from .webpush import WebPush


class NoPoster:
    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        raise OSError("no HTTP client was given to the service (Notifier(poster=...))")


@dataclass
class Channels:
    webhooks: Webhooks | None
    push: WebPush | None
    email: EmailDigests | None

    def by_name(self) -> dict[str, Channel]:
        named: dict[str, Channel | None] = {"webhook": self.webhooks, "push": self.push, "email": self.email}
        return {name: channel for name, channel in named.items() if channel is not None}


def open_channels(settings: Settings, store: Store, clock: Clock, poster: Poster | None) -> Channels:
    poster = poster or NoPoster()
    # Attempts and backoff are the webhooks' settings, for every channel.
    attempts = settings.webhook_max_attempts
    base, most = settings.webhook_retry_base_seconds, settings.webhook_retry_max_seconds
    webhooks = None
    if settings.webhook_url and settings.webhook_secret is not None:
        webhooks = Webhooks(
            store,
            clock,
            poster,
            url=settings.webhook_url,
            secret=settings.webhook_secret.get_secret_value(),
            allow_private=settings.webhook_allow_private,
            max_attempts=attempts,
            retry_base_seconds=base,
            retry_max_seconds=most,
        )
    push = None
    if settings.vapid_private_key is not None:
        push = WebPush(
            store,
            clock,
            poster,
            vapid_key=settings.vapid_private_key.get_secret_value(),
            subject=settings.vapid_subject,
            allow_private=settings.push_allow_private,
            max_attempts=attempts,
            retry_base_seconds=base,
            retry_max_seconds=most,
        )
    email = None
    if settings.smtp_url:
        email = EmailDigests(
            store,
            clock,
            smtp_url=settings.smtp_url,
            sender=settings.email_from,
            window_seconds=settings.email_digest_seconds,
            public_url=settings.public_url,
            max_attempts=attempts,
            retry_base_seconds=base,
            retry_max_seconds=most,
        )
    return Channels(webhooks, push, email)
