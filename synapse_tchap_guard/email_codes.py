"""The email-code step-up: a one-time code mailed to the account's verified addresses.

A code is six random digits, bound to one account and one UIA session, stored only as
a hash, valid for `email_code.valid_for` and for `max_tries` wrong entries, and used
at most once. Every wrong, used or expired code is a failed step-up (the endpoint
counts it towards `failed_step_ups_block_at`), so guessing blocks the account long
before it could succeed. The code email is itself a notice to the owner: it says who
asked, when and from where, and what to do if it was not them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Any

from synapse.module_api.errors import Codes, SynapseError

from synapse_tchap_guard import notice_texts, responses
from synapse_tchap_guard.audit import AuditEvent, format_timestamp
from synapse_tchap_guard.config import EmailCodeConfig
from synapse_tchap_guard.context import GuardContext
from synapse_tchap_guard.inputs import RequestInfo
from synapse_tchap_guard.mail import Mailer
from synapse_tchap_guard.notice_texts import Circumstances, mask_address
from synapse_tchap_guard.responses import format_wait
from synapse_tchap_guard.store.step_up_codes import Redeemed, TooManySent

logger = logging.getLogger(__name__)

CODE_DIGITS = 6
# A client asking again within this time gets the code already sent, not a new mail.
RESEND_AFTER_MS = 60_000
_LONGEST_INPUT = 64


class EmailCodes:
    def __init__(
        self, context: GuardContext, config: EmailCodeConfig, mailer: Mailer
    ) -> None:
        self._context = context
        self._config = config
        self._mailer = mailer

    async def usable(self, user_id: str) -> bool:
        """Whether a code can reach this account: mail is set up, and it has a
        verified address."""
        return bool(await self._mailer.addresses(user_id))

    async def describe(self, user_id: str) -> dict[str, Any]:
        """The stage's `params` in a challenge: where a code would go, masked."""
        addresses = await self._mailer.addresses(user_id)
        return {
            "addresses": [mask_address(a) for a in addresses],
            "code_length": CODE_DIGITS,
        }

    async def send(
        self, user_id: str, session_id: str, request: RequestInfo | None
    ) -> dict[str, Any]:
        """Mail a new code for the session (or keep the one just sent); the stage's
        `params` saying so. Raises a 429 past `max_sent`."""
        context = self._context
        config = self._config
        addresses = await self._mailer.addresses(user_id)
        if not addresses:
            raise responses.no_step_up_method()
        now = context.now()
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        issued = await context.store.step_up_codes.issue(
            user_id,
            session_id,
            _hash(user_id, session_id, code),
            now,
            config.valid_for_ms,
            RESEND_AFTER_MS,
            config.max_tries,
            config.max_sent,
        )
        if isinstance(issued, TooManySent):
            raise responses.too_many_codes(config.max_sent, issued.retry_after_ms)
        if issued.new:
            masked = [mask_address(address) for address in addresses]
            await context.report(
                [
                    AuditEvent(
                        action="step_up_code_sent",
                        ts=now,
                        user_id=user_id,
                        message=f"step-up code mailed to {user_id} ({', '.join(masked)})",
                        request=request,
                        guard={
                            "control": "directory",
                            "addresses": masked,
                            "expires": format_timestamp(issued.code.expires_ts),
                        },
                    )
                ]
            )
            message = notice_texts.code_email(
                user_id,
                context.api.server_name,
                code,
                format_wait(config.valid_for_ms),
                Circumstances(now, *_seen(request)),
            )
            context.api.run_as_background_process(
                "tchap_guard_mail_code", self._mail, user_id, addresses, message
            )
        return {
            **await self.describe(user_id),
            "code_sent": True,
            "expires_in_ms": issued.code.expires_ts - now,
            "tries_left": config.max_tries - issued.code.tries,
        }

    async def redeem(self, user_id: str, session_id: str, raw: Any) -> Redeemed:
        """Check a code entered; a wrong one spends a try."""
        if not isinstance(raw, str) or len(raw) > _LONGEST_INPUT:
            raise SynapseError(
                400,
                f"auth.code: the {CODE_DIGITS}-digit code from the email, as a string",
                Codes.INVALID_PARAM,
            )
        code = "".join(raw.split()).replace("-", "")
        expected = _hash(user_id, session_id, code)

        def matches(stored: str) -> bool:
            return hmac.compare_digest(stored, expected)

        return await self._context.store.step_up_codes.redeem(
            user_id, session_id, matches, self._context.now(), self._config.max_tries
        )

    async def _mail(
        self, user_id: str, addresses: list[str], message: notice_texts.Message
    ) -> None:
        """Send the code (in the background: the client is answered at once)."""
        try:
            await self._mailer.send(addresses, message)
        except Exception as error:
            logger.exception("tchap_guard could not mail a step-up code to %s", user_id)
            await self._context.report(
                [
                    AuditEvent(
                        action="owner_not_notified",
                        ts=self._context.now(),
                        user_id=user_id,
                        message=f"the step-up code of {user_id} could not be mailed",
                        reason=str(error),
                        guard={
                            "channel": "email",
                            "about": "step_up_code",
                            "why": "failed",
                        },
                    )
                ]
            )


def _hash(user_id: str, session_id: str, code: str) -> str:
    """Codes are kept hashed, bound to their account and session."""
    return hashlib.sha256(f"{user_id}\n{session_id}\n{code}".encode()).hexdigest()


def _seen(request: RequestInfo | None) -> tuple[str | None, str | None]:
    if request is None:
        return None, None
    return request.ip, request.user_agent
