"""Hostile values in requests, on a real Synapse: nothing a request names can poison
the guard's counts (PostgreSQL refuses a NUL in text; SQLite stores it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until

NUL_PROFILE = "/_matrix/client/v3/profile/%40a%00b%3Alocalhost"
NUL_MEDIA = "/_matrix/client/v1/media/download/localhost/ab%00c"


def view(admin: Account, user: Account) -> dict[str, Any]:
    response = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}")
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


def standing(admin: Account, user: Account) -> tuple[int, int, list[Any]]:
    """People discovered, downloads attempted, and the people and rooms reached."""
    shown = view(admin, user)
    counters = shown["counters"]
    return (
        counters["directory"]["limits"][0]["count"],
        counters["media_downloads"]["block_at"]["attempts"],
        sorted(reached["target"] for reached in shown["reached"]),
    )


def test_a_nul_in_a_request_is_counted_safely_and_poisons_nothing(
    server: Homeserver, admin: Account
) -> None:
    owner, user, other = server.register(), server.register(), server.register()
    mxc = owner.upload(b"a file")
    # Synapse answers these as it does (on PostgreSQL, a 500 of its own): what
    # matters here is what the guard counted.
    assert user.get(NUL_PROFILE).status_code in (404, 500)
    assert user.get(NUL_MEDIA).status_code in (404, 500)
    # Afterwards, this account's counts and another's still reach the database.
    assert user.get(f"/_matrix/client/v3/profile/{quote(owner.user_id)}").ok
    assert user.download(mxc).status_code == 200
    assert other.download(mxc).status_code == 200

    expected = (
        1,  # the owner; the NUL one (stored escaped), answered 404 or 500, given back
        2,  # two downloads attempted: the NUL one and the file
        [owner.user_id],
    )
    assert standing(admin, user) == expected
    assert view(admin, other)["counters"]["media_downloads"]["limits"][0]["count"] == 1
    assert server.events_about(user.user_id, "database_error") == []
    assert not any(e["event"]["action"] == "database_error" for e in server.events())

    # What was written survives a restart, NUL request included.
    server.restart()
    wait_until(lambda: standing(admin, user) == expected)
    assert view(admin, other)["counters"]["media_downloads"]["limits"][0]["count"] == 1
