"""What owners are told, and how often: the texts (plain and HTML, from one set of
facts) and the outbox's limit per account and channel (real SQL, in-memory SQLite)."""

from __future__ import annotations

from twisted.internet import task

from synapse_tchap_guard.notice_texts import (
    Circumstances,
    block_notice,
    code_email,
    mask_address,
    step_up_notice,
)
from synapse_tchap_guard.policy import Threshold
from synapse_tchap_guard.step_up_methods import (
    DEFAULT_METHODS,
    Method,
    offered,
)
from tests.unit.fakes import new_store, run

USER = "@camille.martin:example.org"
SEEN = Circumstances(1_795_426_654_777, "203.0.113.9", 'Element <img src=x>"')


def test_the_default_offers_what_the_account_can_do_and_never_the_password() -> None:
    everything = set(Method)
    assert offered(DEFAULT_METHODS, everything) == (Method.SSO, Method.EMAIL_CODE)
    assert offered(DEFAULT_METHODS, {Method.PASSWORD, Method.EMAIL_CODE}) == (
        Method.EMAIL_CODE,
    )
    assert offered(DEFAULT_METHODS, {Method.PASSWORD}) == ()
    listed = (Method.EMAIL_CODE, Method.PASSWORD)
    assert offered(listed, everything) == listed


def test_addresses_are_masked_enough_to_recognise_not_to_read() -> None:
    assert mask_address("camille.martin@interieur.gouv.fr") == "c***@i***.gouv.fr"
    assert mask_address("a@b") == "a***@b***"


def test_a_step_up_notice_says_what_when_where_and_what_to_do() -> None:
    message = step_up_notice(
        USER, "example.org", Method.EMAIL_CODE.label, "3000 people in 24 hours", 0, SEEN
    )
    assert message.subject == f"Your account {USER} confirmed it is you"
    assert "with a code sent by email" in message.text
    assert "When: 2026-11-23 09:37 UTC" in message.text
    assert 'From: IP address 203.0.113.9, client "Element <img src=x>""' in message.text
    assert "someone else is using your account right now" in message.text
    # What came from the request is escaped in the HTML, and in the notice's.
    assert "<img" not in message.html and "&lt;img src=x&gt;" in message.html
    assert message.server_notice()["formatted_body"] == message.html
    assert message.server_notice()["body"] == message.text


def test_a_block_by_an_admin_does_not_show_the_admin_request() -> None:
    by_guard = block_notice(USER, "example.org", "too many", False, None, SEEN)
    assert "until an administrator lifts it" in by_guard.text
    assert "203.0.113.9" in by_guard.text
    by_admin = block_notice(USER, "example.org", "phishing", True, 0, SEEN)
    assert "An administrator blocked it: phishing." in by_admin.text
    assert "203.0.113.9" not in by_admin.text and "Element" not in by_admin.text


def test_a_code_email_carries_the_code_and_how_long_it_works() -> None:
    message = code_email(USER, "example.org", "042917", "10 minutes", SEEN)
    assert "Your code: 042917\nIt works once, for 10 minutes." in message.text
    assert "do not give this code to anyone" in message.text


def test_notices_to_one_owner_on_one_channel_are_bounded_per_window() -> None:
    store = new_store(task.Clock())
    limit = Threshold(3_600_000, 2)

    def queue(channel: str, now: int, user: str = USER) -> int | None:
        return run(store.notices.queue(user, "block", channel, {"n": now}, now, limit))

    assert queue("email", 0) is not None
    assert queue("email", 1) is not None
    assert queue("email", 2) is None  # a third within the hour
    assert queue("server_notice", 3) is not None  # another channel
    assert queue("email", 4, user="@other:example.org") is not None  # another owner
    assert queue("email", 3_600_001) is not None  # the first left the window
    pending = run(store.notices.pending(10))
    assert [(n.channel, n.content) for n in pending][:2] == [
        ("email", {"n": 0}),
        ("email", {"n": 1}),
    ]
    run(store.notices.done(pending[0].id, "sent", 5))
    assert len(run(store.notices.pending(10))) == len(pending) - 1
