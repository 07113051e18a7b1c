"""The people budget and its step-up, on a real Synapse with real passwords.

Past the budget a directory search is never refused: it shows only people already
discovered (a client searching on every keystroke learns nothing new, and its owner
is not blocked for it); a profile lookup of someone new asks for a step-up.

Here the admin accepts the password for step-ups (`step_up_methods: [password]`): the
budgets, the expiry and the escalation are the same whatever the method
(test_step_up_email_code.py has the default methods).
"""

from __future__ import annotations

import time
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
    wait_until,
)

FREE = 4
AFTER = 8
VALID_FOR_S = 8
PEOPLE = 12
GUARD = {
    "directory": {
        "free": {"window": "1h", "max_profiles": FREE},
        "step_up_valid_for": f"{VALID_FOR_S}s",
        "after_step_up": {"window": "1h", "max_profiles": AFTER},
        "block_at": {"window": "1h", "max": 4},
        "failed_step_ups_block_at": {"window": "1h", "max": 3},
        "step_up_methods": ["password"],
    },
}
STEP_UP_ERRCODE = "org.matrix.msc4363.M_INSUFFICIENT_USER_AUTHENTICATION"


@pytest.fixture(scope="module")
def people(server: Homeserver, admin: Account) -> list[Account]:
    """Colleagues in the user directory (an admin, never limited, waits for them)."""
    people = []
    for number in range(PEOPLE):
        person = server.register()
        assert person.set_displayname(f"Directory Person {number:02d}").ok
        people.append(person)
    wait_until(lambda: len(search(admin, "directory person")) == PEOPLE, timeout=30)
    return people


def search(account: Account, term: str) -> list[str]:
    response = search_response(account, term)
    assert response.status_code == 200, response.text
    return [result["user_id"] for result in response.json()["results"]]


def first_search(account: Account, term: str) -> list[str]:
    """A new account's first search. Synapse may answer a just-registered account with
    no one for a moment; an answer showing no one costs nothing, so ask again."""
    results: list[str] = wait_until(lambda: search(account, term), timeout=10)
    return results


def search_response(account: Account, term: str) -> requests.Response:
    return account.post(
        "/_matrix/client/v3/user_directory/search", {"search_term": term, "limit": 50}
    )


def profile(account: Account, user_id: str) -> requests.Response:
    return account.get(f"/_matrix/client/v3/profile/{quote(user_id)}")


def step_up(account: Account, auth: dict[str, Any] | None = None) -> requests.Response:
    return account.post(STEP_UP, {"auth": auth} if auth else {})


def password_auth(account: Account, session: str, password: str) -> dict[str, Any]:
    return {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": account.localpart},
        "password": password,
        "session": session,
    }


def assert_step_up_required(server: Homeserver, response: requests.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["errcode"] == STEP_UP_ERRCODE
    assert body["fr.gouv.tchap.guard.step_up_url"] == (
        f"http://localhost:{server.port}{STEP_UP}"
    )
    assert body["org.matrix.msc4363.max_age"] == VALID_FOR_S
    assert 0 < body["fr.gouv.tchap.guard.budget_resets_in_ms"] <= 3_660_000
    assert "confirm it is you" in body["error"]
    assert "results" not in body


def directory_view(admin: Account, user: Account) -> dict[str, Any]:
    response = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}")
    assert response.status_code == 200, response.text
    counters: dict[str, Any] = response.json()["counters"]["directory"]
    return counters


def stepped_up(account: Account) -> None:
    """Complete a step-up with the account's password."""
    session = step_up(account).json()["session"]
    response = step_up(account, password_auth(account, session, PASSWORD))
    assert response.status_code == 200, response.text


def test_accepting_the_password_is_flagged_at_start_up(server: Homeserver) -> None:
    started = [e for e in server.events() if e["event"]["action"] == "started"][-1]
    assert any(
        "step_up_methods lists password: whoever holds an account's password" in w
        for w in started["tchap_guard"]["warnings"]
    )


def test_looking_colleagues_up_never_meets_the_wall(
    server: Homeserver, admin: Account, people: list[Account]
) -> None:
    user = server.register()
    colleagues = people[:2]
    for _ in range(5):  # day after day, the same few colleagues
        for colleague in colleagues:
            display_name = f"Directory Person {people.index(colleague):02d}"
            assert search(user, display_name) == [colleague.user_id]
            assert profile(user, colleague.user_id).status_code == 200
        assert profile(user, user.user_id).status_code == 200
    assert directory_view(admin, user)["limits"][0]["count"] == 2
    assert server.events_about(user.user_id, "step_up_required") == []


