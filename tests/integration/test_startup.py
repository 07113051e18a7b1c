"""Start-up on a real Synapse: a wrong config stops it, `config: {}` runs with defaults."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from harness.homeserver import Homeserver
from harness.mail import MailServer
from synapse_tchap_guard import exposure_settings
from synapse_tchap_guard._synapse_internals import client_routes


@pytest.mark.parametrize(
    ("guard", "message"),
    [
        (
            {
                "public_room_joins": {
                    "limits": [{"window": "1h", "max": 3}, {"window": "1x", "max": 3}]
                }
            },
            "public_room_joins.limits.1.window: '1x' is not a duration"
            " (use a number of milliseconds or 30s, 10m, 1h, 1d, 1w, 1y)",
        ),
        (
            {"mode": "enforced"},
            "mode: 'enforced' is not accepted (use 'enforce' or 'monitor')",
        ),
        (
            {"directory": {"free": {"window": "1d", "max_profile": 3}}},
            "directory.free.max_profile: unknown key 'max_profile'",
        ),
        (
            {"blocking": {"end_session": True}},
            "blocking.end_session: unknown key 'end_session' (accepted here: duration, end_sessions)",
        ),
        (
            {"public_room_joins": {"block_at": {"window": "1d", "max": 25}}},
            "public_room_joins.block_at: max 25 in 1d is at or below what the limits"
            " serve in 1d (30, by limits.1)",
        ),
        (
            {"media_downloads": {"block_at": {"window": "1s", "max": 3000}}},
            "media_downloads.block_at: max 3000 in 1s would take 3,000 requests a"
            " second from one account",
        ),
        (
            {"directory": {"after_step_up": {"window": "1h", "max_profiles": 3000}}},
            "directory.after_step_up.window: 1h is shorter than free.window (1d)",
        ),
        (
            {"media_downloads": {"limits": [{"window": "1h", "max": 1e30}]}},
            "media_downloads.limits.0.max: 1e+30 is not a whole number above zero",
        ),
        (
            {"retention": "1m"},
            "retention: 1m is shorter than the longest window counted (1d",
        ),
        (
            {"blocking": None},
            "blocking: cannot be null (to never block, set block_at: null in each"
            " control)",
        ),
        (
            {"directory": {"step_up_methods": ["email", "sso"]}},
            "directory.step_up_methods.0: 'email' is not a method"
            " (use sso, email_code, password)",
        ),
    ],
)
def test_a_wrong_config_stops_synapse_naming_the_key_and_the_fix(
    tmp_path: Path, guard: dict[str, Any], message: str
) -> None:
    server = Homeserver(tmp_path, guard=guard)
    code, output = server.fail_to_start()
    assert code != 0
    assert "Error in configuration at 'modules.<item 0>.config." in output
    assert message in output


def test_an_empty_config_runs_with_the_documented_defaults(tmp_path: Path) -> None:
    server = Homeserver(tmp_path, guard={})
    try:
        server.start()
        (started,) = [e for e in server.events() if e["event"]["action"] == "started"]
        assert started["tchap_guard"]["config"] == {
            "mode": "enforce",
            "exempt_users": [],
            "on_error": "allow",
            "public_room_joins": {
                "limits": [{"window": "1h", "max": 10}, {"window": "1d", "max": 30}],
                "block_at": {"window": "1d", "max": 60},
            },
            "media_downloads": {
                "limits": [
                    {"window": "1m", "max": 120},
                    {"window": "1h", "max": 1000, "max_bytes": "2G"},
                    {"window": "1d", "max": 4000, "max_bytes": "10G"},
                ],
                "block_at": {"window": "1h", "max": 3000},
            },
            "small_thumbnails": {
                "max_size": 400,
                "limits": [
                    {"window": "1m", "max": 1000},
                    {"window": "1h", "max": 5000},
                    {"window": "1d", "max": 20000},
                ],
                "block_at": {"window": "1h", "max": 10000},
            },
            "message_history": {
                "limits": [
                    {"window": "1h", "max": 5000},
                    {"window": "1d", "max": 20000},
                ],
                "block_at": {"window": "1h", "max": 30},
                "max_per_request": 1000,
            },
            "directory": {
                "free": {"window": "1d", "max_profiles": 3000},
                "step_up_valid_for": "12h",
                "after_step_up": {"window": "1d", "max_profiles": 20000},
                "step_up_methods": ["sso", "email_code"],
                "email_code": {
                    "valid_for": "10m",
                    "max_tries": 3,
                    "max_sent": {"window": "1h", "max": 5},
                },
                "block_at": {"window": "1d", "max": 30},
                "failed_step_ups_block_at": {"window": "1h", "max": 5},
                "min_search_length": 3,
                "new_people_per_search": 20,
            },
            "blocking": {"duration": "1d", "end_sessions": True},
            "owner_notices": {
                "email": True,
                "server_notice": True,
                "limit": {"window": "1h", "max": 3},
            },
            "retention": "90d",
        }
        # What Synapse serves without an account despite the example's settings (room
        # summaries, on the releases that always serve them), and, as this test server
        # has no email settings, what that costs.
        assert started["tchap_guard"]["warnings"] == (
            [ROOM_SUMMARIES_WARNING] if room_summaries_always_served() else []
        ) + [
            "directory.step_up_methods lists email_code, but this homeserver has no"
            " email settings (email.notif_from): no code can be sent, so no account is"
            " offered email_code.",
            "owner_notices.email is on, but this homeserver has no email settings"
            " (email.notif_from): owners are not told by email.",
        ]
        assert started["tchap_guard"]["synapse_version"] == version("matrix-synapse")
        assert started["service"]["node"]["name"] == "main"
        owner, user = server.register(), server.register()
        statuses = [user.join(owner.create_room()).status_code for _ in range(11)]
        assert statuses == [200] * 10 + [429]
    finally:
        server.destroy()


def test_start_up_warns_about_media_served_without_an_account(tmp_path: Path) -> None:
    server = Homeserver(tmp_path, settings={"enable_authenticated_media": False})
    try:
        server.start()
        legacy = server.register().upload(b"uploaded while media needed no account")
        assert "enable_authenticated_media is off" in started_warnings(server)
        assert "enable_authenticated_media is off" in server.output()
        # The legacy endpoint serves it to anyone, with no account to count against.
        server_name, media_id = legacy.removeprefix("mxc://").split("/")
        anyone = server.http.get(
            server.url(f"/_matrix/media/v3/download/{server_name}/{media_id}")
        )
        assert anyone.status_code == 200

        server.config["enable_authenticated_media"] = True
        server.restart()
        assert "1 media files predate authenticated media" in started_warnings(server)
        assert "refuse those paths at the reverse proxy" in server.output()
    finally:
        server.destroy()


def test_start_up_warns_about_every_route_left_open_without_an_account(
    tmp_path: Path,
) -> None:
    server = Homeserver(
        tmp_path,
        settings={
            "require_auth_for_profile_requests": False,
            "allow_public_rooms_without_auth": True,
            "allow_guest_access": True,
        },
    )
    try:
        server.start()
        warnings = started_warnings(server)
        for setting in (
            "require_auth_for_profile_requests is off",
            "allow_public_rooms_without_auth is on",
            "allow_guest_access is on",
        ):
            assert setting in warnings
            assert setting in server.output()
        # And the profile is indeed served to anyone.
        person = server.register()
        anyone = server.anonymous().get(f"/_matrix/client/v3/profile/{person.user_id}")
        assert anyone.status_code == 200
    finally:
        server.destroy()


def test_start_up_warns_where_step_up_codes_or_notices_cannot_be_trusted(
    tmp_path: Path, mail: MailServer
) -> None:
    server = Homeserver(
        tmp_path,
        email=mail.settings(),
        settings={"enable_3pid_changes": True, "server_notices": None},
    )
    try:
        server.start()
        warnings = started_warnings(server)
        assert "users may add email addresses themselves (enable_3pid_changes)" in (
            warnings
        )
        assert "Set enable_3pid_changes: false." in warnings
        assert "server_notices is not configured" in warnings
        assert "no email settings" not in warnings
        assert "users may add email addresses themselves" in server.output()
    finally:
        server.destroy()


ROOM_SUMMARIES_WARNING = exposure_settings.warnings(
    exposure_settings.ExposureSettings(
        profiles_need_an_account=True,
        public_rooms_need_an_account=True,
        guests_allowed=False,
        open_registration=False,
        room_summaries_open=True,
        authenticated_media=True,
        unauthenticated_media_files=0,
    )
)[0]


def room_summaries_always_served() -> bool:
    return any(
        "room_summary" in route.pattern.pattern
        for route in client_routes()
        if route.servlet == "RoomSummaryRestServlet"
    )


def started_warnings(server: Homeserver) -> str:
    started = [e for e in server.events() if e["event"]["action"] == "started"][-1]
    return " ".join(started["tchap_guard"]["warnings"])


def test_start_up_refuses_a_homeserver_that_delegates_authentication(
    tmp_path: Path,
) -> None:
    server = Homeserver(
        tmp_path,
        settings={
            "matrix_authentication_service": {
                "enabled": True,
                "endpoint": "http://127.0.0.1:1/",
                "secret": "a shared secret",
            }
        },
    )
    code, output = server.fail_to_start()
    assert code != 0
    assert "synapse_tchap_guard needs Synapse to authenticate requests itself" in output
    assert "Matrix Authentication Service" in output


def test_null_turns_a_control_off_on_a_real_start(tmp_path: Path) -> None:
    server = Homeserver(tmp_path, guard={"public_room_joins": None, "directory": None})
    try:
        server.start()
        (started,) = [e for e in server.events() if e["event"]["action"] == "started"]
        config = started["tchap_guard"]["config"]
        assert config["public_room_joins"] == {"limits": [], "block_at": None}
        assert config["directory"] is None
        assert config["media_downloads"]["limits"]  # not named: its defaults
        owner, user = server.register(), server.register()
        statuses = [user.join(owner.create_room()).status_code for _ in range(11)]
        assert statuses == [200] * 11  # the default would refuse the 11th
    finally:
        server.destroy()
