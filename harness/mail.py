"""A real SMTP server on localhost (aiosmtpd), for Synapse to send mail to.

Synapse sends the guard's step-up codes and owner notices through its own mailer, over
SMTP, exactly as in production; this server receives them and keeps them, so tests and
the replay read the inbox instead of trusting that a mail was sent.
"""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import attr
from aiosmtpd.controller import Controller

from harness.homeserver import free_port, wait_until

CODE = re.compile(r"Your code: ([0-9]{6})")


@attr.frozen
class Mail:
    """One message as received: its envelope recipient, headers and bodies."""

    to: str
    sender: str
    subject: str
    text: str
    html: str

    @property
    def code(self) -> str | None:
        """The step-up code the message carries, if it is a code email."""
        match = CODE.search(self.text)
        return match[1] if match else None


class _Inbox:
    """aiosmtpd's handler: keeps each message once per recipient."""

    def __init__(self, received: list[Mail], lock: threading.Lock) -> None:
        self._received = received
        self._lock = lock

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(
            envelope.content, policy=email.policy.default
        )
        assert isinstance(message, EmailMessage)
        mails = [
            Mail(
                to=recipient,
                sender=str(message["From"]),
                subject=str(message["Subject"]),
                text=_body(message, "plain"),
                html=_body(message, "html"),
            )
            for recipient in envelope.rcpt_tos
        ]
        with self._lock:
            self._received.extend(mails)
        return "250 Message accepted for delivery"


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    return str(part.get_content()) if part is not None else ""


class MailServer:
    def __init__(self) -> None:
        self.port = free_port()
        self._received: list[Mail] = []
        self._lock = threading.Lock()
        self._controller = Controller(
            _Inbox(self._received, self._lock), hostname="127.0.0.1", port=self.port
        )
        self._controller.start()

    def close(self) -> None:
        self._controller.stop()

    def settings(self) -> dict[str, Any]:
        """Synapse's `email:` section, sending here."""
        return {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "enable_tls": False,
            "require_transport_security": False,
            "notif_from": "%(app)s <noreply@localhost>",
            "app_name": "Tchap",
            "notif_for_new_users": False,
        }

    def inbox(self, address: str) -> list[Mail]:
        """What `address` received so far, oldest first."""
        with self._lock:
            return [mail for mail in self._received if mail.to == address]

    def wait_for(
        self, address: str, matches: Callable[[Mail], bool], timeout: float = 15
    ) -> Mail:
        """The first message to `address` that `matches`, once it has arrived."""

        def found() -> Mail | None:
            return next((m for m in self.inbox(address) if matches(m)), None)

        mail: Mail = wait_until(found, timeout)
        return mail

    def next_code(self, address: str, after: int, timeout: float = 15) -> str:
        """The code of the first code email to `address` after its `after` messages."""
        mails = wait_until(
            lambda: [m for m in self.inbox(address)[after:] if m.code], timeout
        )
        code: str = mails[0].code
        return code
