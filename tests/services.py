"""The services some tests need: PostgreSQL and Redis, running on this machine.

A test that needs one fails when it is not running, so that a green run means they
were exercised; with TCHAP_GUARD_SKIP_MISSING_SERVICES=1 such tests are skipped
instead, and reported so.
"""

from __future__ import annotations

import os

import pytest

from harness.homeserver import postgres_available, redis_available

SKIP_MISSING_SERVICES = os.environ.get("TCHAP_GUARD_SKIP_MISSING_SERVICES") == "1"


def require_service(name: str, available: bool) -> None:
    """Fail (or, if asked, skip) a test whose service is not running."""
    if available:
        return
    if SKIP_MISSING_SERVICES:
        pytest.skip(f"{name} is not running")
    pytest.fail(
        f"{name} is not running: start it, or set TCHAP_GUARD_SKIP_MISSING_SERVICES=1"
        " to skip the tests that need it",
        pytrace=False,
    )


def require_postgres() -> None:
    require_service("PostgreSQL on 127.0.0.1:5432", postgres_available())


def require_redis() -> None:
    require_service("Redis on 127.0.0.1:6379", redis_available())
