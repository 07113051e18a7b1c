"""Every gate, in-process: the real guard on a fake Synapse and a fake clock, each
quota scenario in milliseconds (real Synapse processes test what needs them)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.guard import SERVER, Guard

ALICE = f"@alice:{SERVER}"
BOB = f"@bob:{SERVER}"
HOUR_S = 3600

SMALL = {
    "public_room_joins": {
        "limits": [{"window": "1h", "max": 2}],
        "block_at": {"window": "1h", "max": 5},
    },
    "media_downloads": {
        "limits": [{"window": "1m", "max": 3}, {"window": "1h", "max_bytes": 2000}],
        "block_at": {"window": "1m", "max": 8},
    },
    "small_thumbnails": {
        "max_size": 96,
        "limits": [{"window": "1m", "max": 5}],
        "block_at": {"window": "1h", "max": 500},
    },
    "message_history": {
        "limits": [{"window": "1h", "max": 100}],
        "block_at": {"window": "1d", "max": 3},
        "max_per_request": 60,
    },
    "directory": {
        "free": {"window": "1h", "max_profiles": 3},
        "after_step_up": {"window": "1h", "max_profiles": 10},
        "block_at": {"window": "1h", "max": 3},
        "new_people_per_search": 2,
    },
    "owner_notices": None,
}


@pytest.fixture
def guard() -> Guard:
    return Guard(SMALL)


def statuses(answers: list[Any]) -> list[int]:
    return [answer.code for answer in answers]


# --- public rooms ------------------------------------------------------------------


def test_public_rooms_reached_by_joins_are_counted_and_refused_past_the_limit(
    guard: Guard,
) -> None:
    rooms = [guard.synapse.room(f"!r{n}:{SERVER}") for n in range(3)]
    answers = [guard.join(ALICE, room) for room in rooms]
    assert statuses(answers) == [200, 200, 429]
    refused = answers[2].body
    assert refused["errcode"] == "M_LIMIT_EXCEEDED"
    assert HOUR_S * 1000 < refused["retry_after_ms"] <= HOUR_S * 1000 + 60_000
    assert "Too many public rooms reached" in refused["error"]
    (event,) = guard.events("deny")
    assert event.guard["control"] == "public_room_joins"
    assert event.guard["target"] == rooms[2]


def test_joins_that_reach_no_public_room_or_fail_cost_nothing(guard: Guard) -> None:
    private = guard.synapse.room(f"!private:{SERVER}", join_rule="invite")
    public = guard.synapse.room(f"!public:{SERVER}")
    assert guard.join(ALICE, private).code == 200
    assert guard.join(ALICE, public).code == 200
    assert guard.join(ALICE, public).code == 200  # already in it (a profile update)
    failed = guard.synapse.room(f"!far:{SERVER}")
    assert guard.join(ALICE, failed, status=502).code == 200  # given back
    assert guard.join(ALICE, guard.synapse.room(f"!next:{SERVER}")).code == 200
    assert guard.join(ALICE, guard.synapse.room(f"!last:{SERVER}")).code == 429


def test_a_room_this_server_is_not_in_counts(guard: Guard) -> None:
    for n in range(2):
        assert guard.join(ALICE, f"!remote{n}:elsewhere.example").code == 200
    assert guard.join(ALICE, "!remote2:elsewhere.example").code == 429


def test_a_room_read_without_a_join_is_a_room_reached(guard: Guard) -> None:
    for n in range(2):
        room = guard.synapse.room(f"!readable{n}:{SERVER}")
        assert guard.get(ALICE, f"/_matrix/client/v3/rooms/{room}/members").code == 200
    room = guard.synapse.room(f"!third:{SERVER}")
    peek = guard.get(ALICE, f"/_matrix/client/r0/rooms/{room}/messages?limit=5")
    assert peek.code == 429 and "public rooms reached" in peek.body["error"]


# --- media -------------------------------------------------------------------------


def test_downloads_are_counted_and_their_bytes_as_sent(guard: Guard) -> None:
    assert statuses([guard.download(ALICE, f"m{n}", sent=600) for n in range(4)]) == [
        200,
        200,
        200,
        429,
    ]
    guard.advance(61)
    refused = guard.download(ALICE, "m5", sent=600)  # 1800 bytes sent: the max is 2000
    assert refused.code == 200
    refused = guard.download(ALICE, "m6")
    assert refused.code == 429 and "2000B per 1h" in refused.body["error"]


def test_a_download_that_failed_is_given_back(guard: Guard) -> None:
    for n in range(3):
        assert guard.download(ALICE, f"m{n}", status=500).code == 200
    assert statuses([guard.download(ALICE, f"n{n}") for n in range(4)]) == [
        200,
        200,
        200,
        429,
    ]


def test_avatar_sized_thumbnails_have_a_quota_of_their_own(guard: Guard) -> None:
    avatars = [guard.thumbnail(ALICE, f"a{n}", 64) for n in range(6)]
    assert statuses(avatars) == [200] * 5 + [429]
    previews = [guard.thumbnail(ALICE, f"p{n}", 800) for n in range(4)]
    assert statuses(previews) == [200] * 3 + [429]  # a large thumbnail: a download


# --- message history ---------------------------------------------------------------


def test_history_is_counted_by_what_each_request_asks(guard: Guard) -> None:
    room = f"!room:{SERVER}"
    guard.synapse.room(room).__len__()
    guard.synapse.rooms[room][1].add(ALICE)
    pages = [
        guard.get(ALICE, f"/_matrix/client/v3/rooms/{room}/messages?limit=50")
        for _ in range(3)
    ]
    assert statuses(pages) == [200, 200, 429]
    assert "Too many messages read" in pages[2].body["error"]


def test_a_request_too_large_to_ever_pass_is_a_400_without_a_wait(guard: Guard) -> None:
    room = guard.synapse.room(f"!room:{SERVER}")
    guard.synapse.rooms[room][1].add(ALICE)
    too_large = guard.get(ALICE, f"/_matrix/client/v3/rooms/{room}/messages?limit=500")
    assert too_large.code == 400
    body = too_large.body
    assert body["errcode"] == "M_INVALID_PARAM" and "retry_after_ms" not in body
    assert "at most 60 may be read in one request" in body["error"]
    assert too_large.error is not None and not too_large.error.headers


def test_refusals_of_one_room_count_once_and_new_rooms_each(guard: Guard) -> None:
    rooms = [guard.synapse.room(f"!h{n}:{SERVER}") for n in range(4)]
    for room in rooms:
        guard.synapse.rooms[room][1].add(ALICE)

    def page(room: str) -> int:
        url = f"/_matrix/client/v3/rooms/{room}/messages?limit=50"
        return guard.get(ALICE, url).code

    assert [page(rooms[0]), page(rooms[0])] == [200, 200]
    # Element paginates again at every scroll: never blocked for it.
    assert [page(rooms[0]) for _ in range(20)] == [429] * 20
    # A script going on to the next rooms is: the third refusal blocks.
    assert [page(rooms[1]), page(rooms[2])] == [429, 401]
    assert guard.events("block")[0].guard["control"] == "message_history"


def test_what_the_client_fetches_on_its_own_is_refused_but_never_blocks(
    guard: Guard,
) -> None:
    """A second device's initial sync: matrix-js-sdk fetches every thread's root and
    summary by itself, in room after room; past the limit it is refused, never
    blocked (the June script, reading room after room by `/messages`, is)."""
    rooms = [guard.synapse.room(f"!t{n}:{SERVER}") for n in range(8)]
    for room in rooms:
        guard.synapse.rooms[room][1].add(ALICE)
    fill = f"/_matrix/client/v3/rooms/{rooms[0]}/messages?limit=50"
    assert statuses([guard.get(ALICE, fill), guard.get(ALICE, fill)]) == [200, 200]

    def thread_fetches(room: str) -> list[int]:
        root = "%24root"
        return statuses(
            [
                guard.get(ALICE, f"/_matrix/client/v3/rooms/{room}/event/{root}"),
                guard.get(
                    ALICE,
                    f"/_matrix/client/v1/rooms/{room}/relations/{root}"
                    "?dir=b&recurse=true&limit=30",
                ),
            ]
        )

    assert [thread_fetches(room) for room in rooms] == [[429, 429]] * len(rooms)
    assert guard.events("block") == []
    # The same reads asked by hand, room after room, block at the third room.
    url = "/_matrix/client/v1/rooms/{}/relations/%24root?dir=b&limit=30"
    codes = [guard.get(ALICE, url.format(room)).code for room in rooms[:3]]
    assert codes == [429, 429, 401]
    assert guard.events("block")[0].guard["control"] == "message_history"


# --- people ------------------------------------------------------------------------


def test_profiles_are_people_and_past_the_budget_a_step_up_is_asked(
    guard: Guard,
) -> None:
    def profile(user: str) -> Any:
        return guard.get(ALICE, f"/_matrix/client/v3/profile/{user}")

    assert profile(ALICE).code == 200  # its own: free
    answers = [profile(f"@p{n}:{SERVER}") for n in range(3)] + [
        profile(f"@p0:{SERVER}")
    ]
    assert statuses(answers) == [200] * 4  # a repeat is free
    refused = profile(f"@p9:{SERVER}")
    assert refused.code == 401
    body = refused.body
    assert body["errcode"] == "org.matrix.msc4363.M_INSUFFICIENT_USER_AUTHENTICATION"
    assert body["fr.gouv.tchap.guard.step_up_url"].endswith("/tchap_guard/v1/step_up")


def test_a_search_shows_the_known_and_a_few_new_people_never_an_error(
    guard: Guard,
) -> None:
    people = [f"@person{n}:{SERVER}" for n in range(6)]
    assert guard.search_directory(ALICE, "pe", people) == []  # two letters typed
    assert guard.search_directory(ALICE, "person", people) == people[:2]
    assert guard.search_directory(ALICE, "person", people) == people[:2] + people[2:3]
    # The budget (3) is spent: known people only, and the SIEM hears of it.
    assert guard.search_directory(ALICE, "person", people) == people[:3]
    withheld = guard.events("deny")
    assert withheld and all(event.guard["withheld"] for event in withheld)


def test_a_public_rooms_members_are_people_discovered(guard: Guard) -> None:
    room = guard.synapse.room(f"!big:{SERVER}", members=5)
    assert guard.join(ALICE, room).code == 200
    assert guard.get(ALICE, f"/_matrix/client/v3/profile/@new:{SERVER}").code == 401


# --- blocks ------------------------------------------------------------------------


def test_going_on_past_a_limit_blocks_the_account_everywhere(guard: Guard) -> None:
    guard.synapse.devices[ALICE] = {"PHONE", "LAPTOP"}
    answers = [guard.download(ALICE, f"m{n}") for n in range(8)]
    assert statuses(answers) == [200] * 3 + [429] * 4 + [401]
    assert answers[-1].errcode == "M_USER_LOCKED"
    assert guard.get(ALICE, "/_matrix/client/v3/account/whoami").code == 401
    assert guard.synapse.devices[ALICE] == set()  # its sessions ended
    refused = guard.login(ALICE)
    assert refused is not None and refused.code == 403
    assert guard.get(BOB, "/_matrix/client/v3/account/whoami").code == 200
    assert [e.action for e in guard.events() if e.action.startswith("block")] == [
        "block"
    ]


def test_monitor_mode_refuses_nothing_and_reports_what_it_would(guard: Guard) -> None:
    monitor = Guard({**SMALL, "mode": "monitor"})
    assert statuses([monitor.download(ALICE, f"m{n}") for n in range(9)]) == [200] * 9
    actions = [e.action for e in monitor.events()]
    assert actions.count("would_deny") >= 4 and "would_block" in actions
    assert monitor.get(ALICE, "/_matrix/client/v3/account/whoami").code == 200


def test_server_admins_are_never_limited(guard: Guard) -> None:
    guard.synapse.admins.add(ALICE)
    assert statuses([guard.download(ALICE, f"m{n}") for n in range(20)]) == [200] * 20


def test_when_the_tables_cannot_answer_on_error_decides(guard: Guard) -> None:
    guard.database.out = True
    assert guard.download(ALICE, "m").code == 200  # on_error: allow
    strict = Guard({**SMALL, "on_error": "deny"})
    strict.database.out = True
    refused = strict.download(ALICE, "m")
    assert refused.code == 503
    assert refused.error is not None and refused.error.headers == {"Retry-After": "5"}
    assert strict.events("database_error")
