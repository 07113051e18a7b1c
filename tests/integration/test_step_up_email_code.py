"""Step-up by a code mailed to the account's verified address, on a real Synapse that
sends mail to a real SMTP server on localhost; and the owner told, by email and in
their server notices room, when their account steps up or is blocked."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from harness.homeserver import (
    ADMIN_API,
    PASSWORD,
    STEP_UP,
    Account,
    Homeserver,
    free_port,
    wait_until,
)
from harness.mail import MailServer
from tests.integration.conftest import running_homeserver

EMAIL_CODE = "fr.gouv.tchap.guard.email_code"
STEP_UP_ERRCODE = "org.matrix.msc4363.M_INSUFFICIENT_USER_AUTHENTICATION"
FREE = 2
AFTER = 5
PEOPLE = 6
VALID_FOR_S = 8
GUARD = {
    "directory": {
        "free": {"window": "1h", "max_profiles": FREE},
        "after_step_up": {"window": "1h", "max_profiles": AFTER},
        "block_at": {"window": "1h", "max": 3},
        "failed_step_ups_block_at": {"window": "1h", "max": 5},
        # step_up_methods: the default (sso, email_code)
        "email_code": {
            "valid_for": f"{VALID_FOR_S}s",
            "max_tries": 2,
            "max_sent": {"window": "1h", "max": 3},
        },
    },
    "owner_notices": {"limit": {"window": "1h", "max": 2}},
}
CLIENT = "TestClient/1.0 (step-up tests)"


@pytest.fixture(scope="module")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, mail: MailServer
) -> Iterator[Homeserver]:
    with running_homeserver(
        tmp_path_factory, backend, guard=GUARD, mail=mail
    ) as homeserver:
        yield homeserver


@pytest.fixture(scope="module")
def people(server: Homeserver, admin: Account) -> list[Account]:
    """Colleagues in the user directory (an admin, never limited, waits for them)."""
    people = []
    for number in range(PEOPLE):
        person = server.register()
        assert person.set_displayname(f"Mailed Person {number:02d}").ok
        people.append(person)
    wait_until(lambda: len(search(admin, "mailed person")) == PEOPLE, timeout=30)
    return people


def owner(server: Homeserver, admin: Account) -> tuple[Account, str]:
    """An account whose owner has a verified address."""
    user = server.register()
    address = f"{user.localpart}@ministere.gouv.fr"
    server.set_email(admin, user, address)
    return user, address


def search(account: Account, term: str) -> list[str]:
    response = search_response(account, term)
    assert response.status_code == 200, response.text
    return [result["user_id"] for result in response.json()["results"]]


def search_response(account: Account, term: str) -> requests.Response:
    return account.post(
        "/_matrix/client/v3/user_directory/search", {"search_term": term, "limit": 50}
    )


def look_up(account: Account, person: Account) -> requests.Response:
    return account.get(f"/_matrix/client/v3/profile/{quote(person.user_id)}")


def spend_the_free_budget(user: Account, people: list[Account]) -> list[Account]:
    """Discover the free budget's people by a search; the people left unseen, the
    first of whom a profile lookup was refused for lack of a step-up."""
    seen = wait_until(lambda: search(user, "mailed person"), timeout=10)
    assert len(seen) == FREE
    unseen = [person for person in people if person.user_id not in seen]
    refused = look_up(user, unseen[0])
    assert refused.status_code == 401
    assert refused.json()["errcode"] == STEP_UP_ERRCODE
    return unseen


def step_up(user: Account, auth: dict[str, Any] | None = None) -> requests.Response:
    return user.post(
        STEP_UP, {"auth": auth} if auth else {}, headers={"User-Agent": CLIENT}
    )


def challenge(user: Account) -> dict[str, Any]:
    response = step_up(user)
    assert response.status_code == 401, response.text
    body: dict[str, Any] = response.json()
    return body


def ask_for_code(user: Account, session: str) -> requests.Response:
    return step_up(user, {"type": EMAIL_CODE, "session": session})


def enter(user: Account, session: str, code: str) -> requests.Response:
    return step_up(user, {"type": EMAIL_CODE, "session": session, "code": code})


def mailed_code(mail: MailServer, address: str) -> str:
    """Ask for nothing: read the newest code the owner received."""
    mails = wait_until(lambda: [m for m in mail.inbox(address) if m.code])
    code: str = mails[-1].code
    return code


def actions(server: Homeserver, user: Account) -> list[str]:
    return [event["event"]["action"] for event in server.events_about(user.user_id)]


def test_the_phished_password_cannot_step_up_under_the_default_methods(
    server: Homeserver, admin: Account, mail: MailServer, people: list[Account]
) -> None:
    user, address = owner(server, admin)
    unseen = spend_the_free_budget(user, people)
    offered = challenge(user)
    # No SSO for this account, so the one flow it can use: a code to its address.
    assert offered["flows"] == [{"stages": [EMAIL_CODE]}]
    assert offered["params"][EMAIL_CODE]["addresses"] == ["u***@m***.gouv.fr"]

    with_password = step_up(
        user,
        {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": PASSWORD,  # the right one, as the attacker has it
            "session": offered["session"],
        },
    )
    assert with_password.status_code == 401
    assert with_password.json()["errcode"] == "M_FORBIDDEN"
    assert "is not accepted here" in with_password.json()["error"]
    assert with_password.json()["flows"] == [{"stages": [EMAIL_CODE]}]
    (failed,) = server.events_about(user.user_id, "step_up_failed")
    assert failed["tchap_guard"]["stage"] == "m.login.password"
    # Still refused, and nothing was mailed.
    assert look_up(user, unseen[1]).status_code == 401
    assert mail.inbox(address) == []


def test_a_code_mailed_to_the_owner_steps_up_and_the_owner_is_told(
    server: Homeserver, admin: Account, mail: MailServer, people: list[Account]
) -> None:
    user, address = owner(server, admin)
    spend_the_free_budget(user, people)
    session = challenge(user)["session"]

    asked = ask_for_code(user, session)
    assert asked.status_code == 401, asked.text
    assert "errcode" not in asked.json()
    sent = asked.json()["params"][EMAIL_CODE]
    assert sent["code_sent"] is True
    assert sent["tries_left"] == 2
    assert 0 < sent["expires_in_ms"] <= VALID_FOR_S * 1000
    code_mail = mail.wait_for(address, lambda m: m.code is not None)
    assert code_mail.subject == "Your code to confirm it is you on localhost"
    assert user.user_id in code_mail.text
    assert "From: IP address 127.0.0.1" in code_mail.text
    assert CLIENT in code_mail.text
    assert "If it was not you, do not give this code to anyone" in code_mail.text

    entered = enter(user, session, code_mail.code or "")
    assert entered.status_code == 200, entered.text
    assert entered.json()["budget"] == {"max_profiles": AFTER, "window": "1h"}
    assert len(search(user, "mailed person")) == AFTER
    (succeeded,) = server.events_about(user.user_id, "step_up_succeeded")
    assert succeeded["tchap_guard"]["method"] == "email_code"
    (code_sent,) = server.events_about(user.user_id, "step_up_code_sent")
    assert code_sent["tchap_guard"]["addresses"] == ["u***@m***.gouv.fr"]

    # The owner hears of it where they will see it: their inbox and their client.
    notice = mail.wait_for(address, lambda m: "confirmed it is you" in m.subject)
    assert "with a code sent by email" in notice.text
    assert "From: IP address 127.0.0.1" in notice.text and CLIENT in notice.text
    assert "someone else is using your account right now" in notice.text
    in_client = wait_until(user.server_notices)
    assert "confirmed it is you, with a code sent by email" in in_client[-1]["body"]
    assert CLIENT in in_client[-1]["body"]
    wait_until(lambda: len(server.events_about(user.user_id, "owner_notified")) == 2)
    told = server.events_about(user.user_id, "owner_notified")
    assert sorted(e["tchap_guard"]["channel"] for e in told) == [
        "email",
        "server_notice",
    ]
    assert {e["tchap_guard"]["about"] for e in told} == {"step_up"}


def test_wrong_used_and_expired_codes_fail_and_count(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    user, address = owner(server, admin)
    session = challenge(user)["session"]
    assert ask_for_code(user, session).status_code == 401
    code = mailed_code(mail, address)

    wrong = enter(user, session, "000000" if code != "000000" else "111111")
    assert wrong.status_code == 401
    assert wrong.json()["errcode"] == "M_FORBIDDEN"
    assert wrong.json()["error"] == "The code was refused: wrong code."
    assert wrong.json()["params"][EMAIL_CODE]["tries_left"] == 1
    spaced = f"{code[:3]} {code[3:]}"  # as it may be typed
    assert enter(user, session, spaced).status_code == 200
    reused = enter(user, session, code)
    assert reused.status_code == 401
    assert "already used" in reused.json()["error"]
    # A code belongs to its session: in another, it is no code at all.
    other = challenge(user)["session"]
    elsewhere = enter(user, other, code)
    assert elsewhere.status_code == 401
    assert "no code was sent in this session" in elsewhere.json()["error"]

    # A code expires: wait for the moment it said, then try it.
    asked = ask_for_code(user, other)
    expires_at = (
        time.monotonic() + asked.json()["params"][EMAIL_CODE]["expires_in_ms"] / 1000
    )
    late_code = wait_until(
        lambda: [m.code for m in mail.inbox(address) if m.code and m.code != code]
    )[0]
    time.sleep(max(0.0, expires_at - time.monotonic()) + 0.2)
    expired = enter(user, other, late_code)
    assert expired.status_code == 401
    assert "expired" in expired.json()["error"]

    failures = server.events_about(user.user_id, "step_up_failed")
    assert [f["event"]["reason"] for f in failures] == [
        "The code was refused: wrong code.",
        "The code was refused: this code was already used: request a new one.",
        "The code was refused: no code was sent in this session: request one first.",
        "The code was refused: this code has expired: request a new one.",
    ]
    view = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    assert view["counters"]["failed_step_ups"]["block_at"]["attempts"] == 4
    # The fifth failure blocks (failed_step_ups_block_at: 5 in 1h).
    blocked = enter(user, other, late_code)
    assert blocked.status_code == 401
    assert blocked.json()["errcode"] == "M_USER_LOCKED"


def test_a_code_takes_a_bounded_number_of_tries(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    user, address = owner(server, admin)
    session = challenge(user)["session"]
    ask_for_code(user, session)
    code = mailed_code(mail, address)
    wrong = "000000" if code != "000000" else "111111"
    assert [enter(user, session, wrong).status_code for _ in range(2)] == [401, 401]
    spent = enter(user, session, code)  # right, but too late
    assert spent.status_code == 401
    assert "too many wrong codes" in spent.json()["error"]


def test_asking_twice_mails_once_and_codes_mailed_are_bounded(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    user, address = owner(server, admin)
    session = challenge(user)["session"]
    assert ask_for_code(user, session).status_code == 401
    again = ask_for_code(user, session)  # a client asking twice: the same code
    assert again.status_code == 401
    assert again.json()["params"][EMAIL_CODE]["code_sent"] is True
    wait_until(lambda: len(mail.inbox(address)) == 1)
    assert len(server.events_about(user.user_id, "step_up_code_sent")) == 1

    for _ in range(2):  # new sessions: new codes, up to max_sent (3 in 1h)
        assert ask_for_code(user, challenge(user)["session"]).status_code == 401
    refused = ask_for_code(user, challenge(user)["session"])
    assert refused.status_code == 429
    assert refused.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert refused.json()["retry_after_ms"] > 0
    wait_until(lambda: len(mail.inbox(address)) == 3)
    assert len(server.events_about(user.user_id, "step_up_code_sent")) == 3


def test_codes_go_only_to_the_account_own_verified_address(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    without = server.register()
    refused = step_up(without)
    # No SSO, no verified address: no way to step up, and it says whom to ask.
    assert refused.status_code == 403
    assert "Contact your homeserver administrator" in refused.json()["error"]

    user, address = owner(server, admin)
    session = challenge(user)["session"]
    stranger = "someone.else@ministere.gouv.fr"
    asked = step_up(user, {"type": EMAIL_CODE, "session": session, "address": stranger})
    assert asked.status_code == 401
    wait_until(lambda: mail.inbox(address))
    assert mail.inbox(stranger) == []


def test_a_block_tells_the_owner_by_email_and_in_their_client(
    server: Homeserver, admin: Account, mail: MailServer, people: list[Account]
) -> None:
    user, address = owner(server, admin)
    unseen = spend_the_free_budget(user, people)
    for person in unseen[1:3]:  # the third refusal blocks (block_at: 3 in 1h)
        look_up(user, person)
    wait_until(user.logged_out)  # blocked, and its sessions ended

    blocked = mail.wait_for(address, lambda m: "is blocked" in m.subject)
    assert blocked.subject == f"Your account {user.user_id} is blocked"
    assert "security policy blocked it: too many people discovered" in blocked.text
    assert "From: IP address 127.0.0.1" in blocked.text
    assert "If it was not you, someone else may be using your account" in blocked.text

    # Once the block is lifted, the owner's client shows the notice too.
    lifted = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/unblock", {"reason": "the owner"}
    )
    assert lifted.status_code == 200
    login = server.login(user.localpart).json()
    again = Account(server, login["user_id"], login["access_token"], login["device_id"])
    (notice,) = wait_until(again.server_notices)
    assert f"Your account {user.user_id} on localhost is blocked" in notice["body"]
    assert "<p>" in notice["formatted_body"]


def test_an_admin_block_tells_the_owner_without_the_admin_whereabouts(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    user, address = owner(server, admin)
    response = admin.post(
        f"{ADMIN_API}/accounts/{quote(user.user_id)}/block",
        {"reason": "phishing campaign <script>", "duration": "1h"},
        headers={"User-Agent": "AdminConsole/2.0"},
    )
    assert response.status_code == 200
    blocked = mail.wait_for(address, lambda m: "is blocked" in m.subject)
    assert "An administrator blocked it: phishing campaign <script>." in blocked.text
    assert "&lt;script&gt;" in blocked.html and "<script>" not in blocked.html
    assert "AdminConsole" not in blocked.text and "IP address" not in blocked.text


def test_notices_to_one_owner_are_rate_limited(
    server: Homeserver, admin: Account, mail: MailServer
) -> None:
    user, address = owner(server, admin)
    for _ in range(3):  # three step-ups in an hour; at most 2 notices a channel
        session = challenge(user)["session"]
        before = len(mail.inbox(address))
        assert ask_for_code(user, session).status_code == 401
        assert enter(user, session, mail.next_code(address, before)).status_code == 200

    skipped = wait_until(
        lambda: (
            len(server.events_about(user.user_id, "owner_not_notified")) == 2
            and server.events_about(user.user_id, "owner_not_notified")
        )
    )
    assert sorted(e["tchap_guard"]["channel"] for e in skipped) == [
        "email",
        "server_notice",
    ]
    assert {e["tchap_guard"]["why"] for e in skipped} == {
        "rate limited: 2 notices per 1h already"
    }
    wait_until(lambda: len(server.events_about(user.user_id, "owner_notified")) == 4)
    notices = [m for m in mail.inbox(address) if "confirmed it is you" in m.subject]
    assert len(notices) == 2
    assert len(wait_until(user.server_notices)) == 2


def test_a_mail_server_that_does_not_answer_is_reported_not_retried_blindly(
    tmp_path: Path, mail: MailServer
) -> None:
    nobody_listens = {**mail.settings(), "smtp_port": free_port()}
    down = Homeserver(tmp_path, email=nobody_listens, guard=GUARD)
    try:
        down.start()
        admin = down.register(admin=True)
        user, _ = owner(down, admin)
        # The client is answered at once; the mail fails in the background.
        asked = ask_for_code(user, challenge(user)["session"])
        assert asked.status_code == 401
        assert asked.json()["params"][EMAIL_CODE]["code_sent"] is True
        blocked = admin.post(
            f"{ADMIN_API}/accounts/{quote(user.user_id)}/block", {"reason": "test"}
        )
        assert blocked.status_code == 200
        failures = wait_until(
            lambda: (
                len(down.events_about(user.user_id, "owner_not_notified")) == 2
                and down.events_about(user.user_id, "owner_not_notified")
            )
        )
        assert sorted(e["tchap_guard"]["about"] for e in failures) == [
            "block",
            "step_up_code",
        ]
        assert {e["tchap_guard"]["why"] for e in failures} == {"failed"}
        # The server notice does not depend on the mail server.
        told = wait_until(lambda: down.events_about(user.user_id, "owner_notified"))
        assert told[0]["tchap_guard"]["channel"] == "server_notice"
    finally:
        down.destroy()


@pytest.mark.parametrize(
    ("auth", "status", "errcode"),
    [
        ("a string", 400, "M_BAD_JSON"),
        ({"type": 7}, 400, "M_BAD_JSON"),
        ({"session": ["a", "list"]}, 400, "M_BAD_JSON"),
        ({"type": EMAIL_CODE}, 400, "M_MISSING_PARAM"),
        ({"type": EMAIL_CODE, "session": "not a session"}, 400, "M_UNKNOWN"),
        ({"type": EMAIL_CODE, "session": "<session>", "code": 123456}, 400, None),
        ({"type": EMAIL_CODE, "session": "<session>", "code": "9" * 65}, 400, None),
        ({"session": "not a session"}, 400, "M_UNKNOWN"),
    ],
)
def test_malformed_step_ups_get_a_400_never_a_500(
    server: Homeserver,
    admin: Account,
    auth: Any,
    status: int,
    errcode: str | None,
) -> None:
    user, _ = owner(server, admin)
    session = challenge(user)["session"]
    if isinstance(auth, dict) and auth.get("session") == "<session>":
        auth = {**auth, "session": session}
    response = user.post(STEP_UP, {"auth": auth})
    assert response.status_code == status, response.text
    assert response.json()["errcode"] == (errcode or "M_INVALID_PARAM")
