"""E-mail digests: one mail per user per window, never one per notification.

An escalation to `email` adds the notification as an item of the user's digest for the
current window (`NOTIFIER_EMAIL_DIGEST_SECONDS`) and makes sure the digest job exists, due
at the window's end. The digest job sends every item of its window in one message, with a
text and an HTML part and an unsubscribe link (also as `List-Unsubscribe`, one-click per
RFC 8058), then finishes the items. The address is the one in the user's preferences;
unsubscribing clears it. The message id derives from the digest's, so a resend after a crash
carries the same `Message-ID`.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
from email.message import EmailMessage
from urllib.parse import quote, urlsplit

import aiosmtplib

from .clock import Clock, millis
from .jobs import Retries
from .logs import get_logger
from .models import Preferences
from .records import Job, JobState, Notification
from .store import Store

log = get_logger("notifier.service")

EMAIL = "email"
EMAIL_ITEM = "email_item"  # never claimed: a digest takes its items
_KEY_SETTING = "email_unsubscribe_key"
_MAX_ITEMS = 50  # listed in one mail; the rest are counted


class EmailDigests:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        *,
        smtp_url: str,
        sender: str,
        window_seconds: float,
        public_url: str,
        max_attempts: int,
        retry_base_seconds: float,
        retry_max_seconds: float,
    ) -> None:
        self._store = store
        self._clock = clock
        parts = urlsplit(smtp_url)
        self._host = parts.hostname or "localhost"
        self._port = parts.port or (465 if parts.scheme == "smtps" else 25)
        self._username, self._password = parts.username, parts.password
        self._use_tls = parts.scheme == "smtps"
        # None: STARTTLS when the server offers it (aiosmtplib's default).
        self._start_tls = True if "starttls=true" in parts.query else None
        self._sender = sender
        self._window_ms = int(window_seconds * 1000)
        self._public_url = public_url.rstrip("/")
        self._retries = Retries(max_attempts, retry_base_seconds, retry_max_seconds)
        self._key: bytes | None = None
        self.poke = lambda: None
        # For the metrics.
        self.sent = 0
        self.retried = 0
        self.failed = 0

    async def escalate(self, notification: Notification, escalation: Job) -> None:
        now = millis(self._clock.now())
        window = now // self._window_ms
        digest = f"digest:{notification.user_id}:{window}"
        due = (window + 1) * self._window_ms
        listed = {"notification": notification.to_dict()}
        item = Job(f"{escalation.id}:email", EMAIL_ITEM, digest, now, listed)
        mail = Job(digest, EMAIL, notification.user_id, due, {"user_id": notification.user_id})
        await self._store.add_jobs([item, mail])

    async def send(self, job: Job) -> None:
        user_id = job.payload["user_id"]
        items = await self._store.group_jobs(EMAIL_ITEM, job.id)
        saved = await self._store.load_preferences(user_id)
        address = Preferences.model_validate(saved).email if saved is not None else None
        if not items or address is None:
            await self._store.finish_jobs([item.id for item in items], JobState.CANCELLED)
            await self._store.finish_job(job.id, JobState.CANCELLED, None if items else "nothing to send")
            return
        notifications = [Notification(**item.payload["notification"]) for item in items]
        message = self._compose(job.id, user_id, address, notifications, await self._unsubscribe_url(user_id))
        try:
            await aiosmtplib.send(
                message,
                hostname=self._host,
                port=self._port,
                username=self._username,
                password=self._password,
                use_tls=self._use_tls,
                start_tls=self._start_tls,
                timeout=30,
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
            if await self._retries.after_failure(self._store, self._clock, job, error):
                self.failed += 1
                log.warning("email_failed", job=job.id, error=error)
            else:
                self.retried += 1
            return
        await self._store.finish_jobs([item.id for item in items], JobState.DONE)
        await self._store.finish_job(job.id, JobState.DONE)
        self.sent += 1

    def _compose(
        self, digest: str, user_id: str, address: str, notifications: list[Notification], unsubscribe: str
    ) -> EmailMessage:
        count = len(notifications)
        message = EmailMessage()
        message["From"] = self._sender
        message["To"] = address
        message["Subject"] = (
            notifications[0].title if count == 1 else f"{count} notifications you have not seen"
        )
        domain = self._sender.rsplit("@", 1)[-1].strip("> ") or "notifier"
        message["Message-ID"] = f"<{hashlib.sha256(digest.encode()).hexdigest()[:32]}@{domain}>"
        message["List-Unsubscribe"] = f"<{unsubscribe}>"
        message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        shown = notifications[:_MAX_ITEMS]
        more = count - len(shown)
        text = [f"- {n.title}" + (f"\n  {n.body}" if n.body else "") for n in shown]
        if more:
            text.append(f"... and {more} more")
        text.append(f"\nStop these e-mails: {unsubscribe}")
        message.set_content("\n".join(text))
        items = "".join(
            f"<li><strong>{html.escape(n.title)}</strong>"
            + (f"<br>{html.escape(n.body)}" if n.body else "")
            + "</li>"
            for n in shown
        )
        tail = f"<p>... and {more} more</p>" if more else ""
        link = f'<p><a href="{html.escape(unsubscribe, quote=True)}">Stop these e-mails</a></p>'
        message.add_alternative(f"<html><body><ul>{items}</ul>{tail}{link}</body></html>", subtype="html")
        return message

    # Unsubscribing: a link that needs no login, signed with a key the store keeps.

    async def _signing_key(self) -> bytes:
        if self._key is None:
            saved = await self._store.load_setting(_KEY_SETTING)
            if saved is None:
                saved = os.urandom(32).hex()
                await self._store.save_setting(_KEY_SETTING, saved)
                saved = await self._store.load_setting(_KEY_SETTING) or saved  # another node's
            self._key = bytes.fromhex(saved)
        return self._key

    async def signature(self, user_id: str) -> str:
        return hmac.new(await self._signing_key(), user_id.encode(), hashlib.sha256).hexdigest()

    async def _unsubscribe_url(self, user_id: str) -> str:
        signature = await self.signature(user_id)
        return f"{self._public_url}/api/v1/email/unsubscribe?user={quote(user_id)}&sig={signature}"

    async def unsubscribe(self, user_id: str, signature: str) -> bool:
        if not hmac.compare_digest(await self.signature(user_id), signature):
            return False
        saved = await self._store.load_preferences(user_id)
        preferences = Preferences.model_validate(saved) if saved is not None else Preferences()
        cleared = preferences.model_copy(update={"email": None})
        await self._store.save_preferences(user_id, cleared.model_dump())
        log.info("email_unsubscribed", user=user_id)
        return True
