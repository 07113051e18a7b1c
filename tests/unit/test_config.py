"""Config parsing: defaults, the example config, and every error naming its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attr
import pytest
import yaml
from synapse.module_api.errors import ConfigError

from synapse_tchap_guard.config import (
    BlockingConfig,
    DirectoryConfig,
    EmailCodeConfig,
    GuardConfig,
    Mode,
    OnError,
    OwnerNoticesConfig,
    describe,
    parse_config,
    parse_duration,
    parse_size,
)
from synapse_tchap_guard.controls import (
    CONTROLS,
    DIRECTORY,
    FAILED_STEP_UPS,
    MEDIA_DOWNLOADS,
    MESSAGE_HISTORY,
    PUBLIC_ROOM_JOINS,
)
from synapse_tchap_guard.policy import Limit, Quota, Threshold
from synapse_tchap_guard.step_up_methods import Method
from synapse_tchap_guard.units import DAY_MS, GIB, HOUR_MS, format_duration

EXAMPLE = Path(__file__).resolve().parents[2] / "example_homeserver.yaml"


def config_error(raw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return caught.value


def test_an_empty_config_gives_safe_defaults() -> None:
    assert parse_config({}) == parse_config(None) == GuardConfig()
    config = GuardConfig()
    assert config.mode is Mode.ENFORCE
    assert config.on_error is OnError.ALLOW
    assert config.quota("public_room_joins") == PUBLIC_ROOM_JOINS.default
    assert config.blocking == BlockingConfig(duration_ms=DAY_MS, end_sessions=True)


def test_the_example_homeserver_config_parses_to_what_it_says() -> None:
    homeserver = yaml.safe_load(EXAMPLE.read_text())
    (module,) = homeserver["modules"]
    assert module["module"] == "synapse_tchap_guard.TchapGuard"
    config = parse_config(module["config"])
    assert config.quota("public_room_joins") == Quota(
        limits=(Limit(HOUR_MS, max=10), Limit(DAY_MS, max=30)),
        block_at=Threshold(DAY_MS, 60),
    )
    assert describe(config) == {
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
            "limits": [{"window": "1h", "max": 5000}, {"window": "1d", "max": 20000}],
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
    assert config.quota("media_downloads") == MEDIA_DOWNLOADS.default
    assert config.quota("message_history") == MESSAGE_HISTORY.default
    assert config.directory == DirectoryConfig()
    assert config.quota("directory") == DIRECTORY.default
    assert config.quota("failed_step_ups") == FAILED_STEP_UPS.default
    assert config.owner_notices == OwnerNoticesConfig()


def test_keys_not_given_keep_their_defaults_and_null_disables() -> None:
    config = parse_config(
        {"public_room_joins": {"block_at": None}, "blocking": {"duration": 0}}
    )
    assert config.quota("public_room_joins").limits == PUBLIC_ROOM_JOINS.default.limits
    assert config.quota("public_room_joins").block_at is None
    assert config.blocking == BlockingConfig(duration_ms=0, end_sessions=True)
    assert (
        parse_config({"public_room_joins": {"limits": []}})
        .quota("public_room_joins")
        .limits
        == ()
    )


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("30s", 30_000),
        ("10m", 600_000),
        ("1h", HOUR_MS),
        ("2d", 2 * DAY_MS),
        ("1w", 7 * DAY_MS),
        ("1y", 365 * DAY_MS),
        ("1500", 1500),
        (250, 250),
    ],
)
def test_durations_read_as_synapse_reads_them(text: Any, ms: int) -> None:
    assert parse_duration(text, ("x",)) == ms


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("500K", 500 * 1024),
        ("20M", 20 * 1024**2),
        ("2G", 2 * 1024**3),
        ("1T", 1024**4),
        ("1234", 1234),
        (99, 99),
    ],
)
def test_sizes_read_as_synapse_reads_them(text: Any, size: int) -> None:
    assert parse_size(text, ("x",)) == size


def test_durations_are_spelled_back_the_short_way() -> None:
    assert [
        format_duration(ms) for ms in (0, 1500, 30_000, HOUR_MS, DAY_MS, 90 * DAY_MS)
    ] == [
        "0",
        "1500ms",
        "30s",
        "1h",
        "1d",
        "90d",
    ]


@pytest.mark.parametrize(
    ("raw", "path", "words"),
    [
        (
            {
                "public_room_joins": {
                    "limits": [{"window": "1h", "max": 3}, {"window": "1x", "max": 3}]
                }
            },
            ("public_room_joins", "limits", "1", "window"),
            [
                "'1x' is not a duration",
                "use a number of milliseconds or 30s, 10m, 1h, 1d",
            ],
        ),
        (
            {"mode": "block"},
            ("mode",),
            ["'block' is not accepted", "'enforce' or 'monitor'"],
        ),
        ({"on_error": "ignore"}, ("on_error",), ["'allow' or 'deny'"]),
        (
            {"public_room_jions": {}},
            ("public_room_jions",),
            ["unknown key 'public_room_jions'", "public_room_joins"],
        ),
        (
            {"public_room_joins": {"limits": {"window": "1h", "max": 3}}},
            ("public_room_joins", "limits"),
            ["expected a list like [{window: 1h, max: 10}]"],
        ),
        (
            {"public_room_joins": {"limits": [{"max": 3}]}},
            ("public_room_joins", "limits", "0"),
            ["every limit needs a window"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1h"}]}},
            ("public_room_joins", "limits", "0"),
            ["every limit needs max"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1h", "max": 0}]}},
            ("public_room_joins", "limits", "0", "max"),
            ["0 is not a whole number above zero"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1h", "max": "10"}]}},
            ("public_room_joins", "limits", "0", "max"),
            ["'10' is not a whole number above zero"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1h", "max": True}]}},
            ("public_room_joins", "limits", "0", "max"),
            ["True is not a whole number"],
        ),
        (
            {
                "public_room_joins": {
                    "limits": [{"window": "1h", "max": 3, "max_bytes": "1G"}]
                }
            },
            ("public_room_joins", "limits", "0", "max_bytes"),
            ["unknown key 'max_bytes'"],
        ),
        (
            {"media_downloads": {"limits": [{"window": "1h", "max_bytes": "2X"}]}},
            ("media_downloads", "limits", "0", "max_bytes"),
            ["'2X' is not a size", "500K, 20M, 2G, 1T"],
        ),
        (
            {"media_downloads": {"limits": [{"window": "1h"}]}},
            ("media_downloads", "limits", "0"),
            ["every limit needs max (or max_bytes)"],
        ),
        (
            {"directory": {"free": {"window": "1d"}}},
            ("directory", "free"),
            ["needs a window and max_profiles"],
        ),
        (
            {
                "directory": {
                    "free": {"window": "1d", "max_profiles": 500},
                    "after_step_up": {"window": "1d", "max_profiles": 400},
                }
            },
            ("directory", "after_step_up", "max_profiles"),
            ["400 is below free.max_profiles (500)", "must not lower the budget"],
        ),
        (
            {"directory": {"step_up_valid_for": "0"}},
            ("directory", "step_up_valid_for"),
            ["must be longer than zero"],
        ),
        (
            {"public_room_joins": {"block_at": {"window": "1d"}}},
            ("public_room_joins", "block_at"),
            ["needs a window and a max"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "0s", "max": 1}]}},
            ("public_room_joins", "limits", "0", "window"),
            ["must be longer than zero"],
        ),
        (
            {"exempt_users": ["alice"]},
            ("exempt_users", "0"),
            ["'alice' is not a user id", "@alice:example.org"],
        ),
        (
            {"exempt_users": "@alice:example.org"},
            ("exempt_users",),
            ["expected a list"],
        ),
        (
            {"blocking": {"end_sessions": "yes"}},
            ("blocking", "end_sessions"),
            ["use true or false"],
        ),
        (
            {"blocking": {"duration": "forever"}},
            ("blocking", "duration"),
            ["is not a duration"],
        ),
        ({"retention": 0}, ("retention",), ["must be longer than zero"]),
        (
            {"blocking": {"duration": "10000y"}},
            ("blocking", "duration"),
            ["too long (at most 100y)"],
        ),
        (
            {"blocking": {"duration": "²d"}},
            ("blocking", "duration"),
            ["is not a duration"],
        ),
        ([1, 2], (), ["expected a mapping of keys, got list"]),
        # Values no one means.
        (
            {"blocking": {"duration": "9" * 5000}},
            ("blocking", "duration"),
            ["is too long (at most 100y)", "(5002 characters)"],
        ),
        (
            {"media_downloads": {"limits": [{"window": "1h", "max_bytes": "9" * 50}]}},
            ("media_downloads", "limits", "0", "max_bytes"),
            ["is too large"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1h", "max": 10**10}]}},
            ("public_room_joins", "limits", "0", "max"),
            ["10000000000 is more than 1,000,000,000"],
        ),
        (
            yaml.safe_load("public_room_joins: {limits: [{window: 1h, max: 1e30}]}"),
            ("public_room_joins", "limits", "0", "max"),
            ["'1e30' is not a whole number"],  # YAML reads 1e30 as a string
        ),
        (
            yaml.safe_load("public_room_joins: {limits: [{window: 1h, max: 1.0e+30}]}"),
            ("public_room_joins", "limits", "0", "max"),
            ["1e+30 is not a whole number"],
        ),
        (
            {"media_downloads": {"limits": [{"window": "1h", "max_bytes": "2000T"}]}},
            ("media_downloads", "limits", "0", "max_bytes"),
            ["'2000T' is more than 1024T"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": 60, "max": 5}]}},
            ("public_room_joins", "limits", "0", "window"),
            ["60 is under a second", "a bare number is milliseconds"],
        ),
        # Combinations that cannot mean what they say.
        (
            {"public_room_joins": {"block_at": {"window": "1d", "max": 30}}},
            ("public_room_joins", "block_at"),
            [
                "max 30 in 1d is at or below what the limits serve in 1d",
                "(30, by limits.1)",
                "never refused",
                "Set max above 30",
            ],
        ),
        (
            {
                "public_room_joins": {
                    "limits": [{"window": "1h", "max": 10}],
                    "block_at": {"window": "1d", "max": 200},
                }
            },
            ("public_room_joins", "block_at"),
            ["serve in 1d (240, by limits.0)"],  # 10 an hour, 24 hours
        ),
        (
            {"public_room_joins": {"limits": [{"window": "1d", "max": 100}]}},
            ("public_room_joins", "block_at"),
            ["max 60 in 1d (the default) is at or below", "(100, by limits.0)"],
        ),
        (
            {
                "media_downloads": {
                    "limits": [{"window": "1m", "max": 120}],
                    "block_at": {"window": "1h", "max": 7200},
                }
            },
            ("media_downloads", "block_at"),
            ["(7200, by limits.0)"],
        ),
        (
            {"public_room_joins": {"block_at": {"window": "1s", "max": 5000}}},
            ("public_room_joins", "block_at"),
            ["5,000 requests a second", "can never be reached"],
        ),
        (
            {"directory": {"failed_step_ups_block_at": {"window": "1s", "max": 2000}}},
            ("directory", "failed_step_ups_block_at"),
            ["can never be reached"],
        ),
        (
            {"directory": {"after_step_up": {"window": "1h", "max_profiles": 3000}}},
            ("directory", "after_step_up", "window"),
            ["1h is shorter than free.window (1d)"],
        ),
        (
            {"retention": "1m"},
            ("retention",),
            ["1m is shorter than the longest window counted (1d", "at least 1d"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": "100d", "max": 10}]}},
            ("retention",),
            ["90d (the default) is shorter", "(100d, in public_room_joins)"],
        ),
        # Null where nothing can be turned off.
        ({"mode": None}, ("mode",), ["cannot be null"]),
        ({"retention": None}, ("retention",), ["cannot be null"]),
        (
            {"blocking": None},
            ("blocking",),
            ["cannot be null", "set block_at: null in each control"],
        ),
        (
            {"blocking": {"duration": None}},
            ("blocking", "duration"),
            ["cannot be null"],
        ),
        (
            {"directory": {"after_step_up": None}},
            ("directory", "after_step_up"),
            ["cannot be null", "directory: null"],
        ),
        (
            {"public_room_joins": {"limits": [{"window": None, "max": 3}]}},
            ("public_room_joins", "limits", "0", "window"),
            ["cannot be null"],
        ),
        (
            {"public_room_joins": {"limits": [None]}},
            ("public_room_joins", "limits", "0"),
            ["expected a mapping of keys, got nothing"],
        ),
        (
            {"directory": {"step_up_methods": ["sso", "sms"]}},
            ("directory", "step_up_methods", "1"),
            ["'sms' is not a method", "use sso, email_code, password"],
        ),
        (
            {"directory": {"step_up_methods": []}},
            ("directory", "step_up_methods"),
            ["one or more of sso, email_code, password", "after_step_up"],
        ),
        (
            {"directory": {"step_up_methods": "email_code"}},
            ("directory", "step_up_methods"),
            ["expected a list"],
        ),
        (
            {"directory": {"step_up_methods": ["sso", "sso"]}},
            ("directory", "step_up_methods", "1"),
            ["'sso' is listed twice"],
        ),
        (
            {"directory": {"email_code": {"valid_for": "0"}}},
            ("directory", "email_code", "valid_for"),
            ["must be longer than zero"],
        ),
        (
            {"directory": {"email_code": {"max_tries": 0}}},
            ("directory", "email_code", "max_tries"),
            ["0 is not a whole number above zero"],
        ),
        (
            {"directory": {"email_code": {"max_sent": None}}},
            ("directory", "email_code", "max_sent"),
            ["cannot be null"],
        ),
        (
            {"directory": {"email_code": {"lifetime": "5m"}}},
            ("directory", "email_code", "lifetime"),
            ["unknown key 'lifetime'", "valid_for"],
        ),
        (
            {"owner_notices": {"email": "yes"}},
            ("owner_notices", "email"),
            ["use true or false"],
        ),
        (
            {"owner_notices": {"limit": {"window": "1h"}}},
            ("owner_notices", "limit"),
            ["needs a window and a max"],
        ),
        (
            {"owner_notices": {"sms": True}},
            ("owner_notices", "sms"),
            ["unknown key 'sms'", "email, limit, server_notice"],
        ),
    ],
)
def test_a_wrong_key_names_itself_and_what_is_accepted(
    raw: Any, path: tuple[str, ...], words: list[str]
) -> None:
    error = config_error(raw)
    assert tuple(error.path or ()) == path
    assert error.msg.startswith(".".join(path) or "config")
    for word in words:
        assert word in error.msg


def test_media_limits_may_count_files_bytes_or_both() -> None:
    config = parse_config(
        {
            "media_downloads": {
                "limits": [
                    {"window": "1m", "max": 60},
                    {"window": "1h", "max": 600, "max_bytes": "2G"},
                    {"window": "1d", "max_bytes": "500M"},
                ],
                "block_at": {"window": "1h", "max": 2000},
            }
        }
    )
    assert config.quota("media_downloads") == Quota(
        limits=(
            Limit(60_000, max=60),
            Limit(HOUR_MS, max=600, max_bytes=2 * 1024**3),
            Limit(DAY_MS, max_bytes=500 * 1024**2),
        ),
        block_at=Threshold(HOUR_MS, 2000),
    )


def test_the_directory_can_be_left_unlimited() -> None:
    assert parse_config({"directory": {"free": None}}).directory is None


def test_step_up_never_defaults_to_the_password_and_takes_it_only_when_listed() -> None:
    default = parse_config({}).directory
    assert default is not None
    assert default.methods == (Method.SSO, Method.EMAIL_CODE)
    listed = parse_config(
        {"directory": {"step_up_methods": ["email_code", "password"]}}
    ).directory
    assert listed is not None
    assert listed.methods == (Method.EMAIL_CODE, Method.PASSWORD)


def test_email_codes_and_owner_notices_can_be_tuned_or_turned_off() -> None:
    config = parse_config(
        {
            "directory": {
                "email_code": {
                    "valid_for": "2m",
                    "max_tries": 5,
                    "max_sent": {"window": "1d", "max": 10},
                }
            },
            "owner_notices": {
                "server_notice": False,
                "limit": {"window": "1d", "max": 2},
            },
        }
    )
    assert config.directory is not None
    assert config.directory.email_code == EmailCodeConfig(
        valid_for_ms=120_000, max_tries=5, max_sent=Threshold(DAY_MS, 10)
    )
    assert config.owner_notices == OwnerNoticesConfig(
        email=True, server_notice=False, limit=Threshold(DAY_MS, 2)
    )
    assert parse_config({"owner_notices": None}).owner_notices is None


def test_null_turns_off_what_it_names_and_only_that() -> None:
    config = parse_config(
        {
            "public_room_joins": None,
            "media_downloads": {
                "limits": [{"window": "1h", "max": None, "max_bytes": "1G"}],
                "block_at": None,
            },
            "exempt_users": None,
        }
    )
    assert config.quota("public_room_joins") == Quota()
    assert not config.quota("public_room_joins").active
    assert config.quota("media_downloads") == Quota(
        limits=(Limit(HOUR_MS, max_bytes=GIB),)
    )
    assert config.exempt_users == frozenset()
    assert config.directory == DirectoryConfig()  # not named: its default
    assert config.quota("directory") == DIRECTORY.default
    assert parse_config({"directory": None}).directory is None
    assert parse_config({"media_downloads": None}).quota("media_downloads") == Quota()
    off = parse_config(
        {"directory": {"block_at": None, "failed_step_ups_block_at": None}}
    )
    assert off.directory is not None
    assert off.quota("directory").block_at is None
    assert off.quota("failed_step_ups").block_at is None
    assert off.quota("directory").limits == DIRECTORY.default.limits


def test_thresholds_above_what_the_limits_serve_are_accepted() -> None:
    config = parse_config(
        {
            "public_room_joins": {
                "limits": [{"window": "1h", "max": 10}],
                "block_at": {"window": "1d", "max": 241},
            },
            # Limits counting only bytes serve any number of requests.
            "media_downloads": {
                "limits": [{"window": "1h", "max_bytes": "1G"}],
                "block_at": {"window": "1h", "max": 10},
            },
            "directory": {"after_step_up": {"window": "1w", "max_profiles": 3000}},
        }
    )
    assert config.quota("public_room_joins").block_at == Threshold(DAY_MS, 241)


def shown_config(document: str) -> Any:
    """The module's `config:` in the first `modules:` block of a document."""
    text = (Path(__file__).parents[2] / document).read_text()
    block = text.split("```yaml\nmodules:", 1)[1].split("```", 1)[0]
    return yaml.safe_load("modules:" + block)["modules"][0]["config"]


def test_the_configuration_reference_shows_the_defaults_as_they_are() -> None:
    shown = shown_config("docs/configuration.md")
    assert parse_config(shown) == parse_config({})
    # Every control's section is shown, so a new one is not left out.
    for spec in CONTROLS:
        if spec.section is not None:
            assert spec.section in shown, spec.section


def test_the_readme_minimal_config_is_the_defaults_in_monitor_mode() -> None:
    config = parse_config(shown_config("README.md"))
    assert config == attr.evolve(parse_config({}), mode=Mode.MONITOR)
