"""The ways an account may prove it is its owner again (step up), and which to offer.

Plain Python, no Synapse: the endpoint asks Synapse what the account can do (does it
sign in with SSO, has it a password, has it a verified email address and can the
homeserver send mail) and this module decides what to offer: the configured methods
the account can use, in the configured order.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence

# User-Interactive Auth stage types. The email code is the guard's own stage, under
# its namespace; SSO and password are Synapse's.
EMAIL_CODE_STAGE = "fr.gouv.tchap.guard.email_code"
SSO_STAGE = "m.login.sso"
PASSWORD_STAGE = "m.login.password"


class Method(enum.Enum):
    SSO = "sso"
    EMAIL_CODE = "email_code"
    PASSWORD = "password"

    @property
    def stage(self) -> str:
        """The UIA stage type a client completes for this method."""
        return _STAGES[self]

    @property
    def label(self) -> str:
        """How the owner reads it in a notice."""
        return _LABELS[self]

    @classmethod
    def of_stage(cls, stage: str) -> Method | None:
        return next((method for method in cls if method.stage == stage), None)


_STAGES = {
    Method.SSO: SSO_STAGE,
    Method.EMAIL_CODE: EMAIL_CODE_STAGE,
    Method.PASSWORD: PASSWORD_STAGE,
}
_LABELS = {
    Method.SSO: "single sign-on",
    Method.EMAIL_CODE: "a code sent by email",
    Method.PASSWORD: "the account's password",
}

# What a phished password cannot pass. `password` is offered only when listed.
DEFAULT_METHODS: tuple[Method, ...] = (Method.SSO, Method.EMAIL_CODE)


def offered(
    configured: Sequence[Method], available: Collection[Method]
) -> tuple[Method, ...]:
    """The configured methods this account can use now, in the configured order."""
    return tuple(method for method in configured if method in available)


def synapse_stages(methods: Sequence[Method]) -> list[str]:
    """The stages Synapse's own User-Interactive Auth checks (all but the email code)."""
    return [method.stage for method in methods if method is not Method.EMAIL_CODE]
