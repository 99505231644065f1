"""E-mail digests against a real SMTP server (aiosmtpd): one mail per user per window, with a
text and an HTML part and a working unsubscribe link; an SMTP server that is down gets the
digest once it is back."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

from notifier import Settings
from notifier.auth import Role
from notifier.records import JobState
from tests.conftest import RunningServer, eventually, make_settings, until
from tests.service_process import free_port


class Mailbox:
    """aiosmtpd's handler: every message it accepts, parsed as a mail client would."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"


class SmtpServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.mailbox = Mailbox()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


WINDOW = 2.0


@pytest.fixture
def server_settings(tmp_path: Path, smtp: SmtpServer) -> Settings:
    return make_settings(
        tmp_path,
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        email_from="Notifier <notifier@example.com>",
        email_digest_seconds=WINDOW,
        webhook_retry_base_seconds=0.2,
        webhook_retry_max_seconds=0.5,
    )


EMAIL = {"after_seconds": 1, "channels": ["email"]}


async def notify(server: RunningServer, user: str, title: str, body: str | None = None) -> str:
    status, answer = await server.http(
        "POST",
        "/api/v1/notifications",
        server.token("svc", role=Role.PUBLISHER),
        json={"user_ids": [user], "title": title, "body": body, "escalate": EMAIL},
    )
    assert status == 201, answer
    return str(answer["notifications"][0]["id"])


async def set_address(server: RunningServer, user: str, address: str) -> None:
    preferences = {"email": address}
    status, answer = await server.http("PUT", "/api/v1/preferences", server.token(user), json=preferences)
    assert status == 200, answer


def parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    return str(text.get_content()), str(html.get_content())


async def test_unseen_notifications_go_out_as_one_digest_per_window(
    server: RunningServer, smtp: SmtpServer
) -> None:
    await set_address(server, "bob", "bob@example.com")
    titles = ["Build 1 failed", "Deploy <script>alert(1)</script>", "Disk 91% full"]
    for title in titles:
        await notify(server, "bob", title, body="details & more")
    await until(lambda: smtp.mailbox.messages, timeout=WINDOW + 10)
    (mail,) = smtp.mailbox.messages
    assert smtp.mailbox.recipients == [["bob@example.com"]]
    assert mail["Subject"] == "3 notifications you have not seen"
    assert mail["From"] == "Notifier <notifier@example.com>"
    text, html = parts(mail)
    for title in titles:
        assert title in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html  # escaped
    assert "details &amp; more" in html

    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and unsubscribe in text
    link = urlsplit(unsubscribe)
    status, answer = await server.http("POST", f"{link.path}?{link.query}")
    assert (status, answer) == (200, {"unsubscribed": "bob"})
    status, preferences = await server.http("GET", "/api/v1/preferences", server.token("bob"))
    assert preferences["email"] is None
    forged = await server.http("GET", f"{link.path}?user=alice&sig={link.query.split('sig=')[1]}")
    assert forged[0] == 403 and forged[1]["error"]["code"] == "FORBIDDEN"

    # Unsubscribed: the next window sends nothing; its digest is cancelled.
    note = await notify(server, "bob", "after unsubscribing")

    async def cancelled() -> bool:
        jobs = await server.notifier.store.get_jobs([f"{note}:escalation:email"])
        return bool(jobs) and jobs[0].state.value == "cancelled"

    await eventually(cancelled, timeout=WINDOW + 10)
    assert len(smtp.mailbox.messages) == 1


async def test_a_user_without_an_address_gets_no_mail(server: RunningServer, smtp: SmtpServer) -> None:
    await notify(server, "carol", "no address")
    await set_address(server, "bob", "bob@example.com")
    await notify(server, "bob", "marker")
    await until(lambda: smtp.mailbox.messages, timeout=WINDOW + 10)
    assert [m["Subject"] for m in smtp.mailbox.messages] == ["marker"]


async def test_an_smtp_server_that_is_down_gets_the_digest_when_it_is_back(
    server: RunningServer, smtp: SmtpServer
) -> None:
    await set_address(server, "bob", "bob@example.com")
    smtp.stop()
    note = await notify(server, "bob", "while the mail server was down")

    async def retried() -> bool:
        jobs = await server.notifier.store.list_jobs("email", JobState.PENDING, limit=10)
        return any(job.attempts >= 1 for job in jobs)

    await eventually(retried, timeout=WINDOW + 10)
    smtp.start()
    await until(lambda: smtp.mailbox.messages, timeout=15)
    (mail,) = smtp.mailbox.messages
    assert mail["Subject"] == "while the mail server was down"
    assert note


async def test_email_settings_are_checked_at_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="smtp://"):
        make_settings(tmp_path, smtp_url="http://mail.example.com", email_from="a@example.com")
    with pytest.raises(ValidationError, match="NOTIFIER_EMAIL_FROM"):
        make_settings(tmp_path, smtp_url="smtp://mail.example.com")
