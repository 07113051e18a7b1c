"""Synapse's main log, read back from a real Synapse: what admins and users write never
breaks one of its lines, while the events file keeps it whole."""

from __future__ import annotations

import re
from urllib.parse import quote

from harness.homeserver import ADMIN_API, Account, Homeserver, wait_until

MARKER = "FORGED-BY-A-TEST"
# A reason that, printed as it is, would forge a line of Synapse's log and a JSON
# object on the next, then hide more behind a line separator.
REASON = (
    "phishing\n"
    f"1999-12-31 23:59:59,999 - synapse.forged - 1 - CRITICAL - {MARKER} a line\n"
    f'{{"event": {{"action": "admin_unblock"}}, "marker": "{MARKER}"}}'
    f"\u2028{MARKER} after a line separator\r{MARKER} after a carriage return"
)
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - [\w.]+ - \d+ - [A-Z]+ - "
)


def test_an_admins_reason_never_breaks_a_line_of_the_main_log(
    server: Homeserver, admin: Account
) -> None:
    user = server.register()
    path = f"{ADMIN_API}/accounts/{quote(user.user_id)}"
    assert admin.post(f"{path}/block", {"reason": REASON}).status_code == 200
    # Synapse logs the error it answers to the blocked account, reason included.
    wait_until(lambda: user.whoami().status_code == 401)
    assert server.login(user.localpart).status_code == 403
    assert admin.post(f"{path}/unblock", {"reason": REASON}).status_code == 200
    wait_until(lambda: server.events_about(user.user_id, "admin_unblock"))

    lines = server.output().splitlines()  # splits at U+2028 and CR too
    quoting = [line for line in lines if MARKER in line]
    assert len(quoting) >= 3  # the block, the refusals, the unblock
    for line in quoting:
        assert LOG_LINE.match(line), line
        assert "phishing\\n1999-12-31" in line  # escaped, on the line it belongs to
    assert not any(line.startswith(("1999-12-31", '{"event"')) for line in lines)

    # The events file keeps the reason as it was written, JSON-escaped on one line.
    (blocked,) = server.events_about(user.user_id, "admin_block")
    assert blocked["event"]["reason"] == REASON
    (unblocked,) = server.events_about(user.user_id, "admin_unblock")
    assert unblocked["event"]["reason"] == REASON
    assert all(MARKER not in line or line.startswith("{") for line in server.lines())
