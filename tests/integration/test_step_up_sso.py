"""Step-up for an account that signs in with SSO: Synapse's fallback page and a CAS."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from harness.cas import FakeCas
from harness.homeserver import STEP_UP, Account, Homeserver
from tests.integration.conftest import running_homeserver


@pytest.fixture(scope="module")
def cas() -> Iterator[FakeCas]:
    server = FakeCas()
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(
    backend: str, tmp_path_factory: pytest.TempPathFactory, cas: FakeCas
) -> Iterator[Homeserver]:
    settings = {
        "cas_config": {"enabled": True, "server_url": cas.url},
        "ip_range_whitelist": ["127.0.0.1"],  # Synapse may talk to the local CAS
    }
    with running_homeserver(tmp_path_factory, backend, settings=settings) as homeserver:
        yield homeserver


def sso_account(server: Homeserver, cas_user: str) -> Account:
    """An account linked to a CAS identity, as after signing in with SSO."""
    admin = server.register(admin=True)
    user = server.register()
    response = admin.put(
        f"/_synapse/admin/v2/users/{quote(user.user_id)}",
        {"external_ids": [{"auth_provider": "cas", "external_id": cas_user}]},
    )
    assert response.status_code == 200, response.text
    return user


def sign_in_through_fallback(server: Homeserver, session: str) -> str:
    """What the browser does: Synapse's fallback page, the CAS, back to Synapse."""
    page = server.http.get(
        server.url(
            f"/_matrix/client/v3/auth/m.login.sso/fallback/web?session={session}"
        )
    )
    assert page.status_code == 200, page.text
    (to_cas,) = [
        html.unescape(link)
        for link in re.findall(r'href="([^"]+)"', page.text)
        if "/cas/login" in link
    ]
    back = server.http.get(to_cas, allow_redirects=False)
    assert back.status_code == 302
    return server.http.get(back.headers["Location"]).text


def test_an_sso_account_steps_up_through_synapse_fallback_page(
    server: Homeserver, cas: FakeCas
) -> None:
    user = sso_account(server, "camille")
    challenge = user.post(STEP_UP, {})
    assert challenge.status_code == 401
    # It has a password too, which is not offered by default; nor is an email code
    # (this homeserver sends no mail).
    assert challenge.json()["flows"] == [{"stages": ["m.login.sso"]}]
    session = challenge.json()["session"]

    # Someone else signing in at the CAS is refused, and reported as a failed step-up.
    cas.signed_in = "mallory"
    sign_in_through_fallback(server, session)
    refused = user.post(STEP_UP, {"auth": {"session": session}})
    assert refused.status_code == 403, refused.text
    (failed,) = server.events_about(user.user_id, "step_up_failed")
    assert failed["event"]["outcome"] == "failure"
    assert failed["tchap_guard"]["errcode"] == "M_FORBIDDEN"

    cas.signed_in = "camille"
    sign_in_through_fallback(server, session)
    response = user.post(STEP_UP, {"auth": {"session": session}})
    assert response.status_code == 200, response.text
    assert response.json()["budget"]["max_profiles"] == 20000
    (succeeded,) = server.events_about(user.user_id, "step_up_succeeded")
    assert succeeded["event"]["outcome"] == "success"
    assert succeeded["tchap_guard"]["method"] == "sso"
