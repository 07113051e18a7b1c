"""The hijacked account's owner, in the replay, and the attacker's try at the step-up.

With the guard, before it scrapes, the attacker tries what the phished password can
do at the step-up: answer with the password (refused: example_homeserver.yaml offers
an email code, not the password), ask for a code (mailed to the owner, not to the
attacker), guess one (refused). After the run, as an incident ends: an admin resets
the password and lifts the block, and the owner signs in. What the owner received
meanwhile is read where they would read it: their inbox, on a real SMTP server on
localhost, and their server notices room, from their own /sync.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import attr

from harness.homeserver import (
    ADMIN_API,
    PASSWORD,
    STEP_UP,
    Account,
    Homeserver,
    wait_until,
)
from harness.mail import MailServer

T = TypeVar("T")

EMAIL_CODE = "fr.gouv.tchap.guard.email_code"
NEW_PASSWORD = "a new password, after the incident"


@attr.frozen
class StepUpTry:
    """What the attacker met at the step-up, holding the password."""

    offered: list[str]  # the stages offered
    with_password: str  # the answer to the phished password
    code_sent_to: list[str]  # where a code it asked for went (masked)
    with_a_guess: str  # the answer to a guessed code
    stepped_up: bool

    def as_json(self) -> dict[str, Any]:
        return attr.asdict(self)


@attr.frozen
class OwnerSaw:
    """What the owner received: mails (subject, first line) and server notices."""

    address: str
    inbox: list[tuple[str, str]]
    server_notices: list[str]

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "inbox": [{"subject": s, "first_line": f} for s, f in self.inbox],
            "server_notices": self.server_notices,
        }


def address_of(localpart: str) -> str:
    return f"{localpart}@ministere.gouv.fr"


def give_address(server: Homeserver, localpart: str) -> str:
    """Give the owner a verified address, as registration with an email address
    would have, in the stopped server's database (no account is added to it)."""
    address = address_of(localpart)
    now = int(time.time() * 1000)
    server.sql(
        "INSERT INTO user_threepids (user_id, medium, address, validated_at, added_at)"
        " VALUES (?, 'email', ?, ?, ?)",
        (f"@{localpart}:{server.server_name}", address, now, now),
    )
    return address


def attacker_tries_to_step_up(server: Homeserver, localpart: str) -> StepUpTry:
    login = server.login(localpart, PASSWORD).json()
    attacker = Account(
        server, login["user_id"], login["access_token"], login["device_id"]
    )
    challenge = attacker.post(STEP_UP, {}).json()
    session = challenge["session"]
    offered = [flow["stages"][0] for flow in challenge["flows"]]
    password = attacker.post(
        STEP_UP,
        {
            "auth": {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": PASSWORD,
                "session": session,
            }
        },
    )
    asked = attacker.post(STEP_UP, {"auth": {"type": EMAIL_CODE, "session": session}})
    sent_to = asked.json().get("params", {}).get(EMAIL_CODE, {}).get("addresses", [])
    guess = attacker.post(
        STEP_UP,
        {"auth": {"type": EMAIL_CODE, "session": session, "code": "123456"}},
    )
    return StepUpTry(
        offered=offered,
        with_password=_answer(password),
        code_sent_to=sent_to if asked.status_code == 401 else [],
        with_a_guess=_answer(guess),
        stepped_up=password.status_code == 200 or guess.status_code == 200,
    )


def after_the_incident(
    server: Homeserver, mail: MailServer, localpart: str
) -> OwnerSaw:
    """An admin resets the password and lifts the block; the owner signs in."""
    admin = server.register(admin=True)
    user_id = f"@{localpart}:{server.server_name}"
    reset = admin.post(
        f"/_synapse/admin/v1/reset_password/{quote(user_id)}",
        {"new_password": NEW_PASSWORD, "logout_devices": True},
    )
    assert reset.status_code == 200, reset.text
    admin.post(
        f"{ADMIN_API}/accounts/{quote(user_id)}/unblock",
        {"reason": "password reset after the phishing"},
    )
    login = server.login(localpart, NEW_PASSWORD).json()
    owner = Account(server, login["user_id"], login["access_token"], login["device_id"])
    address = address_of(localpart)
    notices = _within(10, owner.server_notices)
    _within(10, lambda: [m for m in mail.inbox(address) if "blocked" in m.subject])
    return OwnerSaw(
        address=address,
        inbox=[(m.subject, m.text.splitlines()[0]) for m in mail.inbox(address)],
        server_notices=[notice["body"].splitlines()[0] for notice in notices],
    )


def print_owner(attempt: StepUpTry | None, saw: OwnerSaw | None) -> None:
    if attempt is not None:
        print("\nThe step-up, tried by the attacker with the phished password:")
        print(f"  offered                     {', '.join(attempt.offered)}")
        print(f"  the password                {attempt.with_password}")
        sent_to = ", ".join(attempt.code_sent_to) or "nowhere"
        print(f"  a code asked for, sent to   {sent_to} (the owner's inbox)")
        print(f"  a guessed code              {attempt.with_a_guess}")
        print(f"  stepped up                  {'yes' if attempt.stepped_up else 'no'}")
    if saw is not None:
        print(f"\nWhat the owner received, with the guard ({saw.address}):")
        for subject, first_line in saw.inbox:
            print(f"  email:         {subject}")
            print(f"                 {first_line}")
        for notice in saw.server_notices:
            print(f"  server notice: {notice}")


def _within(seconds: float, found: Callable[[], list[T]]) -> list[T]:
    """What `found` finds once it finds something, or nothing after `seconds`."""
    try:
        result: list[T] = wait_until(found, seconds)
    except AssertionError:
        return []
    return result


def _answer(response: Any) -> str:
    if response.status_code == 200:
        return "200 (stepped up)"
    body = response.json()
    return f"{response.status_code} {body.get('errcode', '')}: {body.get('error', '')}"
