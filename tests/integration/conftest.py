"""Fixtures: one real Synapse per test module and backend, shared by its tests.

Tests use fresh accounts, so they can share a homeserver. `server` runs the guard a
module sets in its `GUARD` (example_homeserver.yaml's without one), and sends no mail;
a module that needs more (mail through `mail`, a real SMTP server) defines its own
`server`.

A test that needs PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) fails when it
is not running, so that a green run means they were exercised; with
TCHAP_GUARD_SKIP_MISSING_SERVICES=1 such tests are skipped instead, and reported so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from harness.homeserver import Account, Homeserver
from harness.mail import MailServer
from tests.services import require_postgres


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "postgres":
        require_postgres()
    return name


@contextmanager
def running_homeserver(
    factory: pytest.TempPathFactory,
    backend: str,
    guard: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    metrics: bool = False,
    mail: MailServer | None = None,
) -> Iterator[Homeserver]:
    server = Homeserver(
        factory.mktemp(f"synapse-{backend}"),
        database=backend,
        guard=guard,
        settings=settings,
        metrics=metrics,
        email=mail.settings() if mail else None,
    )
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Homeserver]:
    guard = getattr(request.module, "GUARD", None)
    with running_homeserver(tmp_path_factory, backend, guard=guard) as homeserver:
        yield homeserver


@pytest.fixture(scope="module")
def admin(server: Homeserver) -> Account:
    return server.register(admin=True)


@pytest.fixture(scope="module")
def mail() -> Iterator[MailServer]:
    """A real SMTP server on localhost, for a module's homeserver to send mail to."""
    server = MailServer()
    yield server
    server.close()