def test_enumeration_past_the_budget_shows_no_one_new_and_asks_to_step_up(
    server: Homeserver, admin: Account, people: list[Account]
) -> None:
    user = server.register()
    first_page = first_search(user, "directory person")
    assert len(first_page) == FREE  # the rest of the page is left out

    # Searching on shows the same people again, and no one else; never an error.
    for term in ("directory person", "directory", "person 1"):
        shown = search(user, term)
        assert set(shown) <= set(first_page)
    unseen = next(p for p in people if p.user_id not in first_page)
    assert_step_up_required(server, profile(user, unseen.user_id))
    # Someone already discovered may be looked at again.
    assert profile(user, first_page[0]).status_code == 200

    withheld = server.events_about(user.user_id, "deny")
    assert withheld and all(e["tchap_guard"]["withheld"] for e in withheld)
    assert {e["tchap_guard"]["lookup"] for e in withheld} == {"search"}
    (refusal,) = server.events_about(user.user_id, "step_up_required")
    assert refusal["event"]["outcome"] == "failure"
    assert refusal["tchap_guard"]["control"] == "directory"
    assert refusal["tchap_guard"]["lookup"] == "profile"
    assert refusal["tchap_guard"]["step_up_required"] is True
    assert (refusal["tchap_guard"]["count"], refusal["tchap_guard"]["limit"]) == (
        FREE,
        FREE,
    )
    view = directory_view(admin, user)
    assert view["limits"] == [
        {"window": "1h", "window_ms": 3_600_000, "count": FREE, "max": FREE}
    ]
    assert view["step_up"]["stepped_up"] is False
    assert view["block_at"]["refusals"] == 1  # the profile lookup; searches never


def test_step_up_is_user_interactive_auth_and_lifts_the_budget(
    server: Homeserver, admin: Account, people: list[Account]
) -> None:
    user = server.register()
    assert len(first_search(user, "directory person")) == FREE

    challenge = step_up(user)
    assert challenge.status_code == 401
    assert challenge.json()["flows"] == [{"stages": ["m.login.password"]}]
    session = challenge.json()["session"]

    wrong = step_up(user, password_auth(user, session, "not my password"))
    assert wrong.status_code == 401
    assert wrong.json()["errcode"] == "M_FORBIDDEN"
    assert wrong.json()["session"] == session
    (failed,) = server.events_about(user.user_id, "step_up_failed")
    assert failed["event"]["outcome"] == "failure"
    assert len(search(user, "directory person")) == FREE

    right = step_up(user, password_auth(user, session, PASSWORD))
    assert right.status_code == 200, right.text
    assert right.json()["budget"] == {"max_profiles": AFTER, "window": "1h"}
    valid_until = right.json()["step_up_valid_until_ms"]
    assert abs(valid_until / 1000 - (time.time() + VALID_FOR_S)) < 3
    (succeeded,) = server.events_about(user.user_id, "step_up_succeeded")
    assert succeeded["event"]["outcome"] == "success"
    assert succeeded["tchap_guard"]["method"] == "password"

    # The four already discovered, and four more: the larger budget; past it, a
    # profile lookup gets a 429 (stepping up again would not help).
    shown = search(user, "directory person")
    assert len(shown) == AFTER
    assert len(search(user, "directory person")) == AFTER
    unseen = next(p for p in people if p.user_id not in shown)
    response = profile(user, unseen.user_id)
    assert response.status_code == 429, response.text
    assert response.json()["errcode"] == "M_LIMIT_EXCEEDED"
    assert response.json()["retry_after_ms"] > 0
    view = directory_view(admin, user)
    assert view["limits"][0]["max"] == AFTER
    assert view["step_up"]["stepped_up"] is True
    assert view["step_up"]["last"] is not None
    assert view["step_up"]["valid_until"] is not None


def test_a_step_up_expires(
    server: Homeserver, admin: Account, people: list[Account]
) -> None:
    user = server.register()
    assert len(first_search(user, "directory person")) == FREE
    stepped_up(user)
    shown = search(user, "directory person")
    assert len(shown) == AFTER
    # Back to the free budget, long spent.
    wait_until(
        lambda: not directory_view(admin, user)["step_up"]["stepped_up"],
        VALID_FOR_S + 5,
    )
    unseen = next(p for p in people if p.user_id not in shown)
    assert_step_up_required(server, profile(user, unseen.user_id))


def test_going_on_without_stepping_up_blocks_the_account(
    server: Homeserver, people: list[Account]
) -> None:
    user = server.register()
    first_page = first_search(user, "directory person")
    assert len(first_page) == FREE
    unseen = [p for p in people if p.user_id not in first_page]
    for person in unseen[:3]:
        assert_step_up_required(server, profile(user, person.user_id))
    blocked = profile(user, unseen[3].user_id)  # the fourth refusal
    assert blocked.status_code == 401
    assert blocked.json()["errcode"] == "M_USER_LOCKED"
    (block,) = server.events_about(user.user_id, "block")
    assert block["tchap_guard"]["control"] == "directory"
    assert server.login(user.localpart).status_code == 403


def test_repeated_failed_step_ups_block_the_account(
    server: Homeserver, people: list[Account]
) -> None:
    user = server.register()
    session = step_up(user).json()["session"]
    answers = [
        step_up(user, password_auth(user, session, f"guess {n}")) for n in range(3)
    ]
    assert [a.status_code for a in answers] == [401, 401, 401]
    assert [a.json()["errcode"] for a in answers] == [
        "M_FORBIDDEN",
        "M_FORBIDDEN",
        "M_USER_LOCKED",
    ]
    assert len(server.events_about(user.user_id, "step_up_failed")) == 3
    (block,) = server.events_about(user.user_id, "block")
    assert block["tchap_guard"]["control"] == "failed_step_ups"
    assert server.login(user.localpart).status_code == 403
