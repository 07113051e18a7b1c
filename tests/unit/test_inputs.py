"""Values from requests (and the errors that quote them), made safe to count, store
and log."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from synapse.logging.context import ContextRequest

from synapse_tchap_guard._synapse_internals import client_routes
from synapse_tchap_guard.counting.records import Charge
from synapse_tchap_guard.inputs import MAX_TARGET, one_line, target, unstorable
from synapse_tchap_guard.routes import Routes
from synapse_tchap_guard.store.database import StoreUnavailable, error_text


@pytest.mark.parametrize(
    "valid",
    [
        "@camille.martin:example.org",
        "!OGEhHVWSdvArJzumhm:matrix.org",
        "mxc://example.org:8448/AbCdEf_-123",
        "@josé:exemple.fr",  # printable non-ASCII stays as it is
        "@historical=id/with+odd.chars:example.org",
    ],
)
def test_valid_identifiers_are_kept_as_they_are(valid: str) -> None:
    assert target(valid) == valid
    assert one_line(valid) == valid


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("@a\x00b:localhost", "@a\\x00b:localhost"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("a\u2028b\u2029c\x85d", "a\\u2028b\\u2029c\\x85d"),
        ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
        ("back\\slash", "back\\\\slash"),
        ("\U000e0001tag", "\\U000e0001tag"),
    ],
)
def test_what_could_break_a_line_or_a_column_is_escaped(raw: str, escaped: str) -> None:
    assert one_line(raw) == escaped
    assert target(raw) == escaped
    assert unstorable(escaped) is None
    assert escaped.isprintable()


def test_the_escaping_is_unambiguous() -> None:
    # A NUL and the four characters that spell its escape stay apart.
    assert target("a\x00") != target("a\\x00")
    assert one_line("a\nb") != one_line("a\\nb")


def test_an_overlong_value_is_cut_and_distinct_values_stay_distinct() -> None:
    first, second = "@" + "a" * 5000 + "1:x", "@" + "a" * 5000 + "2:x"
    assert len(target(first)) == MAX_TARGET
    assert target(first).startswith("@aaaa")
    assert target(first) != target(second)
    assert target(first) == target(first)  # the same value counts as the same target
    exactly = "@" + "b" * (MAX_TARGET - 1)
    assert target(exactly) == exactly
    escaped_long = "\x00" * 1000  # escaping lengthens it: still cut
    assert len(target(escaped_long)) == MAX_TARGET


def test_what_a_text_column_cannot_hold_is_named() -> None:
    assert unstorable("a reason\nover two lines") is None
    assert unstorable("a\x00b") == "it holds a NUL character"
    assert unstorable("a\ud800b") == "it holds an unpaired surrogate"


def request(method: str, url: str) -> ContextRequest:
    return ContextRequest(
        request_id="GET-1",
        ip_address="203.0.113.9",
        site_tag="8008",
        requester=None,
        authenticated_entity=None,
        method=method,
        url=url,
        protocol="1.1",
        user_agent="test",
    )


def test_the_gates_count_what_requests_name_normalised() -> None:
    routes = Routes(client_routes())
    download = routes.match(
        "GET", "/_matrix/client/v1/media/download/localhost/ab%00c%0A"
    )
    assert download is not None
    mxc = f"mxc://localhost/{download.path_params['media_id']}"
    assert Charge(mxc).target == "mxc://localhost/ab\\x00c\\n"
    lookup = routes.match(
        "GET", "/_matrix/client/v3/profile/%40a%00b%3Alocalhost/displayname"
    )
    assert lookup is not None
    assert Charge(lookup.user_id).target == "@a\\x00b:localhost"
    long_id = quote("@" + "z" * 10_000 + ":localhost")
    lookup = routes.match("GET", f"/_matrix/client/v3/profile/{long_id}")
    assert lookup is not None
    target = Charge(lookup.user_id).target
    assert target is not None and len(target) == MAX_TARGET


def test_a_database_error_is_one_line_and_escaped_once() -> None:
    error = StoreUnavailable('relation "x" does not exist\nLINE 1: SELECT')
    assert str(error) == 'relation "x" does not exist\\nLINE 1: SELECT'
    assert error_text(error) == f"StoreUnavailable: {error}"  # not escaped again
    assert error_text(ValueError("a\nb")) == "ValueError: a\\nb"
