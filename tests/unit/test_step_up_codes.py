"""Step-up codes in the guard's own tables (real SQL, in-memory SQLite, a fake clock):
issued once per session and moment, bounded per account, redeemed once."""

from __future__ import annotations

import pytest
from twisted.internet import task

from synapse_tchap_guard.policy import Threshold
from synapse_tchap_guard.store import GuardStore
from synapse_tchap_guard.store.step_up_codes import (
    EXPIRED,
    NO_CODE,
    TOO_MANY_TRIES,
    USED,
    WRONG,
    Issued,
    TooManySent,
)
from tests.unit.fakes import new_store, run

USER = "@camille:example.org"
MINUTE = 60_000
HOUR = 60 * MINUTE
VALID_FOR = 10 * MINUTE
RESEND_AFTER = MINUTE
MAX_TRIES = 3
MAX_SENT = Threshold(HOUR, 3)


@pytest.fixture
def store() -> GuardStore:
    return new_store(task.Clock())


def issue(
    store: GuardStore, session: str, now: int, code: str = "123456"
) -> Issued | TooManySent:
    return run(
        store.step_up_codes.issue(
            USER, session, code, now, VALID_FOR, RESEND_AFTER, MAX_TRIES, MAX_SENT
        )
    )


def redeem(
    store: GuardStore, session: str, code: str, now: int
) -> tuple[str | None, int]:
    redeemed = run(
        store.step_up_codes.redeem(
            USER, session, lambda stored: stored == code, now, MAX_TRIES
        )
    )
    return redeemed.failure, redeemed.tries_left


def test_a_code_is_redeemed_once(store: GuardStore) -> None:
    issued = issue(store, "s1", now=1000)
    assert isinstance(issued, Issued) and issued.new
    assert issued.code.expires_ts == 1000 + VALID_FOR
    assert redeem(store, "s1", "123456", now=2000) == (None, 0)
    assert redeem(store, "s1", "123456", now=3000) == (USED, 0)


def test_a_wrong_code_spends_a_try_and_the_tries_are_bounded(
    store: GuardStore,
) -> None:
    issue(store, "s1", now=0)
    assert redeem(store, "s1", "000000", now=1) == (WRONG, 2)
    assert redeem(store, "s1", "000001", now=2) == (WRONG, 1)
    assert redeem(store, "s1", "000002", now=3) == (WRONG, 0)
    assert redeem(store, "s1", "123456", now=4) == (TOO_MANY_TRIES, 0)


def test_a_code_expires_and_belongs_to_its_session(store: GuardStore) -> None:
    issue(store, "s1", now=0)
    assert redeem(store, "s2", "123456", now=1) == (NO_CODE, 0)
    assert redeem(store, "s1", "123456", now=VALID_FOR) == (EXPIRED, 0)


def test_asking_again_soon_keeps_the_code_and_later_replaces_it(
    store: GuardStore,
) -> None:
    first = issue(store, "s1", now=0, code="111111")
    again = issue(store, "s1", now=RESEND_AFTER - 1, code="222222")
    assert isinstance(first, Issued) and isinstance(again, Issued)
    assert not again.new and again.code == first.code
    later = issue(store, "s1", now=RESEND_AFTER + 1, code="333333")
    assert isinstance(later, Issued) and later.new
    # The newest code of a session is the one that counts.
    assert redeem(store, "s1", "111111", now=RESEND_AFTER + 2)[0] == WRONG
    assert redeem(store, "s1", "333333", now=RESEND_AFTER + 3) == (None, 0)


def test_codes_mailed_to_an_account_are_bounded_per_window(store: GuardStore) -> None:
    for number, now in enumerate((0, 10 * MINUTE, 20 * MINUTE)):
        assert isinstance(issue(store, f"s{number}", now), Issued)
    refused = issue(store, "s4", now=30 * MINUTE)
    # The oldest leaves the window an hour after it was sent.
    assert refused == TooManySent(retry_after_ms=HOUR - 30 * MINUTE)
    assert isinstance(issue(store, "s4", now=HOUR + 1), Issued)
