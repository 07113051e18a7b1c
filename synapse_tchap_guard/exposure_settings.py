"""The homeserver settings without which some data is reachable without an account.

The guard counts what an account reaches; what Synapse serves to anyone, with no
account at all, it cannot count. At start-up it reads those settings and says, in
its `started` event and its log, which routes are open and how to close them.
"""

from __future__ import annotations

import attr


@attr.frozen
class ExposureSettings:
    """The Synapse settings that leave a route open without an account."""

    profiles_need_an_account: bool  # require_auth_for_profile_requests
    public_rooms_need_an_account: bool  # not allow_public_rooms_without_auth
    guests_allowed: bool  # allow_guest_access
    open_registration: bool  # enable_registration
    room_summaries_open: bool  # served without a token (always on 1.163, MSC3266)
    authenticated_media: bool  # enable_authenticated_media
    unauthenticated_media_files: int | None  # stored before it was on; None: unknown


def warnings(settings: ExposureSettings) -> list[str]:
    """What an admin should know, in words that say what to do."""
    found = []
    if not settings.profiles_need_an_account:
        found.append(
            "require_auth_for_profile_requests is off: anyone, with no account, can"
            " read every profile (name and avatar) at /_matrix/client/*/profile/...,"
            " and a blocked account too. Set require_auth_for_profile_requests: true."
        )
    if not settings.public_rooms_need_an_account:
        found.append(
            "allow_public_rooms_without_auth is on: the public room directory is"
            " listed to anyone. Set it to false, unless the list is meant to be public."
        )
    if settings.guests_allowed:
        found.append(
            "allow_guest_access is on: anyone can make guest accounts and spread a"
            " harvest over as many as they like, each with its own limits. Set"
            " allow_guest_access: false."
        )
    if settings.open_registration:
        found.append(
            "enable_registration is on: anyone who can register can spread a harvest"
            " over many accounts, each with its own limits. Register accounts through"
            " your identity provider or an admin instead."
        )
    if settings.room_summaries_open:
        found.append(
            "room summaries are served without an account at"
            " /_matrix/client/v1/room_summary/... and"
            " /_matrix/client/unstable/im.nheko.summary/...: a public room's name,"
            " topic and size. Refuse requests to them without an Authorization header"
            " at the reverse proxy if that matters (see the guard's docs/operations.md)."
        )
    if not settings.authenticated_media:
        found.append(
            "enable_authenticated_media is off: every media file is served without"
            " an account on /_matrix/media/v3/download and /thumbnail, where the"
            " guard cannot count downloads. Set enable_authenticated_media: true."
        )
    elif settings.unauthenticated_media_files:
        found.append(
            f"{settings.unauthenticated_media_files} media files predate authenticated"
            " media and are still served without an account on"
            " /_matrix/media/v3/download and /thumbnail, where the guard cannot count"
            " downloads: refuse those paths at the reverse proxy (see the guard's"
            " docs/operations.md)."
        )
    return found
