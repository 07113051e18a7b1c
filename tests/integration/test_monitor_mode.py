"""Monitor mode on a real Synapse: everything counted and reported, nobody refused."""

from __future__ import annotations

from urllib.parse import quote

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until

RULES = {"limits": [{"window": "1h", "max": 2}], "block_at": {"window": "1h", "max": 4}}
GUARD = {
    "mode": "monitor",
    "public_room_joins": RULES,
    "media_downloads": RULES,
    "directory": {
        "free": {"window": "1h", "max_profiles": 2},
        "block_at": {"window": "1h", "max": 3},
    },
}
# Joins 3, 5 and 6 would have been denied (two served in the hour), attempt 4 would
# have blocked the account, and the count towards a block started over then.
WOULD_BE = [
    ("would_deny", 2, "success"),
    ("would_block", 4, "success"),
    ("would_deny", 2, "success"),
    ("would_deny", 2, "success"),
]


def decisions(
    server: Homeserver, user_id: str, control: str
) -> list[tuple[str, int, str]]:
    return [
        (
            event["event"]["action"],
            event["tchap_guard"]["count"],
            event["event"]["outcome"],
        )
        for event in server.events_about(user_id)
        if event.get("tchap_guard", {}).get("control") == control
    ]


def test_monitor_mode_denies_nothing_and_reports_what_it_would_do(
    server: Homeserver,
) -> None:
    owner, user, admin = (
        server.register(),
        server.register(),
        server.register(admin=True),
    )
    rooms = [owner.create_room() for _ in range(6)]

    assert [user.join(room).status_code for room in rooms] == [200] * 6
    joined = user.get("/_matrix/client/v3/joined_rooms").json()["joined_rooms"]
    assert set(rooms) <= set(joined)
    assert user.whoami().status_code == 200
    assert server.login(user.localpart).status_code == 200

    # Joins 3, 5 and 6 would have been denied (two served in the hour), join 4 would
    # have blocked the account (its fourth attempt), and the count started over then.
    assert decisions(server, user.user_id, "public_room_joins") == WOULD_BE
    for event in server.events_about(user.user_id, "would_deny"):
        assert event["tchap_guard"]["mode"] == "monitor"
        assert event["tchap_guard"]["decision"] == "would_deny"
    assert server.events_about(user.user_id, "sessions_ended") == []

    view = admin.get(f"{ADMIN_API}/accounts/{quote(user.user_id)}").json()
    assert view["blocked"] is False
    # Every room was reached (monitor mode refuses nothing), but would-be denials do
    # not fill the limits, exactly as real ones would not.
    reached = {
        r["target"] for r in view["reached"] if r["control"] == "public_room_joins"
    }
    assert reached == set(rooms[:2])
    assert view["counters"]["public_room_joins"]["limits"][0]["count"] == 2


def test_monitor_mode_serves_every_download_and_reports_what_it_would_do(
    server: Homeserver,
) -> None:
    user = server.register()
    mxc = server.register().upload(b"a file")
    assert [user.download(mxc).status_code for _ in range(6)] == [200] * 6
    assert decisions(server, user.user_id, "media_downloads") == WOULD_BE
    assert user.whoami().status_code == 200


def test_monitor_mode_shows_the_directory_and_reports_what_it_would_refuse(
    server: Homeserver,
) -> None:
    admin, user = server.register(admin=True), server.register()
    people = [server.register() for _ in range(5)]
    for person in people:
        assert person.set_displayname("Monitored Colleague").ok

    def found(account: Account) -> list[str]:
        response = account.post(
            "/_matrix/client/v3/user_directory/search",
            {"search_term": "monitored colleague", "limit": 50},
        )
        assert response.status_code == 200, response.text
        return [r["user_id"] for r in response.json()["results"]]

    wait_until(lambda: len(found(admin)) == 5, timeout=30)
    shown = found(user)
    assert len(shown) == 5  # nothing left out, though only two were within budget
    for _ in range(3):
        assert len(found(user)) == 5
    # Profile lookups of the three not counted would have been refused; the third
    # refusal would have blocked the account.
    for user_id in shown[2:]:
        response = user.get(f"/_matrix/client/v3/profile/{quote(user_id)}")
        assert response.status_code == 200, response.text
    assert user.whoami().status_code == 200
    events = [
        event
        for event in server.events_about(user.user_id)
        if event.get("tchap_guard", {}).get("control") == "directory"
    ]
    searches = [e for e in events if e["tchap_guard"]["lookup"] == "search"]
    assert [e["event"]["action"] for e in searches] == ["would_deny"] * 4
    assert all(e["tchap_guard"]["withheld"] for e in searches)
    lookups = [e for e in events if e["tchap_guard"]["lookup"] == "profile"]
    assert [e["event"]["action"] for e in lookups] == [
        "would_deny",
        "would_deny",
        "would_block",
    ]
