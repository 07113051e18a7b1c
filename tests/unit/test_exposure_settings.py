"""What the start-up says about routes open without an account."""

from __future__ import annotations

import attr

from synapse_tchap_guard.exposure_settings import ExposureSettings, warnings

CLOSED = ExposureSettings(
    profiles_need_an_account=True,
    public_rooms_need_an_account=True,
    guests_allowed=False,
    open_registration=False,
    room_summaries_open=False,
    authenticated_media=True,
    unauthenticated_media_files=0,
)


def test_a_homeserver_closed_everywhere_gets_no_warning() -> None:
    assert warnings(CLOSED) == []


def test_each_open_route_is_named_with_its_fix() -> None:
    cases = {
        "profiles_need_an_account": "require_auth_for_profile_requests: true",
        "public_rooms_need_an_account": "allow_public_rooms_without_auth is on",
        "guests_allowed": "allow_guest_access: false",
        "open_registration": "enable_registration is on",
        "room_summaries_open": "at the reverse proxy",
        "authenticated_media": "enable_authenticated_media: true",
    }
    for field, fix in cases.items():
        opened = attr.evolve(CLOSED, **{field: not getattr(CLOSED, field)})
        (warning,) = warnings(opened)
        assert fix in warning, field


def test_media_stored_before_authenticated_media_is_counted() -> None:
    (warning,) = warnings(attr.evolve(CLOSED, unauthenticated_media_files=12))
    assert warning.startswith("12 media files predate authenticated media")
