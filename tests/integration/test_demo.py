"""The README's main command: the example config verbatim, against a real Synapse."""

from __future__ import annotations

import re

import pytest

from harness import demo


def test_the_demo_shows_a_burst_of_joins_throttled_then_the_account_blocked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert demo.main(["--rooms", "62"]) == 0
    output = capsys.readouterr().out
    # example_homeserver.yaml: 10 joins an hour, blocked at the 60th attempt in a day.
    assert "joins 1-10     200 served" in output
    # An hour, and at most a sixtieth of it more (the window's buckets).
    assert re.search(
        r"joins 11-59    429 M_LIMIT_EXCEEDED, retry after 6[01] min", output
    )
    assert "join 60        401 M_USER_LOCKED" in output
    assert "joins 61-62    401 M_UNKNOWN_TOKEN" in output  # every session was ended
    assert "log in again   403 M_USER_LOCKED" in output
    assert "(x49, until" in output
    assert "sessions_ended" in output and "login_refused" in output
    assert "blocked: True, by tchap_guard" in output
